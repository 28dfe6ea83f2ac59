"""scripts/kfp_bootstrap.py against the recording KFP API server: upload, schedule, run."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.test_kfp_submit import API, RecordingKfp, kfp_server  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bootstrap() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(
        "kfp_bootstrap", ROOT / "scripts/kfp_bootstrap.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_pipeline_uploads_schedules_and_runs(
    bootstrap: ModuleType,
    kfp_server: RecordingKfp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    kfp_server.pipelines = []
    argv = ["pipeline", "--kfp-host", kfp_server.url, "--cron", "0 30 2 * * *"]
    assert bootstrap.main(argv) == 0

    package = bootstrap.DEFAULT_PACKAGE
    (version,) = kfp_server.find("POST", f"{API}/pipelines/upload_version")
    assert version["query"]["name"] == [bootstrap.version_name(package)]
    assert version["body"]["uploadfile"][1] == package.read_bytes()
    (recurring,) = kfp_server.find("POST", f"{API}/recurringruns")
    assert recurring["body"]["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * *"}}
    assert recurring["body"]["display_name"] == "ctpipe-nightly"
    # The cluster's ctpipe.yaml is what the runs receive.
    config = recurring["body"]["runtime_config"]["parameters"]["config"]
    assert config["state_dir"] == "s3://ctpipe/state"
    (run,) = kfp_server.find("POST", f"{API}/runs")
    assert run["body"]["runtime_config"]["parameters"]["reason"] == "bootstrap"

    # A rerun uploads nothing new and keeps the recurring run it finds.
    kfp_server.requests.clear()
    kfp_server.versions = [
        {
            "pipeline_id": "p-1",
            "pipeline_version_id": "v-9",
            "display_name": bootstrap.version_name(package),
        }
    ]
    kfp_server.pipelines = [{"pipeline_id": "p-1", "display_name": "continuous-training"}]
    kfp_server.recurring_runs = [{"recurring_run_id": "rr-7", "display_name": "ctpipe-nightly"}]
    assert bootstrap.main(["pipeline", "--kfp-host", kfp_server.url, "--no-run-now"]) == 0
    assert not kfp_server.find("POST", f"{API}/pipelines/upload_version")
    assert not kfp_server.find("POST", f"{API}/recurringruns")
    assert not kfp_server.find("POST", f"{API}/runs")


def test_buckets_are_the_ones_the_cluster_config_uses(bootstrap: ModuleType) -> None:
    assert bootstrap.buckets_of(bootstrap.DEFAULT_CONFIG, bootstrap.DEFAULT_ENV) == ["ctpipe"]
    assert json.dumps(bootstrap.properties(bootstrap.DEFAULT_ENV))
