"""A registered champion (trained in-process by the stage functions) and a real predictor
process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.pipelines.in_process import run_in_process
from tests.conftest import free_port, make_config

ROOT = Path(__file__).resolve().parents[2]


def train_and_register(config: Config, work: Path, seed: int = 7) -> str:
    """A blessed, registered champion from the pipeline's stages in one process."""
    import dataclasses

    synthetic = dataclasses.replace(config.data.synthetic, seed=seed)
    config = config.replace(data=dataclasses.replace(config.data, synthetic=synthetic))
    run = run_in_process(config, work, infra=False)
    assert run.registration is not None, run.evaluation.summary()
    return run.registration.version


@pytest.fixture(scope="session")
def served_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("serving")
    config = make_config(root / "state", model_name="served-model")
    config = config.replace(search=config.search.__class__(candidates=config.search.candidates[:1]))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CTPIPE_TRAIN_THREADS", "1")
        train_and_register(config, root / "v1")
    return config


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_dir: Path
    model: str
    output_file: Path
    timeout: float = 120.0  # generous: a slow answer on a loaded machine is not a dropped one

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}"), dict(error.headers)

    def v1(self, instances: Any, **kw: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.post(f"/v1/models/{self.model}:predict", {"instances": instances}, **kw)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()

    def alive(self) -> bool:
        try:
            return json.loads(self.get(f"/v2/models/{self.model}/ready")).get("ready") is True
        except (urllib.error.URLError, ConnectionError):
            return False

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return self.output()


def start_server(config: Config, log_dir: Path, *extra: str, timeout: float = 90.0) -> Server:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri(config.state_dir)}
    # A file, not a pipe: nobody reads a pipe while requests run, and a full one blocks
    # the server's logging, which stalls every request.
    output_file = log_dir.with_name(f"{log_dir.name}-server.out")
    with output_file.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "ctpipe.serving", "--model_name", config.model_name, "--http_port", str(port),
                "--host", "127.0.0.1", "--enable_grpc", "false", "--predictions-uri", str(log_dir),
                "--log-flush-seconds", "0.5", *extra,
            ],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", process, log_dir, config.model_name, output_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the predictor exited with {process.returncode}:\n{server.output()}"
            )
        if server.alive():
            return server
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("the predictor did not become ready")


@pytest.fixture
def server(served_config: Config, tmp_path: Path) -> Iterator[Server]:
    # A small body limit, so the oversized-body test stays small.
    running = start_server(
        served_config,
        tmp_path / "predictions",
        "--reload-seconds",
        "0.3",
        "--max-body-bytes",
        "262144",
    )
    yield running
    if running.process.poll() is None:
        running.stop()
