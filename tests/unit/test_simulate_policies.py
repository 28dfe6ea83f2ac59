"""How `ctpipe simulate` turns a policy into monitor settings, in the data's own time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctpipe.config import Monitor, parse_duration
from ctpipe.simulate import AUTO_BACKSTOP_BATCHES, ReplayStrategy, _replay_score, prepare_config
from tests.conftest import make_config

SPAN = 86400.0  # one batch: a day of data


def settings(tmp_path: Path, policy: str, **overrides: object) -> Monitor:
    base = make_config(tmp_path / "state", **overrides)
    return prepare_config(base, tmp_path, ReplayStrategy.parse(policy), SPAN, 1000, 1).monitor


def test_auto_runs_every_trigger_with_the_schedule_as_a_backstop(tmp_path: Path) -> None:
    monitor = settings(tmp_path, "auto")
    triggers = monitor.triggers
    assert triggers.data_drift and triggers.concept_drift
    assert triggers.performance_margin is not None
    age = parse_duration(triggers.max_model_age)
    assert age == (AUTO_BACKSTOP_BATCHES + 1 - 0.5) * SPAN
    # labels one batch late are in time; two batches late are not
    assert SPAN <= parse_duration(triggers.label_horizon) < 2 * SPAN


def test_only_schedule_and_auto_have_a_schedule(tmp_path: Path) -> None:
    for policy in ("never", "drift", "performance"):
        assert settings(tmp_path, policy).triggers.max_model_age is None
    schedule = settings(tmp_path, "schedule:3").triggers
    assert parse_duration(schedule.max_model_age) == (3 + 1 - 0.5) * SPAN


def test_a_config_without_a_label_horizon_keeps_none(tmp_path: Path) -> None:
    monitor = settings(tmp_path, "auto", monitor={"triggers": {"label_horizon": None}})
    assert monitor.triggers.label_horizon is None


@pytest.mark.parametrize(("low", "high"), [(0, 1), (2, 10), ("no", "yes")])
def test_replay_auc_scores_the_class_the_model_gives_a_probability_for(
    low: object, high: object
) -> None:
    # A fitted classifier's scores are the probability of classes_[1]: the larger number,
    # or the later text. Numbers ordered as text (10 before 2) once turned AUC upside down.
    truth = np.array([low, high, low, high, low, high], dtype=object)
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    names = np.where(scores > 0.5, high, low)
    assert _replay_score("roc_auc", "classification", truth, names, scores) == 1.0
    assert _replay_score("accuracy", "classification", truth, names, scores) == 1.0


def test_a_batch_the_canary_shared_is_scored_per_version(tmp_path: Path) -> None:
    """Two models that rank equally well, on different scales: one AUC over both would
    mark the canary down; per version, weighted by rows, it does not."""
    import pyarrow as pa

    from ctpipe.simulate import _batch_metric

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    signal = truth + rng.normal(0, 0.8, 400)
    champion = 1 / (1 + np.exp(-signal))  # a probability
    challenger = 1 / (1 + np.exp(-(signal - 3)))  # the same ranking, shifted down
    canary = rng.random(400) < 0.25
    scores = np.where(canary, challenger, champion)
    names = (scores > 0.5).astype(int)
    config = make_config(tmp_path / "state")
    part = pa.table({config.target: truth})

    def auc(rows: np.ndarray) -> float:
        value = _replay_score("roc_auc", "classification", truth[rows], names[rows], scores[rows])
        assert value is not None
        return value

    every = np.ones(400, bool)
    mixed = auc(every)
    per_version = _batch_metric("roc_auc", config, part, names, scores, canary)
    expected = (auc(~canary) * (~canary).sum() + auc(canary) * canary.sum()) / 400
    assert per_version == pytest.approx(expected)
    assert per_version > mixed + 0.02  # the mixed AUC mostly measures the shift
    # A batch served by one version is scored as before.
    no_canary = np.zeros(400, bool)
    assert _batch_metric("roc_auc", config, part, names, scores, no_canary) == pytest.approx(mixed)
