"""bench/monitor_volume.py must keep working; this runs it on a few minutes of traffic (no
timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.pipeline
def test_monitor_volume_bench_runs(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "monitor_volume.py")]
    command += ["--hours", "0.1", "--keep", str(tmp_path)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout
    assert "uncompacted      108 files" in lines
    assert "old reader" in lines
    assert "compact      108 files -> 1 in" in lines
    assert "ratio uncompacted / compacted:" in lines
    assert "target: compacted check <= 10 s" in lines
    (partition,) = (tmp_path / "predictions" / "volume").iterdir()
    assert [p.name[:8] for p in partition.iterdir()] == ["compact-"]
