"""Triggers that mean something, end to end: `ctpipe simulate --policy auto` with the
default triggers (calibrated drift thresholds, weighted by labels) on three streams.

    seasonal_stable  the features follow the year, P(label | features) never changes:
                     no retrain by a change trigger, and at most one batch of year 2
                     drifts against a champion trained on year 1 (the thresholds were
                     calibrated on its own seasons)
    stationary       one distribution throughout: no retrain by a change trigger
    abrupt_change    the labelling rule flips halfway: a retrain within two batches

`auto` also runs an 8-batch schedule as a backstop (see simulate.AUTO_BACKSTOP_BATCHES);
those runs are not triggered by change and are allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctpipe import registry
from ctpipe.data import scenarios, synthetic
from tests.conftest import replay_config, simulate_cli

pytestmark = pytest.mark.pipeline

SEARCH = "    - {family: linear, params: {C: 1.0}}\n"


def replay(
    name: str, rows: int, batch: int, initial: int, tmp_path: Path, *extra: str
) -> dict[str, Any]:
    data = tmp_path / f"{name}.parquet"
    synthetic.write(scenarios.TRIGGER_SCENARIOS[name](rows, 0), str(data))
    config = replay_config(tmp_path, "label", SEARCH)
    out = tmp_path / "out"
    result = simulate_cli(
        tmp_path,
        "--data", str(data), "--target", "label", "--time", "event_time",
        "--batch", str(batch), "--label-delay", "1", "--initial-batches", str(initial),
        "--policy", "auto", "--config", str(config), "--out", str(out), *extra,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.TRACKING_ENV, raising=False)


CHANGE_TRIGGERS = {"data_drift", "performance", "concept_drift"}


def change_retrains(summary: dict[str, Any]) -> list[tuple[int, list[str]]]:
    """Runs that a change trigger started (auto's schedule backstop may run on its own)."""
    return [
        (b["batch"], b["fired"])
        for b in summary["timeline"]
        if b["run"] and CHANGE_TRIGGERS & set(b["fired"])
    ]


def test_seasons_alone_trigger_no_retrain(tmp_path: Path) -> None:
    # 730 days in 24 batches of ~30 days; the first champion learns the first year.
    summary = replay("seasonal_stable", 7200, 300, 12, tmp_path)
    timeline = summary["timeline"]
    assert len(timeline) == 12
    assert change_retrains(summary) == [], [(b["batch"], b["fired"]) for b in timeline]
    # The thresholds were calibrated on the champion's own year: at most one batch of the
    # next one reaches dataset drift (share 0.25), where fixed thresholds flag the
    # seasonal columns in most batches (tests/unit/test_drift_calibration.py).
    shares = [b["drift_share"] for b in timeline if b["drift_share"] is not None]
    assert len(shares) == 12 and sum(s >= 0.25 for s in shares) <= 1, shares


def test_a_stationary_stream_triggers_no_retrain(tmp_path: Path) -> None:
    summary = replay("stationary", 4800, 300, 4, tmp_path)
    assert change_retrains(summary) == [], [(b["batch"], b["fired"]) for b in summary["timeline"]]
    assert summary["retrains"] <= 1  # at most auto's 8-batch backstop, in 12 batches


def test_an_abrupt_change_triggers_a_retrain_within_two_batches(tmp_path: Path) -> None:
    summary = replay("abrupt_change", 4800, 300, 4, tmp_path)
    change = 8  # 16 batches, the change at the middle
    runs = [b["batch"] for b in summary["timeline"] if b["run"]]
    assert runs and change <= runs[0] <= change + 2, [
        (b["batch"], b["fired"], b["action"]) for b in summary["timeline"]
    ]
    assert summary["failed_runs"] == 0
