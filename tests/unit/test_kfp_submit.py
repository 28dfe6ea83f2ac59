"""KfpSubmitter with the real kfp.Client against a recording KFP API server on loopback.

No KFP backend can run here, so the server answers the v2beta1 REST calls with canned
objects and keeps every request; the tests check what the real client sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from ctpipe.config import Config
from ctpipe.monitor.submit import SubmitError
from ctpipe.pipelines.submit import KfpSubmitter

API = "/apis/v2beta1"


class RecordingKfp(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
        self.pipelines = [{"pipeline_id": "p-1", "display_name": "continuous-training"}]
        self.versions = [{"pipeline_id": "p-1", "pipeline_version_id": "v-9", "display_name": "v9"}]
        self.run_state = "RUNNING"
        self.run_extra: dict[str, Any] = {}  # more fields of GET /runs/{id}: error, run_details
        self.recurring_runs: list[dict[str, Any]] = []
        self.multi_user = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def find(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    server: RecordingKfp

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, dict[str, list[str]], Any]:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        body: Any = None
        if content_type.startswith("multipart/form-data"):
            # {field: (filename, content)} of the uploaded files
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw
            )
            body = {
                part.get_param("name", header="content-disposition"): (
                    part.get_filename(),
                    part.get_payload(decode=True),
                )
                for part in message.iter_parts()
            }
        elif raw:
            body = json.loads(raw)
        self.server.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "body": body,
                "authorization": self.headers.get("Authorization"),
            }
        )
        return url.path, parse_qs(url.query), body

    def do_GET(self) -> None:
        path, query, _ = self._record()
        if path == f"{API}/healthz":
            self._reply({"multi_user": self.server.multi_user})
        elif path == f"{API}/experiments":
            self._reply(
                {"experiments": self.server.experiments, "total_size": len(self.server.experiments)}
            )
        elif path == f"{API}/pipelines":
            self._reply(
                {"pipelines": self.server.pipelines, "total_size": len(self.server.pipelines)}
            )
        elif path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[-2]
            versions = [v for v in self.server.versions if v["pipeline_id"] == pipeline_id]
            if "filter" in query:
                (predicate,) = json.loads(query["filter"][0])["predicates"]
                versions = [v for v in versions if v["display_name"] == predicate["stringValue"]]
            self._reply({"pipeline_versions": versions, "total_size": len(versions)})
        elif path == f"{API}/recurringruns":
            (predicate,) = json.loads(query["filter"][0])["predicates"]
            found = [
                r
                for r in self.server.recurring_runs
                if r["display_name"] == predicate["stringValue"]
            ]
            self._reply({"recurringRuns": found, "total_size": len(found)})
        elif path.startswith(f"{API}/runs/"):
            self._reply(
                {
                    "run_id": path.rsplit("/", 1)[1],
                    "state": self.server.run_state,
                    **self.server.run_extra,
                }
            )
        else:
            self._reply({"error": "not found"}, 404)

    def do_POST(self) -> None:
        path, _, body = self._record()
        if path == f"{API}/experiments":
            created = {**body, "experiment_id": "exp-1"}
            self.server.experiments.append(created)
            self._reply(created)
        elif path == f"{API}/runs":
            self._reply({**body, "run_id": "run-42", "state": "PENDING"})
        elif path == f"{API}/recurringruns":
            self._reply({**body, "recurring_run_id": "rr-7"})
        elif path == f"{API}/pipelines/upload":
            (name,) = parse_qs(urlparse(self.path).query)["name"]
            created = {"pipeline_id": "p-new", "display_name": name}
            self.server.pipelines.append(created)
            self._reply(created)
        elif path == f"{API}/pipelines/upload_version":
            query = parse_qs(urlparse(self.path).query)
            created = {
                "pipeline_id": query["pipelineid"][0],
                "pipeline_version_id": "v-new",
                "display_name": query["name"][0],
            }
            self.server.versions.insert(0, created)  # newest first, as sort_by asks
            self._reply(created)
        else:
            self._reply({"error": "not found"}, 404)


@pytest.fixture
def kfp_server() -> Iterator[RecordingKfp]:
    server = RecordingKfp()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def token(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("sa-token-123\n")
    return str(path)


def test_submit_sends_the_run_with_config_reason_and_token(
    kfp_server: RecordingKfp, token: str, small_config: Config
) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    run = submitter.submit(
        small_config, "data_drift+performance", "test-model-data_drift-performance-20261127"
    )
    assert run.run_id == "run-42" and run.backend == "kfp"

    # The experiment did not exist: looked up by name, then created.
    lookup = kfp_server.find("GET", f"{API}/experiments")[0]
    predicate = json.loads(lookup["query"]["filter"][0])["predicates"][0]
    # kfp.Client sends the EQUALS operation as its enum number.
    assert predicate == {"operation": 1, "key": "display_name", "stringValue": "ctpipe"}
    assert kfp_server.find("POST", f"{API}/experiments")[0]["body"]["display_name"] == "ctpipe"

    # The newest version of the uploaded pipeline is resolved.
    versions = kfp_server.find("GET", f"{API}/pipelines/p-1/versions")[0]
    assert versions["query"]["sort_by"] == ["created_at desc"] and versions["query"][
        "page_size"
    ] == ["1"]

    body = kfp_server.find("POST", f"{API}/runs")[0]["body"]
    assert body["display_name"] == "test-model-data_drift-performance-20261127"
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "p-1",
        "pipeline_version_id": "v-9",
    }
    parameters = body["runtime_config"]["parameters"]
    assert parameters["reason"] == "data_drift+performance"
    assert parameters["config"]["model_name"] == "test-model"
    assert parameters["config"]["search"]["candidates"][0]["family"] == "linear"
    # The ServiceAccount token went with every request.
    assert {r["authorization"] for r in kfp_server.requests} == {"Bearer sa-token-123"}


def test_recurring_run_request(kfp_server: RecordingKfp, token: str, small_config: Config) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    assert submitter.schedule(small_config, "0 0 3 * * *", "ctpipe-nightly") == "rr-7"
    body = kfp_server.find("POST", f"{API}/recurringruns")[0]["body"]
    assert body["display_name"] == "ctpipe-nightly"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "p-1",
        "pipeline_version_id": "v-9",
    }
    assert body["runtime_config"]["parameters"]["reason"] == "schedule"


def test_without_a_token_file_no_authorization_is_sent(
    kfp_server: RecordingKfp, tmp_path: Path, small_config: Config
) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=str(tmp_path / "absent"))
    submitter.submit(small_config, "manual", "run")
    assert {r["authorization"] for r in kfp_server.requests} == {None}


def test_run_state_decides_whether_a_run_is_active(kfp_server: RecordingKfp, token: str) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    assert submitter.is_active("run-42") is True
    kfp_server.run_state = "SUCCEEDED"
    assert submitter.is_active("run-42") is False


def test_the_outcome_of_a_run_is_read_from_the_api(kfp_server: RecordingKfp, token: str) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    running = submitter.outcome("run-42")
    assert running.active and not running.failed and not running.succeeded
    kfp_server.run_state = "SUCCEEDED"
    done = submitter.outcome("run-42")
    assert done.succeeded and not done.failed and done.error is None

    # A failed run with its own error (google.rpc.Status).
    kfp_server.run_state = "FAILED"
    kfp_server.run_extra = {"error": {"code": 2, "message": "task validate failed"}}
    failed = submitter.outcome("run-42")
    assert failed.failed and not failed.active and failed.state == "FAILED"
    assert failed.error == "task validate failed"
    (asked,) = {r["path"] for r in kfp_server.find("GET", f"{API}/runs/run-42")}
    assert asked == f"{API}/runs/run-42"

    # Without one, the first failed task's error, named after the task.
    kfp_server.run_extra = {
        "run_details": {
            "task_details": [
                {"display_name": "ingest", "state": "SUCCEEDED"},
                {
                    "display_name": "validate",
                    "state": "FAILED",
                    "error": {"code": 2, "message": "the label column is missing"},
                },
            ]
        }
    }
    assert submitter.outcome("run-42").error == "step validate: the label column is missing"

    # Canceled counts as failed; with no error anywhere, the message points at the run.
    kfp_server.run_state, kfp_server.run_extra = "CANCELED", {}
    canceled = submitter.outcome("run-42")
    assert canceled.failed and canceled.error is not None
    assert "CANCELED" in canceled.error and "/#/runs/details/run-42" in canceled.error


def test_an_unreadable_run_state_is_a_clear_error(token: str) -> None:
    from tests.conftest import free_port

    submitter = KfpSubmitter(f"http://127.0.0.1:{free_port()}", token_path=token)
    with pytest.raises(SubmitError, match="cannot read the state of run run-42"):
        submitter.outcome("run-42")


def test_a_missing_pipeline_is_a_clear_error(
    kfp_server: RecordingKfp, token: str, small_config: Config
) -> None:
    kfp_server.pipelines = []
    with pytest.raises(SubmitError, match=r"no pipeline named .continuous-training.*upload"):
        KfpSubmitter(kfp_server.url, token_path=token).submit(small_config, "manual", "run")
    assert not kfp_server.find("POST", f"{API}/runs")


def test_an_unreachable_server_is_a_clear_error(token: str, small_config: Config) -> None:
    from tests.conftest import free_port

    submitter = KfpSubmitter(f"http://127.0.0.1:{free_port()}", token_path=token)
    with pytest.raises(SubmitError, match=r"submitting run to http://127\.0\.0\.1"):
        submitter.submit(small_config, "manual", "run")


def test_no_host_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    with pytest.raises(SubmitError, match="KF_PIPELINES_ENDPOINT"):
        KfpSubmitter()


def test_upload_creates_the_pipeline_then_its_named_version(
    kfp_server: RecordingKfp, token: str, tmp_path: Path
) -> None:
    kfp_server.pipelines = []
    package = tmp_path / "continuous_training.yaml"
    package.write_text("pipelineInfo:\n  name: continuous-training\n")
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    assert submitter.upload(package, "continuous-training", "0.1.0-abc123", "ctpipe") == (
        "p-new",
        "v-new",
    )
    # Looked up by name first, then created with the package as a multipart upload.
    lookup = kfp_server.find("GET", f"{API}/pipelines")[0]
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0]["stringValue"] == (
        "continuous-training"
    )
    (create,) = kfp_server.find("POST", f"{API}/pipelines/upload")
    assert create["query"]["name"] == ["continuous-training"]
    assert create["query"]["description"] == ["ctpipe"]
    filename, content = create["body"]["uploadfile"]
    assert filename == "continuous_training.yaml" and content == package.read_bytes()
    (version,) = kfp_server.find("POST", f"{API}/pipelines/upload_version")
    assert version["query"]["name"] == ["0.1.0-abc123"]
    assert version["query"]["pipelineid"] == ["p-new"]
    assert version["body"]["uploadfile"][1] == package.read_bytes()
    assert {r["authorization"] for r in kfp_server.requests} == {"Bearer sa-token-123"}


def test_upload_reuses_a_version_of_the_same_name(
    kfp_server: RecordingKfp, token: str, tmp_path: Path
) -> None:
    package = tmp_path / "p.yaml"
    package.write_text("x: 1\n")
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    assert submitter.upload(package, "continuous-training", "v9") == ("p-1", "v-9")
    assert not kfp_server.find("POST", f"{API}/pipelines/upload")
    assert not kfp_server.find("POST", f"{API}/pipelines/upload_version")
    # A new name is a new version of the existing pipeline.
    assert submitter.upload(package, "continuous-training", "v10") == ("p-1", "v-new")
    (version,) = kfp_server.find("POST", f"{API}/pipelines/upload_version")
    assert version["query"]["pipelineid"] == ["p-1"] and version["query"]["name"] == ["v10"]


def test_upload_of_a_missing_file_is_a_clear_error(kfp_server: RecordingKfp, token: str) -> None:
    kfp_server.pipelines = []
    with pytest.raises(SubmitError, match=r"uploading .*absent\.yaml as continuous-training"):
        KfpSubmitter(kfp_server.url, token_path=token).upload(
            "absent.yaml", "continuous-training", "v1"
        )


def test_an_existing_recurring_run_is_found_by_name(
    kfp_server: RecordingKfp, token: str, small_config: Config
) -> None:
    submitter = KfpSubmitter(kfp_server.url, token_path=token)
    assert submitter.recurring_run_id(small_config, "ctpipe-nightly") is None
    kfp_server.recurring_runs = [{"recurring_run_id": "rr-1", "display_name": "ctpipe-nightly"}]
    assert submitter.recurring_run_id(small_config, "ctpipe-nightly") == "rr-1"
    lookup = kfp_server.find("GET", f"{API}/recurringruns")[-1]
    assert lookup["query"]["experiment_id"] == ["exp-1"]
    assert json.loads(lookup["query"]["filter"][0])["predicates"] == [
        {"operation": 1, "key": "display_name", "stringValue": "ctpipe-nightly"}
    ]
