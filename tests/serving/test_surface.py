"""The predictor's surface as a real process on loopback: only the predictor's routes,
bounded bodies, bounded metric labels, request ids that can neither flood a log line nor
land in the prediction log twice."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ctpipe import predlog
from ctpipe.config import Config
from ctpipe.serving import metrics
from tests.serving.conftest import Server, start_server
from tests.serving.test_server import rows, v2_inputs

pytestmark = pytest.mark.services

MAX_BODY = 262_144


@pytest.fixture(scope="module")
def server(served_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("surface") / "predictions"
    running = start_server(served_config, log_dir, "--max-body-bytes", str(MAX_BODY))
    yield running
    if running.process.poll() is None:
        running.stop()


def fetch(
    server: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body or text) for any method, error statuses included."""
    request = urllib.request.Request(
        server.url + path,
        data=body,
        method=method,
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=server.timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def test_repository_explain_and_unknown_routes_are_closed(server: Server) -> None:
    m = server.model
    for path, flag in [
        (f"/v2/repository/models/{m}/unload", "--enable-repository-routes"),
        (f"/v2/repository/models/{m}/load", "--enable-repository-routes"),
        (f"/v1/models/{m}:explain", "--enable-explain"),
    ]:
        status, body = fetch(server, "POST", path, b"{}")
        assert status == 404 and flag in body["error"], (path, body)
    assert fetch(server, "GET", "/docs")[0] == 404
    assert fetch(server, "POST", f"/v2/models/{m}/generate", b"{}")[0] == 404
    # The unload did not happen: the model is still in service.
    assert server.alive()
    for path in [
        "/",
        "/v2/health/live",
        "/v2/health/ready",
        "/v1/models",
        f"/v1/models/{m}",
        f"/v2/models/{m}",
        f"/v2/models/{m}/ready",
        "/metrics",
    ]:
        assert fetch(server, "GET", path)[0] == 200, path
    assert server.v1(rows(1))[0] == 200


def test_the_body_limit_holds_on_the_versioned_v2_route(server: Server) -> None:
    m = server.model
    big = b'{"inputs": [' + b'{"name": "num_0"},' * 20_000 + b"{}]}"
    assert len(big) > MAX_BODY
    for path in [f"/v2/models/{m}/versions/1/infer", f"/v2/models/{m}/infer"]:
        status, body = fetch(server, "POST", path, big)
        assert status == 413 and "--max-body-bytes" in body["error"], (path, body)
    assert server.alive()


def test_json_nested_100_000_deep_is_a_400_not_a_500(server: Server) -> None:
    m = server.model
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in [f"/v1/models/{m}:predict", f"/v2/models/{m}/infer"]:
        status, body = fetch(server, "POST", path, deep)
        assert status == 400, (path, status, body)
        assert "100,000 deep; the limit is 400" in body["error"]
    assert server.alive()


def test_metric_labels_are_the_model_or_unknown(server: Server) -> None:
    names = [f"m{uuid.uuid4().hex}" for _ in range(100)]
    for name in names:
        assert server.post(f"/v1/models/{name}:predict", {"instances": []})[0] == 404
        assert server.post(f"/v2/models/{name}/infer", {"inputs": []})[0] == 404
    text = server.get("/metrics")
    assert not [name for name in names if name in text]
    unknown = f'{metrics.REQUESTS}{{model="{metrics.UNKNOWN_MODEL}",protocol="v1",status="404",'
    assert (
        sum(line.startswith(unknown) and line.endswith(" 100.0") for line in text.splitlines()) == 1
    )
    assert server.alive()


def logged_ids(server: Server) -> list[str]:
    try:
        table = predlog.read_predictions(str(server.log_dir), server.model)
    except Exception:  # nothing flushed yet
        return []
    return list(table.column(predlog.REQUEST_ID).to_pylist())


def test_a_request_id_breaking_the_rule_is_refused_and_not_logged(server: Server) -> None:
    huge = "x" * 60_000
    status, body, _ = server.v1(rows(1), headers={"x-request-id": huge})
    assert status == 400, body
    assert body["error"].startswith("x-request-id: a request id must be 1 to 128 characters")
    v2 = {"id": "y" * 200, "inputs": v2_inputs(rows(1))}
    status, body, _ = server.post(f"/v2/models/{server.model}/infer", v2)
    assert status == 400 and body["error"].startswith('"id": a request id must be'), body
    assert huge not in server.output()


def test_a_repeated_request_id_is_refused_and_logged_once(server: Server) -> None:
    once = f"once-{uuid.uuid4().hex[:8]}"
    assert server.v1(rows(1), headers={"x-request-id": once})[0] == 200
    status, body, _ = server.v1(rows(1), headers={"x-request-id": once})
    assert status == 409 and f'request id "{once}" was already answered' in body["error"]
    marker = f"after-{uuid.uuid4().hex[:8]}"
    assert server.v1(rows(1), headers={"x-request-id": marker})[0] == 200
    # The log is written in arrival order: once the later request is in it, a second
    # row for the repeated id would be too.
    deadline = time.monotonic() + 60
    while marker not in logged_ids(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    ids = logged_ids(server)
    assert marker in ids and ids.count(once) == 1


def test_a_field_name_cannot_forge_a_log_line(server: Server) -> None:
    instance = rows(1)[0]
    instance["colour\nFORGED ctpipe.serving: model replaced"] = "red"
    status, body, _ = server.v1([instance])
    assert status == 400, body
    assert 'unknown field "colour\\nFORGED ctpipe.serving' in body["error"]
    # KServe refuses FP16 data in JSON before ctpipe sees the request, quoting the name.
    fp16 = {
        "name": "half\nFORGED kserve: unloaded",
        "shape": [1],
        "datatype": "FP16",
        "data": [1.0],
    }
    status, body, _ = server.post(f"/v2/models/{server.model}/infer", {"inputs": [fp16]})
    assert status == 400 and "FP16" in body["error"], body
    output = server.output()  # a refusal is logged before the answer goes out
    assert "colour\\nFORGED" in output and "half\\nFORGED" in output  # logged, escaped
    assert not [line for line in output.splitlines() if line.startswith("FORGED")]


def test_the_flags_route_repository_and_explain(served_config: Config, tmp_path: Any) -> None:
    flagged = start_server(
        served_config,
        tmp_path / "predictions",
        "--enable-repository-routes",
        "--enable-explain",
    )
    try:
        status, body = fetch(flagged, "POST", f"/v1/models/{flagged.model}:explain", b"{}")
        assert "--enable-explain" not in json.dumps(body), body  # KServe's answer, not ours
        status, body = fetch(flagged, "POST", f"/v2/repository/models/{flagged.model}/unload")
        assert status == 200 and body == {"name": flagged.model, "unload": True}, body
        assert not flagged.alive()  # what the flag allows: taking the model out of service
    finally:
        flagged.stop()
