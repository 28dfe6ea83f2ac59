"""The streams the trigger weighting is judged on: a seasonal stream whose labelling rule
never changes, an abrupt change of rule and features, and a stationary stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctpipe.data import scenarios

ROWS = 8000
NAMES = sorted(scenarios.TRIGGER_SCENARIOS)


def auc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def design(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    frame = table.drop_columns(["request_id", scenarios.TIME]).to_pandas()
    truth = frame.pop(scenarios.TARGET).to_numpy()
    return pd.get_dummies(frame, dtype=float).to_numpy(), truth


def fit(features: np.ndarray, truth: np.ndarray) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(features, truth)


def score(model: object, features: np.ndarray, truth: np.ndarray) -> float:
    return auc(truth, model.predict_proba(features)[:, 1])  # type: ignore[attr-defined]


def days(table: pa.Table) -> np.ndarray:
    stamps = table.column(scenarios.TIME).cast(pa.int64()).to_numpy()
    origin = int(scenarios.START.timestamp() * 1e6)
    return (stamps - origin) / 86400e6


def test_the_trigger_streams_are_registered_apart_from_the_change_streams() -> None:
    assert NAMES == ["abrupt_change", "seasonal_stable", "stationary"]
    assert not set(NAMES) & set(scenarios.SCENARIOS)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_stream_and_another_seed_another(name: str) -> None:
    make: Callable[[int, int], pa.Table] = scenarios.TRIGGER_SCENARIOS[name]
    first = make(ROWS, 3)
    assert first.equals(make(ROWS, 3))
    assert not first.equals(make(ROWS, 4))


@pytest.mark.parametrize("name", NAMES)
def test_shape_time_order_and_binary_label(name: str) -> None:
    table = scenarios.TRIGGER_SCENARIOS[name](ROWS, 1)
    assert table.num_rows == ROWS
    assert table.column_names[:2] == ["request_id", scenarios.TIME]
    assert table.column_names[-1] == scenarios.TARGET
    assert table.schema.field(scenarios.TIME).type == pa.timestamp("us", tz="UTC")
    assert np.all(np.diff(days(table)) >= 0)
    assert set(pc.unique(table.column(scenarios.TARGET)).to_pylist()) == {0, 1}
    assert len(set(table.column("request_id").to_pylist())) == ROWS
    kinds = [table.schema.field(c).type for c in table.column_names[2:-1]]
    assert sum(pa.types.is_floating(k) for k in kinds) >= 3
    assert 1 <= sum(pa.types.is_string(k) for k in kinds) <= 2
    span = days(table)[-1]
    assert 725 < span < 730 if name == "seasonal_stable" else 115 < span < 120


def test_seasonal_features_follow_the_year() -> None:
    table = scenarios.seasonal_stable(ROWS, 0)
    frame = table.to_pandas()
    month = frame[scenarios.TIME].dt.month
    winter, summer = month.isin([12, 1, 2]), month.isin([6, 7, 8])
    assert frame.temperature[summer].mean() - frame.temperature[winter].mean() > 15
    assert frame.demand[winter].mean() - frame.demand[summer].mean() > 30
    snow = frame.weather == "snow"
    assert snow[winter].mean() > 0.3 and snow[summer].mean() < 0.1
    assert (frame.weather[summer] == "sun").mean() > 0.5
    # The non-seasonal columns do not move with the season.
    assert abs(frame.x0[summer].mean() - frame.x0[winter].mean()) < 0.1
    for year in (0, 1):  # both years go through the whole cycle
        in_year = frame[scenarios.TIME].dt.year == 2026 + year
        assert set(month[in_year]) == set(range(1, 13))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_model_trained_on_year_one_stays_good_on_year_two(seed: int) -> None:
    """The season moves the features but never P(label | features): a model fitted on
    the first year scores on the second as well as one fitted on the second year."""
    table = scenarios.seasonal_stable(ROWS, seed)
    features, truth = design(table)
    half = ROWS // 2
    first = fit(features[:half], truth[:half])
    second = fit(features[half::2], truth[half::2])
    held_out = slice(half + 1, ROWS, 2)
    old, new = (
        score(first, features[held_out], truth[held_out]),
        score(second, features[held_out], truth[held_out]),
    )
    assert new > 0.75
    assert abs(new - old) < 0.01, (old, new)
    # ... in every season of the second year, not only on average.
    quarter = half // 4
    for q in range(4):
        rows = slice(half + q * quarter, half + (q + 1) * quarter)
        assert score(first, features[rows], truth[rows]) > 0.75


def test_the_season_adds_nothing_to_the_features_but_does_in_a_seasonal_rule() -> None:
    """With the day of the year as extra inputs, a model predicts the seasonal_stable
    label no better (the rule is a function of the features); on seasonal_month, whose
    label follows the season itself, it does: the check can tell the two apart."""

    def gain(table: pa.Table) -> float:
        features, truth = design(table)
        angle = 2 * np.pi * days(table) / 365.25
        season = np.column_stack([features, np.cos(angle), np.sin(angle)])
        train, test = slice(0, None, 2), slice(1, None, 2)
        plain = score(fit(features[train], truth[train]), features[test], truth[test])
        seasonal = score(fit(season[train], truth[train]), season[test], truth[test])
        return seasonal - plain

    assert gain(scenarios.seasonal_stable(ROWS, 0)) < 0.005
    month = scenarios.seasonal_month(ROWS, 0).drop_columns(["month", "temperature"])
    assert gain(month) > 0.05


def test_the_abrupt_change_turns_the_rule_over_and_moves_the_features() -> None:
    table = scenarios.abrupt_change(ROWS, 0)
    features, truth = design(table)
    half = int(ROWS * scenarios.HALF)
    before = fit(features[:half:2], truth[:half:2])
    after = fit(features[half::2], truth[half::2])
    test_before, test_after = slice(1, half, 2), slice(half + 1, ROWS, 2)
    assert score(before, features[test_before], truth[test_before]) > 0.75
    assert score(after, features[test_after], truth[test_after]) > 0.75
    assert score(before, features[test_after], truth[test_after]) < 0.3  # the old rule fails
    frame = table.to_pandas()
    assert frame.x2[half:].mean() - frame.x2[:half].mean() > 1.2
    retail = frame.segment == "retail"
    assert retail[:half].mean() - retail[half:].mean() > 0.2
    # The change is abrupt: the quarter before the middle is like the first.
    quarter = half // 2
    assert abs(frame.x2[quarter:half].mean() - frame.x2[:quarter].mean()) < 0.1


def test_the_stationary_stream_does_not_change() -> None:
    table = scenarios.stationary(ROWS, 0)
    features, truth = design(table)
    half = ROWS // 2
    first = fit(features[:half:2], truth[:half:2])
    second = fit(features[half::2], truth[half::2])
    held_out = slice(half + 1, ROWS, 2)
    old = score(first, features[held_out], truth[held_out])
    assert old > 0.75 and abs(old - score(second, features[held_out], truth[held_out])) < 0.01
    frame = table.to_pandas()
    for column in ("x0", "x1", "x2"):
        assert abs(frame[column][:half].mean() - frame[column][half:].mean()) < 0.1
    assert abs(truth[:half].mean() - truth[half:].mean()) < 0.04
