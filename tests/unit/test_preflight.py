"""ctpipe.preflight: one short request per service before anything is trained or judged,
against the real MLflow server and moto on loopback, a port nothing listens on, and a
loopback HTTP server that answers what an MLflow server would not."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import preflight, registry
from ctpipe.config import Config
from ctpipe.preflight import PreflightError
from tests.conftest import free_port, make_config

# MLflow's own client retries a refused connection or a 503 seven times, about four minutes.
RUN_TIMEOUT = 120


class _Answering(ThreadingHTTPServer):
    """Answers every request with one status and body, and counts the requests."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.body, self.requests = status, body, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Answering

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


@pytest.fixture
def answering() -> Iterator[Any]:
    servers: list[_Answering] = []

    def start(status: int, body: bytes = b"") -> _Answering:
        server = _Answering(status, body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_nothing_to_check_for_a_local_store(small_config: Config) -> None:
    assert preflight.check(small_config) == preflight.Checked((), None)


def test_an_mlflow_port_nothing_listens_on_is_named(
    small_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(registry.TRACKING_ENV, uri)
    with pytest.raises(PreflightError) as info:
        preflight.check(small_config)
    assert info.value.service == preflight.MLFLOW
    assert str(info.value) == (
        f"preflight: cannot reach the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI): "
        "connection refused (nothing listens there); check that the server is running and "
        "that MLFLOW_TRACKING_URI names it"
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b"", "answered GET /api/2.0/mlflow/experiments/search with HTTP 503"),
        (404, b"<html>not here</html>", "with HTTP 404, not as an MLflow tracking server does"),
        (200, b"<html>a login page</html>", "with HTTP 200, not as an MLflow tracking server"),
        (401, b"", "refused the credentials (HTTP 401); check MLFLOW_TRACKING_USERNAME"),
    ],
)
def test_a_server_that_is_not_a_working_mlflow_is_asked_once(
    small_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    answering: Any,
    status: int,
    body: bytes,
    expected: str,
) -> None:
    """One request, no retries: MLflow's client would retry a 503 for minutes."""
    server = answering(status, body)
    monkeypatch.setenv(registry.TRACKING_ENV, server.url)
    with pytest.raises(PreflightError) as info:
        preflight.check(small_config)
    assert expected in str(info.value) and server.url in str(info.value)
    assert server.requests == 1


def test_the_real_mlflow_server_and_s3_pass(
    mlflow_server: str, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.create_bucket(Bucket="preflight-state")
    s3.create_bucket(Bucket="preflight-data")
    monkeypatch.setenv(registry.TRACKING_ENV, mlflow_server)
    config = make_config(tmp_path, data={"uri": "s3://preflight-data/events/"})
    config = config.replace(state_dir="s3://preflight-state/ctpipe")
    assert preflight.check(config) == preflight.Checked(
        ("preflight-state", "preflight-data"), mlflow_server
    )


def test_a_missing_bucket_is_named(s3: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", data={"uri": "s3://no-such-bucket/events/"})
    with pytest.raises(PreflightError) as info:
        preflight.check(config)
    assert info.value.service == preflight.S3
    assert "bucket s3://no-such-bucket does not exist at http://127.0.0.1:" in str(info.value)


def test_an_s3_endpoint_nothing_listens_on_is_named(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctpipe import storage

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    storage._client.cache_clear()
    config = make_config(tmp_path).replace(state_dir="s3://somewhere/state")
    with pytest.raises(PreflightError) as info:
        preflight.check(config)
    message = str(info.value)
    assert message.startswith(f"preflight: cannot reach S3 at {endpoint} for s3://somewhere")
    assert "AWS_ENDPOINT_URL_S3" in message


def test_ctpipe_run_stops_before_any_step_when_mlflow_is_down(
    small_config: Config, tmp_path: Path
) -> None:
    """Not minutes of training and then evaluate failing after MLflow's retries: the run
    stops before its first step, names the URI and exits non-zero."""
    uri = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(small_config.to_dict()))
    result = subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
        env={**os.environ, registry.TRACKING_ENV: uri},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        f"ctpipe: error: preflight: cannot reach the MLflow tracking server at {uri}"
    )
    assert "Traceback" not in result.stderr
    assert "ingest" not in result.stdout and "✓" not in result.stdout
    assert not Path(small_config.state_dir, "runs").exists()  # no step started
