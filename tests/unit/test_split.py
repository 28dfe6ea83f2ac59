"""ctpipe.data.split: train on the past, validate on the recent past, test on the newest rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.data.split import SLICES, split
from ctpipe.errors import DataError
from tests.conftest import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def table_of(hours: list[int], labels: list[Any] | None = None, label_type: Any = None) -> pa.Table:
    """One row per entry: event_time = T0 + hours, row = its position in the input."""
    n = len(hours)
    labels = labels if labels is not None else [i % 2 for i in range(n)]
    return pa.table(
        {
            "row": pa.array(range(n)),
            "event_time": pa.array([T0 + timedelta(hours=h) for h in hours], TS),
            "x": pa.array([float(i) for i in range(n)]),
            "label": pa.array(labels, label_type),
        }
    )


def cfg(tmp_path: Path, **split_options: Any) -> Config:
    return make_config(tmp_path / "state", split=split_options)


def times(part: pa.Table) -> list[int]:
    return part.column("event_time").cast(pa.int64()).to_pylist()


def assert_no_leakage(slices: dict[str, pa.Table]) -> None:
    train, validation, test = (times(slices[name]) for name in SLICES)
    assert max(train) < min(validation) <= max(validation) < min(test)


def test_slices_in_time_order_with_the_configured_fractions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hours = [int(h) for h in rng.permutation(1000)]  # distinct, shuffled
    slices, result = split(table_of(hours), cfg(tmp_path))
    assert list(slices)[: len(SLICES)] == list(SLICES)
    assert [s.name for s in result.slices] == list(SLICES)
    assert {name: slices[name].num_rows for name in SLICES} == {
        "train": 650,
        "validation": 150,
        "test": 200,
    }
    for part in slices.values():
        assert times(part) == sorted(times(part))
    assert_no_leakage(slices)
    # Nothing lost, nothing repeated, and the test slice is the newest 200 hours.
    rows = [r for name in SLICES for r in slices[name].column("row").to_pylist()]
    assert sorted(rows) == list(range(1000))
    test_hours = [(t - times(slices["train"])[0]) // 3_600_000_000 for t in times(slices["test"])]
    assert test_hours == list(range(800, 1000))
    assert result.dropped_unlabelled == 0


def test_other_fractions(tmp_path: Path) -> None:
    slices, _ = split(
        table_of(list(range(400))), cfg(tmp_path, validation_fraction=0.25, test_fraction=0.1)
    )
    assert [slices[name].num_rows for name in SLICES] == [260, 100, 40]
    assert_no_leakage(slices)


def test_slice_infos_and_metadata(tmp_path: Path) -> None:
    slices, result = split(table_of(list(range(100))), cfg(tmp_path, min_rows=10))
    test = result.slice("test")
    assert (test.rows, test.start, test.end) == (
        20,
        (T0 + timedelta(hours=80)).isoformat(),
        (T0 + timedelta(hours=99)).isoformat(),
    )
    train = result.slice("train")
    assert (train.rows, train.start) == (65, T0.isoformat())
    assert train.end == (T0 + timedelta(hours=64)).isoformat()
    assert result.slice("validation").start == (T0 + timedelta(hours=65)).isoformat()
    assert result.metadata("validation") == {
        "slice": "validation",
        "rows": 15,
        "start": (T0 + timedelta(hours=65)).isoformat(),
        "end": (T0 + timedelta(hours=79)).isoformat(),
    }
    assert result.describe() == (
        f"split train 65, validation 15, test 20 (test from {test.start}); window expanding"
    )
    assert slices["train"].column_names == ["row", "event_time", "x", "label"]


def test_synthetic_data_has_no_leakage(tmp_path: Path) -> None:
    data = synthetic.generate(2000, 9)
    slices, result = split(data, cfg(tmp_path))
    assert_no_leakage(slices)
    assert sum(s.rows for s in result.slices) == 2000
    assert result.slice("test").rows == 400


def test_equal_timestamps_never_straddle_a_cut(tmp_path: Path) -> None:
    # 100 rows, ten to an hour. The nominal test cut (row 75) falls inside hour 7 and the
    # nominal validation cut (70 - 15 = 55) inside hour 5: both move back to the hour's start.
    hours = [i // 10 for i in range(100)]
    rng = np.random.default_rng(1)
    order = rng.permutation(100)
    shuffled = [hours[i] for i in order]
    slices, _ = split(
        table_of(shuffled), cfg(tmp_path, validation_fraction=0.15, test_fraction=0.25)
    )
    assert [slices[name].num_rows for name in SLICES] == [50, 20, 30]
    sets = [set(times(slices[name])) for name in SLICES]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])
    assert_no_leakage(slices)


def test_many_ties_at_the_end(tmp_path: Path) -> None:
    # The newest 40 rows share one timestamp: the test slice takes all of them.
    hours = list(range(60)) + [100] * 40
    slices, _ = split(table_of(hours), cfg(tmp_path, min_rows=5))
    assert slices["test"].num_rows == 40
    assert set(times(slices["test"])) == {times(slices["test"])[0]}
    assert slices["validation"].num_rows == 15
    assert_no_leakage(slices)


def test_unlabelled_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    labels = [None if i % 10 == 3 else i % 2 for i in range(300)]
    slices, result = split(table_of(list(range(300)), labels, pa.int64()), cfg(tmp_path))
    assert result.dropped_unlabelled == 30
    assert sum(slices[name].num_rows for name in SLICES) == 270
    for part in slices.values():
        assert part.column("label").null_count == 0
    kept = {r for part in slices.values() for r in part.column("row").to_pylist()}
    assert kept == {i for i in range(300) if i % 10 != 3}
    assert "30 unlabelled rows left out" in result.describe()
    # The fractions apply to the labelled rows.
    assert [slices[name].num_rows for name in SLICES] == [176, 40, 54]  # 270 * 0.15 = 40.5


def test_nan_labels_count_as_unlabelled(tmp_path: Path) -> None:
    labels = [float("nan") if i < 5 else None if i < 8 else float(i % 2) for i in range(200)]
    slices, result = split(table_of(list(range(200)), labels, pa.float64()), cfg(tmp_path))
    assert result.dropped_unlabelled == 8
    for part in slices.values():
        assert not pc.any(pc.is_nan(part.column("label"))).as_py()


def test_too_few_rows_names_min_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        split(table_of(list(range(60))), cfg(tmp_path, min_rows=20))
    message = str(info.value)
    assert "split.min_rows=20" in message
    assert "validation has 9" in message and "test has 12" in message
    assert "train has" not in message  # train (39 rows) is long enough
    assert "60 rows" in message


def test_unlabelled_rows_do_not_count_towards_min_rows(tmp_path: Path) -> None:
    labels = [None] * 150 + [i % 2 for i in range(150)]
    config = cfg(tmp_path, min_rows=40)
    with pytest.raises(DataError, match=re.escape("split.min_rows=40")):
        split(table_of(list(range(300)), labels, pa.int64()), config)
    split(table_of(list(range(300))), config)  # the same rows, all labelled, are enough


def test_ties_can_starve_a_slice(tmp_path: Path) -> None:
    # Every row at one instant: no cut can fall between rows.
    with pytest.raises(DataError) as info:
        split(table_of([5] * 200), cfg(tmp_path))
    assert "train has 0" in str(info.value) and "validation has 0" in str(info.value)


def test_single_class_training_slice(tmp_path: Path) -> None:
    # The older rows all say 0; the newer ones mix.
    labels = [0] * 130 + [i % 2 for i in range(70)]
    with pytest.raises(DataError) as info:
        split(table_of(list(range(200)), labels), cfg(tmp_path))
    message = str(info.value)
    assert "column 'label'" in message
    assert "only one class ([0])" in message
    assert "at least two" in message


def test_two_classes_in_training_are_enough(tmp_path: Path) -> None:
    labels = [0] * 129 + [1] + [0] * 70
    slices, _ = split(table_of(list(range(200)), labels), cfg(tmp_path))
    assert sorted(pc.unique(slices["train"].column("label")).to_pylist()) == [0, 1]


def test_single_value_is_fine_for_regression(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        task="regression",
        search={"candidates": [{"family": "linear"}]},
        gate={"thresholds": {}},
    )
    labels = [1.5] * 130 + [float(i) for i in range(70)]
    slices, _ = split(table_of(list(range(200)), labels), config)
    assert slices["train"].num_rows == 130
