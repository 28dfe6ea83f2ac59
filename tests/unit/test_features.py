"""The feature transformer inside every model: what it accepts at predict time."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from ctpipe import features
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from tests.conftest import make_config


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic.generate(600, seed=3, missing_rate=0.05)


def frame_of(table: pa.Table, schema: schema_module.Schema) -> tuple[pd.DataFrame, np.ndarray]:
    return table.select(schema.feature_names).to_pandas(), table.column(schema.target).to_numpy()


def fitted(table: pa.Table, config: Config) -> tuple[object, schema_module.Schema, pd.DataFrame]:
    schema = schema_module.infer(table, config)
    x, y = frame_of(table, schema)
    model = features.build_model(schema, LogisticRegression(max_iter=500)).fit(x, y)
    return model, schema, x


def test_schema_from_synthetic_data_gives_numeric_and_categorical_features(
    small_config: Config, table: pa.Table
) -> None:
    schema = schema_module.infer(table, small_config)
    assert schema.numeric_features == [f"num_{i}" for i in range(8)]
    assert schema.categorical_features == ["region", "channel", "device"]
    assert "request_id" not in schema.feature_names and "label" not in schema.feature_names


def test_build_model_fits_and_predicts(small_config: Config, table: pa.Table) -> None:
    model, schema, x = fitted(table, small_config)
    _, y = frame_of(table, schema)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(x) == y).mean() > 0.6  # it learned something
    names = list(model.named_steps["features"].get_feature_names_out())
    assert names[:8] == schema.numeric_features
    assert "region_north" in names and "device_ios" in names


def test_regression_model(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        task="regression",
        gate={"thresholds": {}},
        search={"candidates": [{"family": "linear", "params": {"alpha": 1.0}}]},
    )
    data = synthetic.generate(400, seed=2, task="regression")
    schema = schema_module.infer(data, config)
    x, y = frame_of(data, schema)
    model = features.build_model(schema, Ridge()).fit(x, y)
    prediction = model.predict(x)
    assert prediction.shape == (400,)
    assert np.corrcoef(prediction, y)[0, 1] > 0.5


def _coded_table(rows: int = 300, seed: int = 0) -> pa.Table:
    """A categorical column written as integers: 'store 3' is a category, not a number."""
    rng = np.random.default_rng(seed)
    store = rng.integers(1, 5, rows)
    num = rng.normal(size=rows)
    label = (rng.random(rows) < 1 / (1 + np.exp(-(num + (store == 3) * 2.0 - 0.5)))).astype(
        np.int64
    )
    return pa.table({"store": store, "num_0": num, "label": label, "event_time": np.arange(rows)})


def _coded_config(tmp_path: Path) -> Config:
    return make_config(
        tmp_path, features={"categorical": ["store"]}, sensitive_columns=[], id_column=None
    )


def test_categories_as_ints_or_strings_predict_the_same(tmp_path: Path) -> None:
    data = _coded_table()
    model, schema, x = fitted(data, _coded_config(tmp_path))
    assert schema.categorical_features == ["store"]
    as_int = model.predict_proba(x)
    as_text = model.predict_proba(x.assign(store=x["store"].astype(str)))
    as_object = model.predict_proba(x.assign(store=x["store"].astype(object)))
    np.testing.assert_array_equal(as_int, as_text)
    np.testing.assert_array_equal(as_int, as_object)
    # The category matters, so the encoding really was used.
    assert np.ptp(as_int[:, 1]) > 0.3


def test_integer_categories_read_with_nulls_match_the_same_values_without(tmp_path: Path) -> None:
    # Arrow -> pandas turns an int column with a null into float64: 3 becomes 3.0.
    data = _coded_table()
    model, _, _ = fitted(data, _coded_config(tmp_path))
    with_null = pa.table({"store": pa.array([3, 1, None]), "num_0": [0.0, 0.0, 0.0]}).to_pandas()
    assert with_null["store"].dtype == np.float64
    expected = model.predict_proba(
        pd.DataFrame({"store": ["3", "1", None], "num_0": [0.0, 0.0, 0.0]})
    )
    np.testing.assert_array_equal(model.predict_proba(with_null), expected)
    assert expected[0, 1] != pytest.approx(expected[1, 1], abs=0.05)


def test_unseen_categories_at_predict_time_do_not_crash(
    small_config: Config, table: pa.Table
) -> None:
    model, _, x = fitted(table, small_config)
    rows = x.head(5).copy()
    rows["region"] = ["mars", "venus", None, "north", "NORTH"]
    rows["device"] = "toaster"
    proba = model.predict_proba(rows)
    assert proba.shape == (5, 2)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_null_numeric_values_are_imputed_with_the_training_median(
    small_config: Config, table: pa.Table
) -> None:
    model, _, x = fitted(table, small_config)
    rows = x.head(6).copy()
    rows["num_0"] = np.nan
    rows["num_3"] = None
    proba = model.predict_proba(rows)
    assert np.isfinite(proba).all()
    filled = rows.assign(num_0=x["num_0"].median(), num_3=x["num_3"].median())
    np.testing.assert_allclose(proba, model.predict_proba(filled))


def test_numeric_text_and_nullable_ints_become_floats(
    small_config: Config, table: pa.Table
) -> None:
    model, _, x = fitted(table, small_config)
    rows = x.head(4).copy()
    expected = model.predict_proba(rows)
    text = rows.assign(num_0=rows["num_0"].map(repr))
    np.testing.assert_allclose(model.predict_proba(text), expected)


def test_columns_outside_the_schema_are_ignored(small_config: Config, table: pa.Table) -> None:
    model, _, x = fitted(table, small_config)
    rows = x.head(20)
    expected = model.predict_proba(rows)
    noisy = rows.assign(unexpected=np.arange(20), request_id="r-1", label=1)
    np.testing.assert_array_equal(model.predict_proba(noisy), expected)
    reordered = rows[list(reversed(rows.columns))]
    np.testing.assert_array_equal(model.predict_proba(reordered), expected)


def test_fitted_model_pickles_with_identical_predictions(
    small_config: Config, table: pa.Table
) -> None:
    model, _, x = fitted(table, small_config)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))


def test_as_text_marks_nulls_as_one_category() -> None:
    out = features.as_text(pd.DataFrame({"a": ["x", None, np.nan], "b": [1, 2, 3]}))
    assert out["a"].tolist() == ["x", features.MISSING_CATEGORY, features.MISSING_CATEGORY]
    assert out["b"].tolist() == ["1", "2", "3"]


def test_rare_categories_share_one_column(small_config: Config) -> None:
    rng = np.random.default_rng(0)
    rows = 400
    # 40 frequent levels: more than MAX_ONE_HOT, so the rest fold into an infrequent column.
    levels = np.array([f"shop{i}" for i in range(40)], dtype=object)
    data = pa.table(
        {
            "shop": levels[rng.integers(0, 40, rows)],
            "num_0": rng.normal(size=rows),
            "label": rng.integers(0, 2, rows),
            "event_time": np.arange(rows),
        }
    )
    config = small_config.replace(sensitive_columns=(), id_column=None)
    schema = schema_module.infer(data, config)
    preprocessor = features.build_preprocessor(schema).fit(
        data.select(schema.feature_names).to_pandas()
    )
    one_hot = [n for n in preprocessor.get_feature_names_out() if n.startswith("shop_")]
    assert len(one_hot) == features.MAX_ONE_HOT
    assert "shop_infrequent_sklearn" in one_hot
