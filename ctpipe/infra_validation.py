"""Infra validation: serve the challenger exactly as production will, before registering it.

The challenger is saved in the registry's format, started in the serving runtime
(`python -m ctpipe.serving`, a subprocess on a free loopback port), and asked over v2
REST about the newest test rows. Its answers must be identical to the in-process
model's, and single-row requests must meet the latency budget. Otherwise the run fails
and the champion stays.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctpipe.config import Config
from ctpipe.errors import CtpipeError
from ctpipe.registry import SavedModel

SINGLE_ROW_REQUESTS = 40


class InfraValidationFailed(CtpipeError):
    """The served challenger did not start, disagreed with itself, or was too slow."""


@dataclass(frozen=True)
class InfraResult:
    rows: int
    identical: bool
    max_score_difference: float
    p50_ms: float
    p95_ms: float
    startup_seconds: float

    def describe(self) -> str:
        return (
            f"served challenger answered {self.rows} test rows identically to in-process predictions; "
            f"single-row latency p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms; ready in {self.startup_seconds:.1f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def v2_request(frame: Any, request_id: str) -> dict[str, Any]:
    """A v2 REST body for a DataFrame: one named input per column."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind in "fiu":
            values = [None if v != v else v for v in column.astype(float).tolist()]
            datatype = "FP64" if column.dtype.kind == "f" else "INT64"
            if datatype == "INT64":
                values = [int(v) for v in column.tolist()]
        elif column.dtype.kind == "b":
            values, datatype = column.tolist(), "BOOL"
        else:
            values = [None if v is None or v != v else str(v) for v in column.tolist()]
            datatype = "BYTES"
        inputs.append(
            {"name": str(name), "shape": [len(frame)], "datatype": datatype, "data": values}
        )
    return {"id": request_id, "inputs": inputs}


def validate(config: Config, model: Any, saved: SavedModel, frame: Any) -> InfraResult:
    """Serve `saved` (`model`, written as the registry stores it) in a subprocess and check
    it against `model` on `frame`."""
    deploy = config.deploy
    frame = frame.head(deploy.infra_rows)
    work = Path(tempfile.mkdtemp(prefix="ctpipe-infra-"))
    port = _free_port()
    command = [
        sys.executable, "-m", "ctpipe.serving", "--model_name", config.model_name, "--http_port", str(port),
        "--host", "127.0.0.1", "--enable_grpc", "false", "--model-uri", saved.path, "--model-sha256", saved.sha256,
        "--model-version", "challenger", "--reload-seconds", "0",
    ]  # fmt: skip
    log = (work / "server.log").open("w")
    started = time.perf_counter()
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    base = f"http://127.0.0.1:{port}/v2/models/{config.model_name}"
    try:
        _wait_ready(server, base, deploy.infra_timeout_seconds, work / "server.log")
        startup = time.perf_counter() - started
        status, body = _post(f"{base}/infer", v2_request(frame, "infra-validation"))
        if status != 200:
            raise InfraValidationFailed(
                f"the served challenger refused the test rows: HTTP {status}: {body.get('error', body)}"
            )
        result = _compare(model, frame, body)
        latencies = []
        for i in range(min(SINGLE_ROW_REQUESTS, len(frame))):
            tick = time.perf_counter()
            status, body = _post(f"{base}/infer", v2_request(frame.iloc[i : i + 1], f"latency-{i}"))
            latencies.append((time.perf_counter() - tick) * 1000)
            if status != 200:
                raise InfraValidationFailed(
                    f"single-row request {i} failed: HTTP {status}: {body.get('error', body)}"
                )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    if p95 > deploy.infra_latency_ms:
        raise InfraValidationFailed(
            f"single-row latency p95 {p95:.1f} ms is over the budget of {deploy.infra_latency_ms:g} ms "
            f"(deploy.infra_latency_ms); p50 {p50:.1f} ms"
        )
    return InfraResult(len(frame), True, result, p50, p95, startup)


def _wait_ready(server: subprocess.Popen[bytes], base: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise InfraValidationFailed(
                f"the serving runtime exited with code {server.returncode} before it was ready:\n{tail}"
            )
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as response:
                if json.loads(response.read()).get("ready"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise InfraValidationFailed(
        f"the serving runtime was not ready within {timeout:g}s (deploy.infra_timeout_seconds)"
    )


def _compare(model: Any, frame: Any, body: dict[str, Any]) -> float:
    """Identical labels and scores, or a failure naming the first rows that differ."""
    outputs = {o["name"]: o["data"] for o in body.get("outputs", [])}
    served_scores = np.asarray(outputs.get("scores", []), dtype=float)
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(frame), dtype=float)
        labels = [str(c) for c in np.asarray(model.classes_)[proba.argmax(axis=1)]]
        scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
        served_labels = [str(v) for v in outputs.get("predictions", [])]
    else:
        scores = np.asarray(model.predict(frame), dtype=float)
        labels = [repr(float(v)) for v in scores]
        served_labels = [repr(float(v)) for v in outputs.get("predictions", [])]
    if len(served_scores) != len(scores):
        raise InfraValidationFailed(
            f"the served challenger returned {len(served_scores)} scores for {len(scores)} rows"
        )
    differ = np.flatnonzero(
        (served_scores != scores) | (np.asarray(served_labels) != np.asarray(labels))
    )
    if len(differ):
        shown = "; ".join(
            f"row {i}: served {served_labels[i]} ({served_scores[i]!r}), in-process {labels[i]} ({scores[i]!r})"
            for i in differ[:3]
        )
        raise InfraValidationFailed(
            f"the served challenger's predictions differ from in-process ones on {len(differ)} of {len(scores)} "
            f"test rows ({shown}); it is not registered"
        )
    return float(np.max(np.abs(served_scores - scores))) if len(scores) else 0.0
