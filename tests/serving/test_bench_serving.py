"""bench/serving.py's shadow measurement keeps working: one tiny round (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.serving.conftest import ROOT

pytestmark = pytest.mark.services


def test_the_shadow_overhead_bench_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serving.py"), "--shadow-only", "--rounds", "1",
         "--shadow-requests", "20"],
        capture_output=True, text=True, check=False, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "shadow overhead, single rows" in out, out[-3000:]
    assert "the shadow scored 40 rows, dropped 0, failed 0" in out, out[-3000:]
    for figure in ("p50 latency: alone", "CPU beyond the shadow's own predict"):
        assert figure in out, out[-3000:]
