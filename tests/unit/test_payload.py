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


GOOD = {"amount": 1.0, "count": 1, "flag": True, "region": "x"}


def test_an_unknown_field_is_named_escaped_so_no_log_line_can_be_forged() -> None:
    forged = "colour\nINFO ctpipe.serving: serving version 9"
    with pytest.raises(InvalidInput) as caught:
        parse_v1({"instances": [{**GOOD, forged: 1}]}, SIGNATURE, 100, "r")
    message = str(caught.value)
    assert "\n" not in message
    assert 'unknown field "colour\\nINFO ctpipe.serving' in message
    with pytest.raises(InvalidInput, match="unknown key") as caught:
        parse_v1({"instances": [GOOD], "x" * 10_000 + "\n": 1}, SIGNATURE, 100, "r")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_a_wrong_value_is_quoted_short_and_escaped() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_v1({"instances": [{**GOOD, "amount": "a\n" * 50_000}]}, SIGNATURE, 100, "r")
    message = str(caught.value)
    assert message.startswith("instances[0].amount: expected a number, got 'a\\na\\n")
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize(
    ("request_id", "ids", "where"),
    [
        ("x" * 60_000, None, "x-request-id"),
        ("bad\nid", None, "x-request-id"),
        ("r", ["ok", "x" * 129], '"ids"[1]'),
        ("r", ["ok", ""], '"ids"[1]'),
        ("r", ["a b", "ok"], '"ids"[0]'),
    ],
)
def test_request_ids_follow_the_rule(request_id: str, ids: list[str] | None, where: str) -> None:
    payload: dict[str, object] = {"instances": [GOOD, GOOD]}
    if ids is not None:
        payload["ids"] = ids
    with pytest.raises(InvalidInput) as caught:
        parse_v1(payload, SIGNATURE, 100, request_id)
    assert str(caught.value).startswith(f"{where}: a request id must be 1 to 128 characters")
    assert "\n" not in str(caught.value)


def test_row_ids_of_one_request_are_distinct() -> None:
    with pytest.raises(InvalidInput, match="each row needs its own id"):
        parse_v1({"instances": [GOOD, GOOD], "ids": ["a", "a"]}, SIGNATURE, 100, None)
    batch = parse_v1({"instances": [GOOD, GOOD], "ids": ["a", "b"]}, SIGNATURE, 100, "req.1:x")
    assert batch.ids == ["a", "b"] and batch.request_id == "req.1:x"


def v2(inputs: list[tuple[str, str, list[object]]], request_id: str | None = None) -> object:
    from kserve.protocol.infer_type import InferInput, InferRequest

    return InferRequest(
        "m",
        [InferInput(name, [len(data)], datatype, data) for name, datatype, data in inputs],
        request_id=request_id,
    )


V2_GOOD: list[tuple[str, str, list[object]]] = [
    ("amount", "FP64", [1.0]),
    ("count", "INT64", [2]),
    ("flag", "BOOL", [True]),
    ("region", "BYTES", ["x"]),
]


def test_v2_input_names_are_checked_escaped_and_given_once() -> None:
    from ctpipe.serving.payload import parse_v2

    assert parse_v2(v2(V2_GOOD, "abc"), SIGNATURE, 10).ids == ["abc"]
    with pytest.raises(InvalidInput) as caught:
        parse_v2(v2([*V2_GOOD, ("evil\nname", "FP64", [1.0])]), SIGNATURE, 10)
    assert 'unknown input "evil\\nname"' in str(caught.value)
    with pytest.raises(InvalidInput, match='input "amount" is given more than once'):
        parse_v2(v2([*V2_GOOD, ("amount", "FP64", [3.0])]), SIGNATURE, 10)
    with pytest.raises(InvalidInput) as caught:
        parse_v2(v2([("amount", "FP\n64", [1.0]), *V2_GOOD[1:]]), SIGNATURE, 10)
    assert 'datatype "FP\\n64" where a number' in str(caught.value)
    with pytest.raises(InvalidInput, match=r'^"id": a request id must be'):
        parse_v2(v2(V2_GOOD, "x" * 200), SIGNATURE, 10)


def test_recent_ids_refuse_a_repeat_within_the_window_only() -> None:
    from ctpipe.serving.payload import DuplicateRequestId, RecentIds

    now = [0.0]
    recent = RecentIds(max_ids=3, seconds=60, clock=lambda: now[0])
    recent.claim(["a", "b"])
    with pytest.raises(
        DuplicateRequestId, match='request id "b" was already answered in the last 60s'
    ):
        recent.claim(["c", "b"])
    recent.claim(["c"])  # the refused claim recorded nothing
    now[0] = 61.0
    recent.claim(["a"])  # aged out
    recent.claim(["d", "e", "f"])
    assert len(recent) == 3  # bounded by count: the oldest left first
    recent.claim(["a"])
    recent.release(["a"])  # its request failed: a retry is welcome
    recent.claim(["a"])


def test_a_duplicate_is_refused_before_predicting_and_a_failed_request_frees_its_ids() -> None:
    from ctpipe.serving.model import ChampionModel
    from ctpipe.serving.payload import DuplicateRequestId, RecentIds
    from ctpipe.serving.source import Loaded, ModelSource

    class Model:
        def __init__(self) -> None:
            self.fail = True

        def predict_proba(self, frame: object) -> object:
            if self.fail:
                raise RuntimeError("out of memory")
            return np.array([[0.25, 0.75]])

    estimator = Model()
    served = ChampionModel("m", ModelSource("models:/m/1"), recent_ids=RecentIds())
    served.current = Loaded(estimator, "1", SIGNATURE, "classification", (0, 1))
    batch = parse_v1({"instances": [GOOD]}, SIGNATURE, 10, "once")
    with pytest.raises(RuntimeError):
        served.predict(batch)
    estimator.fail = False
    assert served.predict(batch)["ids"] == ["once"]  # the retry of a failed request
    with pytest.raises(DuplicateRequestId):
        served.predict(parse_v1({"instances": [GOOD]}, SIGNATURE, 10, "once"))
