"""Requests to DataFrames: the predictor builds typed columns from the model signature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kserve.errors import InvalidInput

from ctpipe.serving.payload import parse_v1
from ctpipe.serving.source import Signature

SIGNATURE = Signature(
    (("amount", "double"), ("count", "long"), ("flag", "boolean"), ("region", "string"))
)


def test_a_null_number_stays_a_float_column() -> None:
    batch = parse_v1(
        {"instances": [{"amount": None, "count": 3, "flag": True, "region": "east"}]},
        SIGNATURE,
        100,
        "r",
    )
    frame = batch.frame()
    assert list(frame.columns) == ["amount", "count", "flag", "region"]
    assert frame["amount"].dtype == np.float64 and math.isnan(frame["amount"][0])
    assert frame["count"].dtype == np.int64 and frame["count"][0] == 3
    assert frame["flag"].dtype == bool
    assert frame["region"].dtype == object and frame["region"][0] == "east"


def test_nulls_in_integer_and_boolean_columns() -> None:
    batch = parse_v1(
        {
            "instances": [
                {"amount": 1.5, "count": None, "flag": None, "region": None},
                {"amount": 2, "count": 4.0, "flag": False, "region": "west"},
            ]
        },
        SIGNATURE,
        100,
        "r",
    )
    frame = batch.frame()
    # An integer column with a gap becomes float (NaN), as pandas reads it from Parquet.
    assert frame["count"].dtype == np.float64 and math.isnan(frame["count"][0])
    assert frame["count"][1] == 4.0
    assert frame["amount"].tolist() == [1.5, 2.0]
    assert frame["flag"].tolist() == [None, False]
    assert frame["region"].tolist() == [None, "west"]


@pytest.mark.parametrize("rows", [1, 3])
def test_the_frame_equals_what_the_public_constructor_builds(rows: int) -> None:
    """Batch.frame uses pandas' unchecked constructor; a pandas that changes it fails here."""
    import pandas as pd

    from ctpipe.serving.payload import _array

    instances = [
        {"amount": 1.5, "count": 2, "flag": True, "region": "east"},
        {"amount": None, "count": None, "flag": None, "region": None},
        {"amount": 3, "count": 7.0, "flag": False, "region": "west"},
    ][:rows]
    batch = parse_v1({"instances": instances}, SIGNATURE, 100, "r")
    public = pd.DataFrame({name: _array(batch.columns[name], kind) for name, kind in batch.kinds})
    frame = batch.frame()
    pd.testing.assert_frame_equal(frame, public, check_exact=True)
    assert frame._mgr.nblocks == public._mgr.nblocks  # consolidated alike


def test_the_typed_frame_predicts_like_the_training_frame() -> None:
    from ctpipe.config import load
    from ctpipe.data import schema as schema_module
    from ctpipe.data import synthetic
    from ctpipe.features import build_model
    from ctpipe.training.families import build_estimator

    config = load()
    table = synthetic.generate(800, seed=5)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()[schema.feature_names]
    frame.loc[frame.index % 3 == 0, "num_1"] = np.nan  # gaps, as requests send them (null)
    frame.loc[frame.index % 5 == 0, "region"] = None
    model = build_model(schema, build_estimator("linear", "classification", {}, seed=0))
    model.fit(frame, table.to_pandas()["label"])
    kinds = tuple(
        (name, "double" if frame[name].dtype.kind == "f" else "string") for name in frame.columns
    )
    rows = frame.head(40).astype(object).where(frame.head(40).notna(), None)
    for i, record in enumerate(rows.to_dict("records")):
        batch = parse_v1({"instances": [record]}, Signature(kinds), 10, "r")
        expected = model.predict_proba(frame.iloc[i : i + 1])  # one row, as the request
        assert (model.predict_proba(batch.frame()) == expected).all(), record


def test_wrong_types_are_still_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.count: expected an integer"):
        parse_v1(
            {"instances": [{"amount": 1.0, "count": 1.5, "flag": True, "region": "x"}]},
            SIGNATURE,
            100,
            "r",
        )
