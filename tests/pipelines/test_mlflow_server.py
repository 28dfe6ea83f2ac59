"""The cluster's shape on one machine: an MLflow tracking server over HTTP whose artifacts
live on S3, schemas on S3, data on S3. Nothing local but the step processes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctpipe import registry, storage
from ctpipe.pipelines.local import run_local
from tests.conftest import S3_ENV, free_port, make_config, wait_for_port

pytestmark = [pytest.mark.pipeline, pytest.mark.services]


@pytest.fixture
def mlflow_server(s3_endpoint: str, tmp_path: Path) -> Iterator[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, **_credentials())
    client.create_bucket(Bucket="mlflow")
    port = free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, **S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = (tmp_path / "mlflow-server.log").open("wb")
    process = subprocess.Popen(
        [
            mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", "s3://mlflow/artifacts",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, process, timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


def test_pipeline_against_an_mlflow_server_with_s3_artifacts(
    mlflow_server: str, s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket="ctpipe-state")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)  # local run folders for a non-local state_dir go under ./.ctpipe
    config = make_config(Path("unused"))
    config = config.replace(state_dir="s3://ctpipe-state/state")

    run = run_local(config, out=io.StringIO())
    assert run.ok, run.errors
    assert run.registered_version == "1"

    # Schema versions are on S3, the model is on S3 behind the tracking server.
    assert storage.list_files("s3://ctpipe-state/state/schemas/test-model/") == [
        "s3://ctpipe-state/state/schemas/test-model/v0001.json"
    ]
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith(registry.PICKLE_FILE) for key in stored), stored
    ref = registry.champion(config)
    assert ref is not None and ref.version == "1"
    model = registry.load_model(ref)  # downloads through the server and checks the SHA-256
    assert hasattr(model, "predict_proba")
