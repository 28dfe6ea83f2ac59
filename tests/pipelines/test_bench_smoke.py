"""The benchmark scripts must keep working; this runs each on a tiny input (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.pipeline
def test_pipeline_overhead_bench_runs(tmp_path: Path) -> None:
    search = json.dumps([{"family": "linear", "params": {"C": 1.0}}])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "pipeline_overhead.py"),
            "--rows",
            "2000",
            "--search",
            search,
            "--keep",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ratio pipeline / in-process:" in result.stdout
    assert (tmp_path / "round-1" / "state-pipeline" / "mlflow.db").exists()
