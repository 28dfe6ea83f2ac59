"""The torch MLP as the only family in the search: the whole pipeline through kfp.local,
one fresh process per step, real MLflow (sqlite), and the throughput bench's CPU path."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ctpipe import registry
from ctpipe.data import synthetic
from ctpipe.pipelines.local import run_local
from tests.conftest import make_config

pytestmark = pytest.mark.pipeline

ROOT = Path(__file__).resolve().parents[2]

TORCH_ONLY = [
    {
        "family": "torch_mlp",
        "params": {
            "hidden_units": [16, 32],  # two candidates: the fan-out runs torch twice at once
            "batch_size": 128,
            "max_epochs": 10,
            "patience": 3,
        },
    }
]


def test_a_search_of_only_torch_mlp_registers_a_torch_champion(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        data={"synthetic": {"rows": 1500, "seed": 7}},
        search={"candidates": TORCH_ONLY},
    )
    run = run_local(config, out=io.StringIO())
    assert run.ok, run.errors
    assert sorted(c["candidate"] for c in run.candidates) == ["torch_mlp-0", "torch_mlp-1"]
    assert all(c["family"] == "torch_mlp" for c in run.candidates)
    assert run.chosen in {"torch_mlp-0", "torch_mlp-1"}
    assert run.blessed and run.registered_version == "1"

    ref = registry.champion(config)
    assert ref is not None
    logged = registry.client(config).get_run(ref.run_id).data
    assert logged.tags[registry.TAG_CANDIDATE] == run.chosen
    assert logged.params["family"] == "torch_mlp" and logged.params["device"] == "cpu"
    model = registry.load_model(ref)
    from ctpipe.training.torch_mlp import TorchMLPClassifier

    mlp = model[-1]
    assert isinstance(mlp, TorchMLPClassifier)
    assert mlp.device_ == "cpu" and mlp.n_threads is not None
    assert len(mlp.categorical_groups_) == 3  # region, channel, device: one embedding each

    fresh = synthetic.generate(300, seed=11).to_pandas()
    proba = model.predict_proba(fresh)
    assert proba.shape == (300, 2) and ((proba >= 0) & (proba <= 1)).all()


def test_the_torch_bench_runs_on_cpu() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "train_torch.py"),
            "--quick",
            "--rows",
            "3000",
            "--cpu-threads",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "torch " in out and "gpu:" in out
    for batch in (256, 512, 1024, 2048, 4096, 8192):
        assert f"batch {batch}" in out
    assert "train samples/s" in out and "predict samples/s" in out
    assert "GPU/CPU ratio" in out
