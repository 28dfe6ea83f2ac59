"""Retraining triggers weighted by what they know (issue 14): performance with a bootstrap
interval, label timeliness, and data drift outranked while labels arrive in time."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ctpipe import evaluation, predlog, registry
from ctpipe.config import Config, RetrainPolicy
from ctpipe.data import scenarios
from ctpipe.monitor import decide, runner, triggers
from ctpipe.monitor.triggers import Interval, TriggerResult
from tests.conftest import make_config

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _performance(value: float, interval: Interval | None, **overrides: Any) -> TriggerResult:
    metric = overrides.pop("metric", "roc_auc")
    arguments: dict[str, Any] = {
        "higher_is_better": True,
        "min_labelled": 200,
        "floor": None,
        "champion_value": 0.85,
        "margin": 0.05,
        "interval": interval,
    }
    arguments.update(overrides)
    return triggers.performance(metric, value, 500, **arguments)


# ------------------------------------------------------------------ performance with a CI


def test_a_drop_whose_whole_interval_is_past_the_margin_fires() -> None:
    # champion test 0.85, margin 0.05: the limit is 0.80, and the interval ends at 0.79
    result = _performance(0.75, Interval(0.71, 0.79, 0.95, 400))
    assert result.fired
    stats = result.statistics
    assert (stats["value"], stats["low"], stats["high"], stats["confidence"]) == (
        0.75,
        0.71,
        0.79,
        0.95,
    )
    assert stats["confidently_worse"] and stats["past_margin"]
    assert "[0.7100, 0.7900]" in result.reason and "95% CI" in result.reason
    assert "whole interval is past 0.8000" in result.reason


def test_a_drop_whose_interval_reaches_back_over_the_margin_does_not_fire() -> None:
    # Past the margin (0.78 < 0.80) and below the champion's 0.85 even at the interval's
    # top (0.81), but not confidently past the margin: a season or noise, not an aged model.
    result = _performance(0.78, Interval(0.75, 0.81, 0.95, 400))
    assert not result.fired
    assert result.statistics["past_margin"] and not result.statistics["confidently_worse"]
    assert "not confidently past 0.8000" in result.reason
    assert not _performance(0.78, Interval(0.70, 0.86, 0.95, 400)).fired


def test_an_interval_that_excludes_the_champion_within_the_margin_does_not_fire() -> None:
    # Confidently a little worse (high 0.84 < 0.85), but only 0.03 off: within the margin.
    result = _performance(0.82, Interval(0.80, 0.84, 0.95, 400))
    assert not result.fired and not result.statistics["past_margin"]


def test_without_an_interval_the_champion_rule_is_point_based() -> None:
    assert _performance(0.78, None).fired
    assert not _performance(0.82, None).fired
    assert _performance(0.78, None).statistics["low"] is None


def test_the_floor_stays_point_based() -> None:
    # The interval reaches above the floor; the point estimate alone is below it.
    result = _performance(
        0.68, Interval(0.60, 0.76, 0.95, 400), floor=0.7, champion_value=None, margin=None
    )
    assert result.fired and "absolute limit 0.7" in result.reason


def test_lower_is_better_metrics_need_the_low_end_past_the_limit() -> None:
    common = {"higher_is_better": False, "champion_value": 10.0, "margin": 1.0, "metric": "rmse"}
    assert _performance(12.0, Interval(11.2, 13.5, 0.95, 400), **common).fired
    assert not _performance(12.0, Interval(10.5, 13.5, 0.95, 400), **common).fired
    assert not _performance(12.0, Interval(9.8, 14.0, 0.95, 400), **common).fired
    assert not _performance(10.5, Interval(10.2, 10.8, 0.95, 400), **common).fired


def _binary(rows: int, seed: int = 0) -> tuple[evaluation.Target, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < 0.4).astype(int)
    score = np.clip(0.4 + 0.3 * (truth - 0.4) + rng.normal(0, 0.25, rows), 0.02, 0.98)
    target = evaluation.Target.of([str(t) for t in truth], "classification", ("0", "1"))
    return target, np.column_stack([1 - score, score])


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss"])
def test_the_interval_holds_the_point_estimate_and_narrows_with_more_rows(metric: str) -> None:
    small_target, small_scores = _binary(300)
    large_target, large_scores = _binary(3000)
    small = runner.metric_interval(metric, small_target, small_scores, confidence=0.95)
    large = runner.metric_interval(metric, large_target, large_scores, confidence=0.95)
    assert small is not None and large is not None
    value = evaluation.metric_value(metric, small_target, small_scores)
    assert small.low < value < small.high
    assert large.high - large.low < 0.6 * (small.high - small.low)
    assert small.resamples == runner.PERFORMANCE_RESAMPLES
    again = runner.metric_interval(metric, small_target, small_scores, confidence=0.95)
    assert again == small  # seeded
    wider = runner.metric_interval(metric, small_target, small_scores, confidence=0.99)
    assert wider is not None and wider.high - wider.low > small.high - small.low


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_the_interval_works_for_regression(metric: str) -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(10, 3, 500)
    target = evaluation.Target.of(truth, "regression")
    predicted = truth + rng.normal(0, 1, 500)
    interval = runner.metric_interval(metric, target, predicted, confidence=0.95)
    value = evaluation.metric_value(metric, target, predicted)
    assert interval is not None and interval.low < value < interval.high
    assert interval.high - interval.low < 0.4 * value


def test_a_large_window_is_bootstrapped_from_a_bounded_subsample() -> None:
    target, scores = _binary(40_000, seed=3)
    full = runner.metric_interval("roc_auc", target, scores, confidence=0.95, max_rows=40_000)
    bounded = runner.metric_interval("roc_auc", target, scores, confidence=0.95, max_rows=4000)
    assert full is not None and bounded is not None
    value = evaluation.metric_value("roc_auc", target, scores)
    assert bounded.low < value < bounded.high
    ratio = (bounded.high - bounded.low) / (full.high - full.low)
    assert 0.7 < ratio < 1.4, ratio  # sqrt(m/n) scaling recovers the full width


def _labelled(task: str, rows: int = 400) -> pa.Table:
    rng = np.random.default_rng(5)
    start = NOW - timedelta(days=2)
    stamps = [start + timedelta(minutes=5 * i) for i in range(rows)]
    if task == "regression":
        truth = rng.normal(10, 3, rows)
        return pa.table(
            {
                predlog.TIMESTAMP: pa.array(stamps, predlog.TIMESTAMP_TYPE),
                predlog.LABEL: [str(v) for v in truth],
                predlog.PREDICTION: [str(v + rng.normal(0, 1)) for v in truth],
                predlog.SCORE: pa.nulls(rows, pa.float64()),
            }
        )
    truth = (rng.random(rows) < 0.5).astype(int)
    score = np.clip(0.5 + 0.3 * (truth - 0.5) + rng.normal(0, 0.2, rows), 0, 1)
    return pa.table(
        {
            predlog.TIMESTAMP: pa.array(stamps, predlog.TIMESTAMP_TYPE),
            predlog.LABEL: [str(v) for v in truth],
            predlog.PREDICTION: [str(int(s > 0.5)) for s in score],
            predlog.SCORE: score,
        }
    )


@pytest.mark.parametrize(
    ("task", "metric"),
    [("classification", "roc_auc"), ("classification", "accuracy"), ("regression", "rmse")],
)
def test_recent_metric_carries_its_interval(tmp_path: Path, task: str, metric: str) -> None:
    thresholds = {"roc_auc": 0.6} if task == "classification" else {"rmse": 10.0}
    config = make_config(
        tmp_path / "state",
        task=task,
        gate={"thresholds": thresholds},
        search={"candidates": [{"family": "linear", "params": {}}]},
    )
    measured = runner._recent_metric(
        _labelled(task), metric, config, [0, 1], timedelta(days=1), confidence=0.9
    )
    assert measured.metric == metric and measured.value is not None
    assert measured.labelled == 289  # one day before the newest, every 5 minutes
    assert measured.interval is not None and measured.interval.confidence == 0.9
    assert measured.interval.low < measured.value < measured.interval.high
    plain = runner._recent_metric(_labelled(task), metric, config, [0, 1], timedelta(days=1))
    assert plain.interval is None and plain.value == measured.value


# ------------------------------------------------------------------ label timeliness


def _timely(newest: datetime | None, labelled: int = 500, horizon: str | None = "7d", **kw: Any):
    return triggers.label_timeliness(newest, NOW, labelled, min_labelled=200, horizon=horizon, **kw)


def test_labels_within_the_horizon_are_in_time() -> None:
    labels = _timely(NOW - timedelta(days=2))
    assert labels.in_time and labels.label_age_seconds == 2 * 86400
    assert labels.newest_label_at == (NOW - timedelta(days=2)).isoformat()
    assert "in time" in labels.reason and labels.label_horizon == "7d"


def test_labels_older_than_the_horizon_are_late() -> None:
    labels = _timely(NOW - timedelta(days=8))
    assert not labels.in_time and "labels are late" in labels.reason and "8.0 days" in labels.reason


def test_too_few_or_no_labels_are_not_in_time() -> None:
    assert not _timely(NOW - timedelta(hours=1), labelled=50).in_time
    assert "too few" in _timely(NOW - timedelta(hours=1), labelled=50).reason
    assert not _timely(None, labelled=0).in_time
    assert not _timely(NOW - timedelta(hours=1), measured=False).in_time  # AUC of one class


def test_a_null_horizon_never_counts_labels_in_time() -> None:
    labels = _timely(NOW - timedelta(minutes=1), horizon=None)
    assert not labels.in_time and "null" in labels.reason


# ------------------------------------------------------------------ the weighting


def _drift(share: float, threshold: float = 0.25) -> TriggerResult:
    columns = ["num_0", "num_1", "region"]
    return triggers.data_drift(share, share >= threshold, columns, 800, 200, threshold)


HOLDING = _performance(0.84, Interval(0.82, 0.86, 0.95, 400))
DROPPED = _performance(0.70, Interval(0.66, 0.74, 0.95, 400))
IN_TIME = _timely(NOW - timedelta(days=1))
LATE = _timely(NOW - timedelta(days=9))


def test_with_labels_in_time_moderate_drift_is_outranked_by_performance() -> None:
    assert HOLDING.fired is False
    data, weighting = triggers.weigh(_drift(0.4), HOLDING, IN_TIME, large_share=0.5)
    assert not data.fired and data.enabled
    assert data.statistics["outranked"] is True
    assert data.statistics["labels_in_time"] is True
    assert data.statistics["drift_share"] == 0.4
    assert data.reason == (
        "data drift 40% of columns, but labels are in time and performance holds "
        "(roc_auc 0.8400 [0.8200, 0.8600] vs champion test 0.8500): drift alone triggers at >= 50%"
    )
    assert weighting["outranked"] and weighting["outranked_by"] == "performance"
    assert weighting["labels_in_time"] and weighting["label_horizon"] == "7d"
    assert weighting["newest_label_at"] == IN_TIME.newest_label_at
    assert "performance outranks data drift" in weighting["explanation"]
    decision = decide.decide(
        [data, HOLDING],
        RetrainPolicy(min_new_rows=0),
        now=NOW,
        new_rows=10_000,
        last_run_at=None,
        active_run=None,
    )
    assert decision.action == decide.NONE


def test_with_labels_in_time_large_drift_still_triggers() -> None:
    data, weighting = triggers.weigh(_drift(0.6), HOLDING, IN_TIME, large_share=0.5)
    assert data.fired and data.statistics["outranked"] is False
    assert "large drift: 60% of columns >= 50%" in data.reason
    assert weighting["decided_by"] == "data_drift" and not weighting["outranked"]
    exactly, _ = triggers.weigh(_drift(0.5), HOLDING, IN_TIME, large_share=0.5)
    assert exactly.fired


def test_with_late_labels_drift_triggers_on_its_own() -> None:
    data, weighting = triggers.weigh(_drift(0.4), HOLDING, LATE, large_share=0.5)
    assert data.fired and data.statistics["labels_in_time"] is False
    assert "labels are late" in data.reason and "triggers on its own" in data.reason
    assert not weighting["labels_in_time"] and weighting["decided_by"] == "data_drift"
    few = _timely(NOW - timedelta(hours=1), labelled=20)
    assert triggers.weigh(_drift(0.4), HOLDING, few, large_share=0.5)[0].fired


def test_a_null_horizon_keeps_the_old_behaviour() -> None:
    never = _timely(NOW - timedelta(minutes=1), horizon=None)
    for share in (0.3, 0.4, 0.9):
        before = _drift(share)
        after, weighting = triggers.weigh(before, HOLDING, never, large_share=0.5)
        assert after.fired == before.fired is True
        assert not weighting["outranked"]
    quiet, _ = triggers.weigh(_drift(0.1), HOLDING, never, large_share=0.5)
    assert quiet == _drift(0.1)


def test_a_performance_drop_fires_and_drift_stands_beside_it() -> None:
    data, weighting = triggers.weigh(_drift(0.4), DROPPED, IN_TIME, large_share=0.5)
    assert DROPPED.fired and data.fired
    assert weighting["decided_by"] == "performance" and not weighting["outranked"]


def test_a_performance_trigger_without_a_rule_outranks_nothing() -> None:
    data, weighting = triggers.weigh(
        _drift(0.4), HOLDING, IN_TIME, large_share=0.5, performance_judged=False
    )
    assert data.fired and "no floor and no margin" in data.reason
    assert not weighting["outranked"]


def test_quiet_or_switched_off_drift_is_left_alone() -> None:
    quiet = _drift(0.1)
    assert triggers.weigh(quiet, HOLDING, IN_TIME, large_share=0.5)[0] == quiet
    off = triggers.off(triggers.DATA_DRIFT)
    result, weighting = triggers.weigh(off, HOLDING, IN_TIME, large_share=0.5)
    assert result == off and "switched off" in weighting["explanation"]
    small = triggers.data_drift(None, False, [], 50, 200, 0.25)
    assert triggers.weigh(small, HOLDING, IN_TIME, large_share=0.5)[0] == small


# ------------------------------------------------------------------ the monitor's record


FEATURES = ("x0", "x1", "x2", "segment")


def _rows(seed: int, rows: int, start: datetime, shift: bool = False) -> pa.Table:
    """Rows of the stationary stream over one day from `start`. `shift`: keep rows with a
    probability that rises with x2, a covariate shift by selection on the features alone,
    so P(label | features) and with it a good model's quality stay as they were."""
    table = scenarios.stationary(4 * rows if shift else rows, seed)
    if shift:
        x2 = np.asarray(table.column("x2").to_numpy())
        keep = np.random.default_rng(seed).random(len(x2)) < 1 / (1 + np.exp(-3 * x2))
        table = table.filter(pa.array(keep)).slice(0, rows)
        assert table.num_rows == rows
    stamps = [start + timedelta(seconds=86400 * i / rows) for i in range(rows)]
    table = table.set_column(
        table.column_names.index(scenarios.TIME),
        scenarios.TIME,
        pa.array(stamps, pa.timestamp("us", tz="UTC")),
    )
    return table.set_column(0, "request_id", pa.array([f"{seed}-{i}" for i in range(rows)]))


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A logistic regression on the stationary stream, registered and promoted in a local
    (sqlite) MLflow registry with its reference profile and test metrics, as `register`
    would."""
    from ctpipe.data import schema as schema_module
    from ctpipe.drift import profile as reference
    from ctpipe.features import build_model
    from ctpipe.training.families import build_estimator

    root = tmp_path_factory.mktemp("weighting")
    config = make_config(
        root / "state",
        sensitive_columns=[],
        monitor={
            "window": "1d",
            "min_rows": 200,
            "report_rows": 0,
            "drift": {"share": 0.2},
            "triggers": {
                "max_model_age": None,
                "concept_drift": False,
                "min_labelled": 200,
                "label_horizon": "3d",
                "large_drift_share": 0.6,
            },
            "policy": {"cooldown": "1h", "min_new_rows": 100},
        },
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    train, test = _rows(0, 3000, start), _rows(1, 1500, start + timedelta(days=1))
    schema = schema_module.infer(train, config)
    assert tuple(schema.feature_names) == FEATURES
    model = build_model(schema, build_estimator("linear", "classification", {}, seed=0))
    model.fit(train.to_pandas()[list(FEATURES)], train.to_pandas()["label"])
    proba = model.predict_proba(test.to_pandas()[list(FEATURES)])
    target = evaluation.Target.of(test.column("label").to_pylist(), "classification", (0, 1))
    metrics = evaluation.all_metrics(target, proba)
    with pytest.MonkeyPatch.context() as env:
        env.delenv(registry.TRACKING_ENV, raising=False)
        staging = Path(tempfile.mkdtemp(dir=root))
        profile, sample = staging / "profile.npz", staging / "sample.parquet"
        reference.write(train, schema, str(profile), str(sample))
        saved = registry.save_model_dir(
            model, train.to_pandas()[list(FEATURES)].head(3), staging / "model"
        )
        _, version = registry.log_and_register(
            config,
            saved,
            run_name="weighting-champion",
            params={"family": "linear"},
            metrics={f"test_{k}": v for k, v in metrics.items()},
            tags={
                registry.TAG_TEST_METRICS: json.dumps(metrics),
                registry.TAG_CLASSES: json.dumps([0, 1]),
                registry.TAG_DATA_TIME_MAX: (start + timedelta(days=2)).isoformat(),
            },
            texts={},
            files={
                f"{reference.ARTIFACT_DIR}/{reference.PROFILE_FILE}": str(profile),
                f"{reference.ARTIFACT_DIR}/{reference.SAMPLE_FILE}": str(sample),
            },
        )
        registry.promote(config, version, expected_champion=None)
    return config


def _own(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The module's champion (its MLflow store), this test's log, labels and state."""
    monkeypatch.setenv(registry.TRACKING_ENV, registry.tracking_uri(config.state_dir))
    monitor = dataclasses.replace(
        config.monitor, predictions=str(tmp_path / "predictions"), labels=str(tmp_path / "labels")
    )
    return config.replace(state_dir=str(tmp_path / "state"), monitor=monitor)


