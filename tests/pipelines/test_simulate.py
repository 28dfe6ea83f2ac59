"""`ctpipe simulate` end to end on a small drifting stream: the real monitor and pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from ctpipe.data import synthetic
from ctpipe.errors import ConfigError
from ctpipe.simulate import ReplayStrategy
from tests.conftest import replay_config, replay_stream, simulate_cli

pytestmark = pytest.mark.pipeline


def _replay(tmp_path: Path, data: Path, config: Path, out: Path) -> Any:
    """`ctpipe simulate` on `data` in batches of 400, labels one batch late, policy drift."""
    return simulate_cli(
        tmp_path,
        "--data", str(data), "--target", "label",
        "--time", "event_time", "--batch", "400", "--label-delay", "1", "--policy", "drift",
        "--initial-batches", "3", "--config", str(config), "--out", str(out),
        timeout=900,
    )  # fmt: skip


def test_policy_parsing() -> None:
    assert ReplayStrategy.parse("schedule:3") == ReplayStrategy("schedule", 3)
    assert str(ReplayStrategy.parse("auto")) == "auto"
    for bad in ("sometimes", "schedule:0", "schedule:x"):
        with pytest.raises(ConfigError, match="--policy"):
            ReplayStrategy.parse(bad)


def test_simulate_replays_a_drifting_stream(tmp_path: Path) -> None:
    data = tmp_path / "stream.csv"
    synthetic.write(replay_stream(4800), str(data))
    config = replay_config(tmp_path)
    out = tmp_path / "out"
    result = _replay(tmp_path, data, config, out)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "drift" and summary["batches"] == 9 and summary["rows"] == 3600
    assert 0.5 < summary["prequential"]["roc_auc"] <= 1.0
    assert summary["retrains"] >= 1, result.stdout
    timeline = summary["timeline"]
    # Before the drift (batch 6 starts it) nothing fired; after it, data drift did.
    assert all(not b["fired"] for b in timeline if b["batch"] < 6)
    assert any("data_drift" in b["fired"] for b in timeline if b["batch"] >= 6)
    # Every prediction was made by a champion trained before that batch's labels were revealed.
    assert all(int(b["champion"]) <= int(b["champion_after"]) for b in timeline)
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "drift detected -> run submitted" in result.stdout
    assert "prequential" in result.stdout and str(out) in result.stdout


def test_a_run_that_fails_mid_stream_is_recorded_and_the_replay_goes_on(tmp_path: Path) -> None:
    """Batch 3 arrives with a feature that is null in every row: the champion still predicts
    (it imputes), but the run that trains on it fails validation for real. The replay
    records the failed run, keeps the champion, and the next run (on clean data) goes."""
    import pyarrow as pa

    table = replay_stream(2400, drift=False)
    batch = 400
    column = table.column("num_0").to_pylist()
    column[3 * batch : 4 * batch] = [None] * batch
    table = table.set_column(
        table.column_names.index("num_0"), "num_0", pa.array(column, pa.float64())
    )
    data = tmp_path / "stream.parquet"
    synthetic.write(table, str(data))
    config = replay_config(tmp_path)
    out = tmp_path / "out"
    result = simulate_cli(
        tmp_path,
        "--data", str(data), "--target", "label",
        "--time", "event_time", "--batch", str(batch), "--label-delay", "1",
        "--policy", "schedule:1", "--initial-batches", "3", "--train-window", str(batch),
        "--config", str(config), "--out", str(out),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batches"] == 3 and summary["failed_runs"] >= 1, result.stdout
    timeline = {b["batch"]: b for b in summary["timeline"]}
    # Batch 4's run trains on batch 3 (revealed one batch late): it fails, the champion stays.
    failed = timeline[4]
    assert failed["action"] == "submit" and failed["failed"] is True, result.stdout
    assert "num_0" in failed["error"] and failed["champion_after"] == failed["champion"]
    assert "run failed: " in result.stdout and ", champion stays" in result.stdout
    # The replay went on to the end: batch 5's run trained on clean data and ended.
    assert timeline[5]["action"] == "submit" and timeline[5]["failed"] is False, result.stdout
    assert summary["retrains"] == 2 and summary["failed_runs"] == 1
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_refuses_a_stream_too_short(tmp_path: Path) -> None:
    data = tmp_path / "short.parquet"
    synthetic.write(synthetic.generate(500, seed=1), str(data))
    result = subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "simulate", "--data", str(data), "--target", "label",
         "--time", "event_time", "--batch", "200", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "500 rows make 2 batches of 200" in result.stderr


def test_a_progressive_rollout_replays_shadow_and_canary_before_the_champion_moves(
    tmp_path: Path,
) -> None:
    """Under deploy.rollout.strategy progressive the replay serves a blessed challenger in
    shadow, then as the canary, and the champion moves only when the rollout promotes."""
    data = tmp_path / "stream.csv"
    synthetic.write(replay_stream(7200), str(data))
    config = replay_config(tmp_path)
    config.write_text(
        config.read_text()
        + "deploy:\n  canary_traffic_percent: 30\n  rollout: {strategy: progressive}\n"
    )
    out = tmp_path / "out"
    result = _replay(tmp_path, data, config, out)
    assert result.returncode == 0, result.stdout + result.stderr
    timeline = json.loads((out / "summary.json").read_text())["timeline"]
    blessed = next(b for b in timeline if b["blessed"])
    after = [b for b in timeline if b["batch"] > blessed["batch"]]
    # The champion did not move at the blessing; the batches after it were served with the
    # challenger in shadow, then as the canary, and only then did the champion move.
    assert blessed["champion_after"] == blessed["champion"]
    served = [b["served_as"] for b in after]
    assert served[0] == "shadow" and "canary" in served, served
    promoted = next(b for b in after if b["rollout"] == "promoted")
    assert promoted["champion_after"] == blessed["registered"] != promoted["champion"]
    assert all(
        b["served_as"] in ("shadow", "canary") for b in after if b["batch"] < promoted["batch"]
    )
    assert "[v" in result.stdout and "PROMOTED" in result.stdout
    # The log holds every role, and the canary's rows are the challenger's answers.
    from ctpipe import predlog

    log = predlog.read_predictions(str(out / "predictions"), "ctpipe-model", roles=None)
    roles = set(log[predlog.ROLE].to_pylist())
    assert roles == {"champion", "shadow", "canary"}
    canary = log.filter(pc.equal(log[predlog.ROLE], "canary"))
    assert set(canary[predlog.MODEL_VERSION].to_pylist()) == {blessed["registered"]}
    records = sorted((out / "state" / "monitor" / "ctpipe-model" / "rollout").glob("*.json"))
    moves = [json.loads(r.read_text())["action"] for r in records]
    assert [m for m in moves if m != "wait"][:3] == ["began", "canary", "promoted"], moves
