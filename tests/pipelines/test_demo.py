"""`ctpipe demo` (what `make run` runs) end to end: the built-in stream, progressive rollouts,
one promoted on live traffic and one rolled back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline


def test_the_demo_shows_a_rollout_promoted_and_one_rolled_back(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    timeline = summary["timeline"]
    assert summary["batches"] == 26 and summary["promotions"] >= 1 and summary["rollbacks"] >= 1
    promoted = next(b for b in timeline if b["rollout"] == "promoted")
    rolled_back = next(b for b in timeline if b["rollout"] == "rolled_back")
    for verdict in (promoted, rolled_back):
        # Each challenger was served in shadow, then as the canary, before its verdict.
        served = [
            b["served_as"]
            for b in timeline
            if b["challenger"] == verdict["challenger"] and b["batch"] <= verdict["batch"]
        ]
        assert served[0] == "shadow" and "canary" in served, served
    assert promoted["champion_after"] == promoted["challenger"] != promoted["champion"]
    assert rolled_back["champion_after"] == rolled_back["champion"]
    assert "harm" in rolled_back["rollout_reason"]
    # The rolled-back challenger had been blessed by the gate: it won on history.
    blessed = next(b for b in timeline if b["registered"] == rolled_back["challenger"])
    assert blessed["blessed"] and blessed["batch"] < rolled_back["batch"]
    assert "ROLLED BACK" in result.stdout and "PROMOTED" in result.stdout
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