def _serve(config: Config, table: pa.Table, labels: bool) -> None:
    champion = registry.champion(config)
    assert champion is not None
    model = registry.load_model(champion)
    frame = table.to_pandas()
    proba = model.predict_proba(frame[list(FEATURES)])[:, 1]
    with predlog.PredictionLogWriter(runner.predictions_root(config), config.model_name) as log:
        log.append(
            predlog.Prediction(
                row["request_id"],
                row[scenarios.TIME],
                champion.version,
                int(p > 0.5),
                float(p),
                {k: row[k] for k in FEATURES},
            )
            for row, p in zip(table.to_pylist(), proba, strict=True)
        )
    if labels:
        predlog.write_labels(
            runner.labels_root(config),
            config.model_name,
            [predlog.Label(r["request_id"], r["label"]) for r in table.to_pylist()],
        )


def _trigger(outcome: runner.MonitorOutcome, name: str) -> TriggerResult:
    return next(t for t in outcome.triggers if t.name == name)


def test_the_record_explains_drift_outranked_while_labels_are_in_time(
    champion: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _own(champion, tmp_path, monkeypatch)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    shifted = _rows(7, 1500, day, shift=True)
    _serve(config, shifted, labels=True)
    now = day + timedelta(days=1)
    outcome = runner.run_monitor(config, runner_submitter(), now=now, report=False, dry_run=True)

    assert outcome.drift is not None and outcome.drift.drifted, outcome.summary()
    assert outcome.drift.drift_share < 0.6
    drift = _trigger(outcome, "data_drift")
    performance = _trigger(outcome, "performance")
    assert not performance.fired, performance.reason
    assert not drift.fired and drift.statistics["outranked"] is True, drift.reason
    assert "labels are in time and performance holds" in drift.reason
    assert outcome.decision.action == decide.NONE
    assert any("performance outranks data drift" in r for r in outcome.decision.reasons)

    record = json.loads(Path(outcome.record_uri).read_text())
    weighting = record["weighting"]
    assert weighting["labels_in_time"] is True and weighting["outranked"] is True
    assert weighting["outranked_by"] == "performance" and weighting["label_horizon"] == "3d"
    assert weighting["newest_label_at"] == shifted.column(scenarios.TIME)[-1].as_py().isoformat()
    assert weighting["drift_share"] == outcome.drift.drift_share
    assert weighting["large_drift_share"] == 0.6
    measured = record["statistics"]["performance"]
    assert measured["metric"] == "roc_auc" and measured["confidence"] == 0.95
    assert measured["low"] < measured["value"] < measured["high"]
    stats = next(t for t in record["triggers"] if t["name"] == "performance")["statistics"]
    assert stats["low"] == measured["low"] and stats["champion_test_value"] > 0.7


def test_the_record_says_drift_decides_when_labels_are_late(
    champion: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _own(champion, tmp_path, monkeypatch)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    _serve(config, _rows(8, 1500, day), labels=True)  # labelled, then labels stop coming
    later = day + timedelta(days=5)
    _serve(config, _rows(9, 1500, later, shift=True), labels=False)
    now = later + timedelta(days=1)
    outcome = runner.run_monitor(config, runner_submitter(), now=now, report=False, dry_run=True)

    drift = _trigger(outcome, "data_drift")
    assert drift.fired and drift.statistics["outranked"] is False, drift.reason
    assert "labels are late" in drift.reason
    assert outcome.decision.fired == ("data_drift",)
    weighting = json.loads(Path(outcome.record_uri).read_text())["weighting"]
    assert weighting["labels_in_time"] is False and weighting["decided_by"] == "data_drift"
    assert weighting["label_age_seconds"] > 3 * 86400
    assert "labels are late" in weighting["explanation"]


def test_a_confident_drop_with_labels_in_time_fires_performance(
    champion: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _own(champion, tmp_path, monkeypatch)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    batch = _rows(10, 1500, day)
    flipped = batch.set_column(
        batch.column_names.index("label"),
        "label",
        pa.array(1 - np.asarray(batch.column("label").to_numpy())),
    )  # the labelling rule turned over: concept drift, the features unchanged
    _serve(config, flipped, labels=True)
    outcome = runner.run_monitor(
        config, runner_submitter(), now=day + timedelta(days=1), report=False, dry_run=True
    )
    performance = _trigger(outcome, "performance")
    assert performance.fired and performance.statistics["confidently_worse"], performance.reason
    assert performance.statistics["high"] < performance.statistics["champion_test_value"]
    assert outcome.decision.fired == ("performance",)
    weighting = outcome.record["weighting"]
    assert weighting["labels_in_time"] and weighting["decided_by"] == "performance"


def runner_submitter() -> Any:
    from ctpipe.pipelines.submit import LocalSubmitter

    return LocalSubmitter()
