"""On a real cluster (`make cluster`): one pipeline run, and the champion it leaves.

Opt-in: `pytest -m cluster` (make test deselects it). Skipped, with the reason, when no
cluster with KFP and ctpipe is reachable. Uses the current kube context, or CTPIPE_E2E_CONTEXT.
The run uses the checked-in compiled pipeline and a model name of its own, so the first
blessed challenger must become that model's champion.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctpipe.config import load
from ctpipe.pipelines.compile import COMPILED_PATH
from ctpipe.pipelines.submit import KfpSubmitter

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
RUN_DEADLINE_SECONDS = float(os.environ.get("CTPIPE_E2E_DEADLINE", "2400"))
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


@pytest.fixture(scope="module")
def bootstrap() -> Any:
    spec = importlib.util.spec_from_file_location(
        "kfp_bootstrap", ROOT / "scripts/kfp_bootstrap.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster(bootstrap: Any) -> Iterator[None]:
    bootstrap.CONTEXT = os.environ.get("CTPIPE_E2E_CONTEXT")
    base = bootstrap.kubectl()
    for args, missing in (
        (["get", "--raw", "/readyz"], "no Kubernetes cluster is reachable"),
        (["-n", "kubeflow", "get", "service", "ml-pipeline"], "no Kubeflow Pipelines in it"),
        (["-n", "ctpipe", "get", "service", "mlflow"], "ctpipe is not deployed in it"),
    ):
        try:
            done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{missing} ({exc}); run `make cluster` first")
        if done.returncode != 0:
            reason = f"{missing} ({done.stderr.strip()[:200]}); run `make cluster` first"
            print(f"skipping the cluster tier: {reason}")
            pytest.skip(reason)
    yield


def test_a_pipeline_run_on_the_cluster_produces_a_champion(
    cluster: None, bootstrap: Any, tmp_path: Path
) -> None:
    model_name = f"ctpipe-e2e-{int(time.time())}"
    config = load(ROOT / "manifests/base/ctpipe.yaml")
    config = config.replace(model_name=model_name)
    with (
        bootstrap.port_forward("kubeflow", "ml-pipeline", 8888) as kfp_host,
        bootstrap.port_forward("ctpipe", "mlflow", 5000) as mlflow_host,
    ):
        submitter = KfpSubmitter(kfp_host, package_path=str(COMPILED_PATH))
        run = submitter.submit(config, "e2e", model_name)
        state = wait_for(submitter, run.run_id)
        assert state == "SUCCEEDED", f"run {run.run_id} ended {state}; see {run.url}"

        from mlflow import MlflowClient

        champion: Any = MlflowClient(tracking_uri=mlflow_host).get_model_version_by_alias(
            model_name, "champion"
        )
        assert champion.version == "1"
        assert champion.tags.get("ctpipe.kfp.run_id") == run.run_id
        assert champion.source.startswith(("s3://", "models:/", "runs:/", "mlflow-artifacts:"))


def wait_for(submitter: KfpSubmitter, run_id: str) -> str:
    """Poll the run until it ends (or the deadline passes); returns its final state."""
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        state = str(submitter.client.get_run(run_id).state or "").upper()
        if state in TERMINAL:
            return state
        time.sleep(10)
    pytest.fail(f"run {run_id} did not finish within {RUN_DEADLINE_SECONDS:.0f}s")
