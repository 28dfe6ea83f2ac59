"""The cluster's shape on one machine: an MLflow tracking server over HTTP whose artifacts
live on S3, schemas on S3, data on S3. Nothing local but the step processes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ctpipe import registry, storage
from ctpipe.pipelines.local import run_local
from tests.conftest import make_config

pytestmark = [pytest.mark.pipeline, pytest.mark.services]


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
