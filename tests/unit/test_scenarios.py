"""The scenario streams: deterministic, in time order, learnable, and each with its change."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctpipe.data import scenarios

ROWS = 4000
NAMES = sorted(scenarios.SCENARIOS)


def halves(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    middle = int(table.num_rows * scenarios.HALF)
    return table.slice(0, middle), table.slice(middle)


def auc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def test_the_four_scenarios_are_registered() -> None:
    assert NAMES == [
        "constant_comes_alive",
        "label_prior_shift",
        "new_category",
        "seasonal_month",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_stream_and_another_seed_another(name: str) -> None:
    make: Callable[[int, int], pa.Table] = scenarios.SCENARIOS[name]
    first = make(ROWS, 3)
    assert first.equals(make(ROWS, 3))
    assert not first.equals(make(ROWS, 4))


@pytest.mark.parametrize("name", NAMES)
def test_shape_time_order_and_binary_label(name: str) -> None:
    table = scenarios.SCENARIOS[name](ROWS, 1)
    assert table.num_rows == ROWS
    assert table.column_names[:2] == ["request_id", scenarios.TIME]
    assert table.column_names[-1] == scenarios.TARGET
    assert table.schema.field(scenarios.TIME).type == pa.timestamp("us", tz="UTC")
    times = table.column(scenarios.TIME).cast(pa.int64()).to_numpy()
    assert np.all(np.diff(times) >= 0)
    assert table.column(scenarios.TIME)[0].as_py() >= scenarios.START
    assert set(pc.unique(table.column(scenarios.TARGET)).to_pylist()) == {0, 1}
    assert len(set(table.column("request_id").to_pylist())) == ROWS
    kinds = [table.schema.field(c).type for c in table.column_names[2:-1]]
    assert sum(pa.types.is_floating(k) for k in kinds) >= 3
    assert 1 <= sum(pa.types.is_string(k) for k in kinds) <= 2
    assert table.column(scenarios.TARGET).null_count == 0


@pytest.mark.parametrize("name", NAMES)
def test_a_model_can_learn_the_label(name: str) -> None:
    from sklearn.linear_model import LogisticRegression

    table = scenarios.SCENARIOS[name](ROWS, 2)
    frame = table.drop_columns(["request_id", scenarios.TIME]).to_pandas()
    truth = frame.pop(scenarios.TARGET).to_numpy()
    import pandas as pd

    features = pd.get_dummies(frame, dtype=float).to_numpy()
    train, test = slice(0, ROWS, 2), slice(1, ROWS, 2)
    model = LogisticRegression(max_iter=2000).fit(features[train], truth[train])
    assert auc(truth[test], model.predict_proba(features[test])[:, 1]) > 0.7


def test_constant_comes_alive_is_constant_then_varies_with_signal() -> None:
    before, after = halves(scenarios.constant_comes_alive(ROWS, 5))
    assert pc.unique(before.column("rate")).to_pylist() == [scenarios.CONSTANT_RATE]
    rate = after.column("rate").to_numpy()
    assert len(np.unique(rate)) > after.num_rows * 0.9
    assert abs(np.median(rate) - scenarios.CONSTANT_RATE) < 0.001
    # Alive, it ranks the labels on its own.
    assert auc(after.column("label").to_numpy(), rate) > 0.7


def test_new_category_is_absent_before_and_takes_a_big_share_after() -> None:
    table = scenarios.new_category(ROWS, 5)
    before, after = halves(table)
    assert scenarios.NEW_CHANNEL not in set(before.column("channel").to_pylist())
    assert set(before.column("channel").to_pylist()) == set(scenarios.CHANNELS)
    channel = np.array(after.column("channel").to_pylist())
    share = np.mean(channel == scenarios.NEW_CHANNEL)
    assert 0.3 < share < 0.5
    label = after.column("label").to_numpy()
    # The new level carries signal of its own: its rows are far more often positive.
    assert label[channel == scenarios.NEW_CHANNEL].mean() > label[channel != "chat"].mean() + 0.15


def test_seasonal_month_covers_two_years_and_the_label_follows_the_season() -> None:
    table = scenarios.seasonal_month(12_000, 5)
    times = table.column(scenarios.TIME).to_pylist()
    month = table.column("month").to_pylist()
    assert month == [scenarios.MONTHS[t.month - 1] for t in times]
    assert set(month) == set(scenarios.MONTHS)
    assert {(t.year, t.month) for t in times} == {
        (year, m) for year in (2026, 2027) for m in range(1, 13)
    }
    assert times[-1] < datetime(2028, 1, 1, tzinfo=UTC)
    label = table.column("label").to_numpy()
    months = np.array(month)
    winter = label[np.isin(months, ["Dec", "Jan", "Feb"])].mean()
    summer = label[np.isin(months, ["Jun", "Jul", "Aug"])].mean()
    assert winter - summer > 0.3
    # The same month has the same positive rate in both years: a season, not a trend.
    years = np.array([t.year for t in times])
    january = [label[(months == "Jan") & (years == y)].mean() for y in (2026, 2027)]
    assert abs(january[0] - january[1]) < 0.1


def test_label_prior_shift_moves_the_positive_rate_from_20_to_60_percent() -> None:
    table = scenarios.label_prior_shift(20_000, 5)
    first, last = scenarios.PRIOR_RAMP
    rows = table.num_rows
    label = table.column("label").to_numpy()
    early, late = label[: int(rows * first)], label[int(rows * last) :]
    assert abs(early.mean() - 0.2) < 0.03
    assert abs(late.mean() - 0.6) < 0.03
    # Pure prior shift: within a class the features keep their distribution.
    x0 = table.column("x0").to_numpy()
    for value in (0, 1):
        before = x0[: int(rows * first)][early == value]
        after = x0[int(rows * last) :][late == value]
        assert abs(before.mean() - after.mean()) < 0.1


def test_rows_must_make_a_stream() -> None:
    with pytest.raises(ValueError, match="rows"):
        scenarios.new_category(1, 0)


def test_seattle_weather_is_a_daily_binary_stream_without_the_answer() -> None:
    pytest.importorskip("vega_datasets")
    table = scenarios.seattle_weather()
    assert table.num_rows == 1461
    assert table.column_names == [
        "request_id",
        scenarios.TIME,
        *scenarios.SEATTLE_FEATURES[:-1],
        "month",
        scenarios.SEATTLE_TARGET,
    ]
    times = table.column(scenarios.TIME).to_pylist()
    assert times[0] == datetime(2012, 1, 1, tzinfo=UTC)
    assert times[-1] == datetime(2015, 12, 31, tzinfo=UTC)
    assert all((b - a).days == 1 for a, b in itertools.pairwise(times))
    wet = table.column(scenarios.SEATTLE_TARGET).to_numpy()
    assert 0.35 < wet.mean() < 0.5
    # Yesterday's rain is a feature; today's must not be (it is the label).
    yesterday = table.column("precipitation_yesterday").to_numpy()
    assert np.array_equal(yesterday[1:] > 0, wet[:-1] == 1)
    assert "precipitation" not in table.column_names and "weather" not in table.column_names


def test_write_seattle_weather_writes_a_csv_simulate_can_read(tmp_path) -> None:
    pytest.importorskip("vega_datasets")
    from ctpipe.simulate import load_stream

    path = scenarios.write_seattle_weather(tmp_path / "seattle.csv")
    stream = load_stream(str(path), scenarios.TIME)
    assert stream.num_rows == 1461
    assert stream.column(scenarios.SEATTLE_TARGET).to_pylist()[:3] == [0, 1, 1]
