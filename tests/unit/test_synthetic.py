"""The deterministic synthetic stream: reproducibility, shape, drift, noise and files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ctpipe import features
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data.synthetic import DEFAULT_START, Drift, categorical_names, generate, write


def test_same_seed_same_table_and_different_seed_different_table() -> None:
    first = generate(300, seed=5)
    assert first.equals(generate(300, seed=5))
    other = generate(300, seed=6)
    assert not first.equals(other)
    assert first.column("num_0").to_pylist() != other.column("num_0").to_pylist()
    assert first.column("request_id")[0].as_py() == "r005-0000000"


def test_rows_and_columns() -> None:
    table = generate(250, seed=1, numeric=5, categorical=4)
    assert table.num_rows == 250
    assert table.column_names == [
        "request_id",
        "event_time",
        "num_0",
        "num_1",
        "num_2",
        "num_3",
        "num_4",
        "region",
        "channel",
        "device",
        "cat_3",
        "label",
    ]
    assert categorical_names(4) == ["region", "channel", "device", "cat_3"]
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("label").type == pa.int64()
    assert set(table.column("region").to_pylist()) <= {"north", "south", "east", "west"}
    assert set(table.column("cat_3").to_pylist()) <= {f"cat_3_v{i}" for i in range(6)}
    assert len(set(table.column("request_id").to_pylist())) == 250


def test_default_shape() -> None:
    table = generate(120)
    assert [c for c in table.column_names if c.startswith("num_")] == [f"num_{i}" for i in range(8)]
    assert {"region", "channel", "device"} <= set(table.column_names)


def test_missing_values_only_in_num_1_and_num_2() -> None:
    table = generate(2000, seed=3, missing_rate=0.1)
    nulls = {name: table.column(name).null_count for name in table.column_names}
    assert 100 < nulls["num_1"] < 300 and 100 < nulls["num_2"] < 300
    assert all(count == 0 for name, count in nulls.items() if name not in ("num_1", "num_2"))
    assert generate(500, seed=3, missing_rate=0.0).column("num_1").null_count == 0


def test_timestamps_are_sorted_and_span_the_requested_days() -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    table = generate(500, seed=2, start=start, days=30)
    stamps = table.column("event_time")
    assert pc.all(pc.greater_equal(stamps[1:], stamps[:-1])).as_py()
    first, last = stamps[0].as_py(), stamps[-1].as_py()
    assert start <= first < start.replace(day=2)
    assert (last - start).days in (29, 30)
    assert generate(10).column("event_time")[0].as_py() >= DEFAULT_START


def test_classification_labels_are_balanced_enough() -> None:
    for seed in (0, 1, 7):
        labels = generate(2000, seed=seed).column("label").to_numpy()
        assert set(np.unique(labels)) == {0, 1}
        assert 0.15 < labels.mean() < 0.85


def test_regression_labels() -> None:
    table = generate(1000, seed=4, task="regression")
    label = table.column("label")
    assert label.type == pa.float64()
    values = label.to_numpy()
    assert np.isfinite(values).all()
    assert len(np.unique(values)) > 900  # continuous, not classes
    assert 30 < values.mean() < 70 and values.std() > 3
    # The label depends on the features: a linear fit explains much of it.
    x = np.column_stack([table.column(f"num_{j}").fill_null(0.0).to_numpy() for j in range(8)])
    coef, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), values, rcond=None)
    residual = values - np.column_stack([x, np.ones(len(x))]) @ coef
    assert residual.var() < 0.8 * values.var()


def _position(rows: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, rows)


def test_abrupt_covariate_drift_shifts_num_0_after_at_only() -> None:
    rows = 2000
    plain = generate(rows, seed=9)
    drifted = generate(rows, seed=9, drifts=(Drift(at=0.6, covariate=2.0),))
    after = _position(rows) >= 0.6
    base, moved = plain.column("num_0").to_numpy(), drifted.column("num_0").to_numpy()
    np.testing.assert_array_equal(moved[~after], base[~after])
    np.testing.assert_allclose(moved[after] - base[after], 2.0, atol=1e-5)
    assert moved[~after].mean() == pytest.approx(0.0, abs=0.15)
    assert moved[after].mean() == pytest.approx(2.0, abs=0.15)
    # Only the first half of the numeric features moves.
    np.testing.assert_array_equal(
        drifted.column("num_7").to_numpy(), plain.column("num_7").to_numpy()
    )
    # And the category mix tilts after the drift, not before.
    before_mix = drifted.column("region").to_numpy(zero_copy_only=False)[~after]
    plain_mix = plain.column("region").to_numpy(zero_copy_only=False)[~after]
    np.testing.assert_array_equal(before_mix, plain_mix)


def test_gradual_drift_ramps_in() -> None:
    rows = 3000
    plain = generate(rows, seed=9).column("num_0").to_numpy()
    drifted = (
        generate(rows, seed=9, drifts=(Drift(at=0.2, width=0.5, covariate=1.0),))
        .column("num_0")
        .to_numpy()
    )
    shift = drifted - plain
    position = _position(rows)
    np.testing.assert_allclose(shift, np.clip((position - 0.2) / 0.5, 0, 1), atol=1e-5)


def _model_auc_before_and_after_concept_drift(
    config: Config, concept: float
) -> tuple[float, float]:
    rows = 3000
    table = generate(rows, seed=11, drifts=(Drift(at=0.5, concept=concept),))
    schema = schema_module.infer(table, config)
    x = table.select(schema.feature_names).to_pandas()
    y = table.column("label").to_numpy()
    position = _position(rows)
    train, before, after = position < 0.35, (position >= 0.35) & (position < 0.5), position >= 0.6
    model = features.build_model(schema, LogisticRegression(max_iter=500)).fit(x[train], y[train])
    score = model.predict_proba(x)[:, 1]
    return roc_auc_score(y[before], score[before]), roc_auc_score(y[after], score[after])


def test_concept_drift_makes_an_old_model_worse(small_config: Config) -> None:
    before, after = _model_auc_before_and_after_concept_drift(small_config, concept=1.0)
    assert before > 0.75
    assert after < before - 0.15
    # Without the drift the same model holds up.
    steady_before, steady_after = _model_auc_before_and_after_concept_drift(
        small_config, concept=0.0
    )
    assert steady_after > steady_before - 0.05


def test_label_noise_only_before_label_noise_until() -> None:
    rows = 4000
    clean = generate(rows, seed=8).column("label").to_numpy()
    noisy = (
        generate(rows, seed=8, label_noise=0.3, label_noise_until=0.7).column("label").to_numpy()
    )
    early = _position(rows) < 0.7
    flipped = clean != noisy
    assert not flipped[~early].any()
    assert flipped[early].mean() == pytest.approx(0.3, abs=0.04)
    # Only the labels change.
    other = generate(rows, seed=8, label_noise=0.3, label_noise_until=0.7)
    assert other.drop_columns(["label"]).equals(generate(rows, seed=8).drop_columns(["label"]))


def test_regression_label_noise_scrambles_only_the_early_rows() -> None:
    rows = 1000
    clean = generate(rows, seed=8, task="regression").column("label").to_numpy()
    noisy = (
        generate(rows, seed=8, task="regression", label_noise=0.5, label_noise_until=0.5)
        .column("label")
        .to_numpy()
    )
    early = _position(rows) < 0.5
    np.testing.assert_array_equal(clean[~early], noisy[~early])
    assert 0.35 < (clean[early] != noisy[early]).mean() < 0.65


def _read(path: Path) -> pa.Table:
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.json as pjson

    return pjson.read_json(path)


@pytest.mark.parametrize("name", ["rows.csv", "rows.parquet", "rows.jsonl"])
def test_write_round_trips_through_pyarrow_readers(tmp_path: Path, name: str) -> None:
    table = generate(200, seed=4, missing_rate=0.1)
    path = tmp_path / "nested" / name
    write(table, str(path))
    back = _read(path)
    assert back.num_rows == table.num_rows
    assert back.column_names == table.column_names
    for column in table.column_names:
        if column == "event_time":
            stamps = back.column(column)
            if not pa.types.is_timestamp(stamps.type):  # JSON carries ISO 8601 text
                stamps = pa.array([datetime.fromisoformat(s) for s in stamps.to_pylist()])
            assert (
                stamps.cast(pa.timestamp("us", tz="UTC")).to_pylist()
                == table.column(column).to_pylist()
            )
        else:
            assert back.column(column).to_pylist() == table.column(column).to_pylist(), column
    assert back.column("num_1").null_count == table.column("num_1").null_count > 0
    if name.endswith(".parquet"):
        assert back.equals(table)


def test_write_refuses_an_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown extension"):
        write(generate(10), str(tmp_path / "rows.xlsx"))
