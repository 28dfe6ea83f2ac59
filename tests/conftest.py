"""Shared fixtures: small configs, synthetic data files, and real services on loopback."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctpipe import blessing
from ctpipe import config as config_module
from ctpipe.config import Config
from ctpipe.data import synthetic

# One blessing key for the whole session, in the environment so that every process a test
# starts (steps, servers, containers) signs and checks with it; never the developer's own.
os.environ.setdefault(blessing.KEY_ENV, secrets.token_hex(32))

# Fast enough for tests, still one candidate per family.
SMALL_SEARCH: list[dict[str, Any]] = [
    {"family": "linear", "params": {"C": 1.0}},
    {"family": "random_forest", "params": {"n_estimators": 30, "min_samples_leaf": 5}},
    {"family": "hist_gradient_boosting", "params": {"max_iter": 60}},
]


def make_config(state_dir: Path, **overrides: Any) -> Config:
    """The default config, small and fast, with state under `state_dir`."""
    raw: dict[str, Any] = {
        "model_name": "test-model",
        "task": "classification",
        "target": "label",
        "timestamp": "event_time",
        "id_column": "request_id",
        "sensitive_columns": ["region"],
        "state_dir": str(state_dir),
        "data": {"synthetic": {"rows": 3000, "seed": 7}},
        "search": {"candidates": SMALL_SEARCH},
        "gate": {"thresholds": {"roc_auc": 0.6}, "bootstrap_samples": 200},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return config_module.from_dict(raw)


@pytest.fixture
def small_config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "state")


@pytest.fixture
def write_data(tmp_path: Path):
    """Write synthetic rows to a file under tmp_path; returns its path."""

    def write(name: str, rows: int = 3000, seed: int = 7, **kwargs: Any) -> Path:
        path = tmp_path / "data" / name
        synthetic.write(synthetic.generate(rows, seed, **kwargs), str(path))
        return path

    return write


def run_fresh(script: str, *args: str) -> list[str]:
    """Run `script` in a fresh interpreter and return its stdout lines. For what a step
    process imports or pays: this test process has imported everything already."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], check=True, capture_output=True, text=True
    )
    return result.stdout.splitlines()


def load_script(name: str) -> Any:
    """A module from scripts/ (not a package), without putting scripts/ on sys.path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    module_name = f"ctpipe_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited early with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


@contextlib.contextmanager
def loopback_service(command: Callable[[int], list[str]], timeout: float = 30.0) -> Iterator[str]:
    """Start a server process on a free loopback port; yield its URL; stop it after."""
    port = free_port()
    process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint: moto's server on a free loopback port, spoken to over HTTP."""
    server = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    with loopback_service(lambda port: [server, "-H", "127.0.0.1", "-p", str(port)]) as url:
        yield url


@contextlib.contextmanager
def mlflow_process(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server` on a free loopback port with a sqlite store in `workdir`, plus
    `args`; its log is workdir/mlflow-server.log."""
    port = free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    with (workdir / "mlflow-server.log").open("wb") as log:
        process = subprocess.Popen(
            [
                mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}", *args,
            ],
            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
        try:
            wait_for_port(port, process, timeout=90)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=20)


@contextlib.contextmanager
def mlflow_service(s3_endpoint: str, workdir: Path) -> Iterator[str]:
    """An MLflow tracking server on loopback: sqlite behind it, artifacts on S3 (bucket
    `mlflow`, created here), as a cluster runs it."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket="mlflow")
    env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    with mlflow_process(
        workdir, "--artifacts-destination", "s3://mlflow/artifacts", env=env
    ) as url:
        yield url


@pytest.fixture
def mlflow_server(s3_endpoint: str, tmp_path: Path) -> Iterator[str]:
    with mlflow_service(s3_endpoint, tmp_path) as url:
        yield url


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client on the moto server, with the environment ctpipe reads pointing at it."""
    import boto3

    from ctpipe import storage

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    storage._client.cache_clear()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    yield client
    storage._client.cache_clear()


@pytest.fixture(autouse=True, scope="session")
def _isolated_env() -> Iterator[None]:
    """Nothing from the developer's shell leaks in: tests pick their own MLflow store
    (sqlite under their state_dir) and their own S3 endpoint."""
    with pytest.MonkeyPatch.context() as env:
        for name in (
            "MLFLOW_TRACKING_URI",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL",
            "MLFLOW_S3_ENDPOINT_URL",
        ):
            env.delenv(name, raising=False)
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        if "CTPIPE_TRAIN_THREADS" not in os.environ:
            env.setenv("CTPIPE_TRAIN_THREADS", "1")
        yield


PUSHGATEWAY_APT = "apt-get install -y prometheus-pushgateway"


def pushgateway_binary() -> str | None:
    fallback = Path("/usr/bin/prometheus-pushgateway")
    return shutil.which("prometheus-pushgateway") or (str(fallback) if fallback.exists() else None)


@pytest.fixture(scope="session")
def pushgateway() -> Iterator[str]:
    """A real Prometheus Pushgateway on a free loopback port (in-memory, no persistence)."""
    binary = pushgateway_binary()
    if binary is None:
        reason = f"prometheus-pushgateway is not installed; install it with: {PUSHGATEWAY_APT}"
        print(reason)
        pytest.skip(reason)
    with loopback_service(
        lambda port: [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    ) as url:
        yield url


REPLAY_SEARCH = "    - {family: linear, params: {C: 1.0}}\n"


def replay_stream(rows: int, drift: bool = True) -> Any:
    """A small stream for `ctpipe simulate`: 200 rows a day, and with `drift` an abrupt
    change (features and labelling rule) halfway."""
    drifts = (synthetic.Drift(at=0.5, covariate=1.5, concept=0.8),) if drift else ()
    return synthetic.generate(
        rows, seed=5, numeric=4, categorical=1, days=rows / 200, drifts=drifts
    )


def replay_config(folder: Path, target: str = "label", search: str = REPLAY_SEARCH) -> Path:
    """A small config for `ctpipe simulate`: the default one with `search` as its candidate
    list (YAML lines) and a cheap gate; written to folder/ctpipe.yaml."""
    path = folder / "ctpipe.yaml"
    path.write_text(
        f"task: classification\ntarget: {target}\ntimestamp: event_time\n"
        f"search:\n  candidates:\n{search}"
        "gate:\n  thresholds: {roc_auc: 0.55}\n  bootstrap_samples: 200\n"
    )
    return path


def simulate_cli(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """`ctpipe simulate ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "simulate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return found


def check_metrics(promtool: str, exposition: str) -> None:
    """`promtool check metrics` on a scrape: names, types and help by the conventions."""
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"
