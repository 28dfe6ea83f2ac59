"""ctpipe.data.schema (inference, versioned store) and ctpipe.data.validation (the rules)."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ctpipe import storage
from ctpipe.config import Config, DataSource, Features
from ctpipe.data import ingest, schema, synthetic, tables, validation
from ctpipe.data.schema import Schema, SchemaStore
from ctpipe.data.validation import Location, ValidationResult, Violation
from ctpipe.errors import ValidationFailed
from tests.conftest import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
DROP = object()


def frame(n: int, start: int = 0, **columns: Any) -> pa.Table:
    """n hourly rows: x in 0..9, c in a/b/c, label 0/1; keyword columns replace or DROP."""
    k = range(start, start + n)
    data: dict[str, Any] = {
        "request_id": pa.array([f"r{i:05d}" for i in k]),
        "event_time": pa.array([T0 + timedelta(hours=i) for i in k], TS),
        "x": pa.array([float(i % 10) for i in k]),
        "c": pa.array([("a", "b", "c")[i % 3] for i in k]),
        "label": pa.array([i % 2 for i in k], pa.int64()),
    }
    for name, value in columns.items():
        if value is DROP:
            del data[name]
        else:
            data[name] = value
    return pa.table(data)


def with_values(table: pa.Table, name: str, changes: dict[int, Any], dtype: Any = None) -> pa.Table:
    """`table` with column `name` set to `changes[i]` at row index i."""
    values = table.column(name).to_pylist()
    for i, value in changes.items():
        values[i] = value
    array = pa.array(values, dtype or table.schema.field(name).type)
    return table.set_column(table.column_names.index(name), name, array)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "state", sensitive_columns=["c"])


@pytest.fixture
def ingested(tmp_path: Path, config: Config):
    """Write tables as Parquet files and ingest them: {name: table} -> (table, {name: uri})."""

    def run(parts: dict[str, pa.Table]) -> tuple[pa.Table, dict[str, str]]:
        folder = tmp_path / f"data-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        uris = {}
        for name, part in parts.items():
            pq.write_table(part, folder / name)
            uris[name] = str(folder / name)
        out = str(folder / "_ingested.parquet")
        run_config = config.replace(data=DataSource(uri=str(folder)))
        ingest.ingest(run_config, out)
        return tables.read(out), uris

    return run


@pytest.fixture
def base_schema(ingested, config: Config) -> Schema:
    table, _ = ingested({"train.parquet": frame(200)})
    return schema.infer(table, config)


@pytest.fixture
def check(ingested, base_schema: Schema, config: Config):
    """Ingest two files, a (rows 0..99) and b (rows 100..199), and check them."""

    def run(a: pa.Table, b: pa.Table, **tolerances: Any) -> tuple[ValidationResult, dict[str, str]]:
        table, uris = ingested({"a.parquet": a, "b.parquet": b})
        return validation.check(table, base_schema, replace(config.validation, **tolerances)), uris

    return run


def new_a(**columns: Any) -> pa.Table:
    return frame(100, 1000, **columns)


def new_b(**columns: Any) -> pa.Table:
    return frame(100, 1100, **columns)


def only(result: ValidationResult, rule: str, column: str | None = None) -> Violation:
    found = [
        v for v in result.violations if v.rule == rule and (column is None or v.column == column)
    ]
    assert len(found) == 1, result.violations
    return found[0]


def rules(result: ValidationResult) -> set[tuple[str, str, str | None]]:
    return {(v.rule, v.severity, v.column) for v in result.violations}


# ------------------------------------------------------------------- inference


def test_infer_kinds_roles_and_ranges(ingested, tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")  # sensitive_columns: [region]
    data = synthetic.generate(400, 3)
    table, _ = ingested({"train.parquet": data})
    s = schema.infer(table, config, source_hash="sha256:abc")
    assert s.version == 1 and s.rows == 400 and s.source_hash == "sha256:abc"
    assert (s.task, s.target, s.timestamp) == ("classification", "label", "event_time")
    assert s.config_fingerprint == schema.config_fingerprint(config)
    assert [c.name for c in s.columns] == tables.data_columns(table)
    by_name = {c.name: c for c in s.columns}
    assert (by_name["request_id"].kind, by_name["request_id"].role) == ("text", "id")
    assert (by_name["event_time"].kind, by_name["event_time"].role) == ("timestamp", "timestamp")
    assert (by_name["label"].kind, by_name["label"].role) == ("categorical", "target")
    assert s.label_domain == (0, 1)
    assert s.numeric_features == [f"num_{i}" for i in range(8)]
    assert s.categorical_features == ["region", "channel", "device"]
    assert s.feature_names == s.numeric_features + s.categorical_features
    for i in range(8):
        column = data.column(f"num_{i}")
        assert by_name[f"num_{i}"].minimum == pc.min(column).as_py()
        assert by_name[f"num_{i}"].maximum == pc.max(column).as_py()
        assert by_name[f"num_{i}"].null_rate == round(column.null_count / 400, 6)
    assert by_name["num_1"].null_rate > 0  # synthetic data leaves a few holes there
    assert by_name["channel"].domain == ("app", "partner", "store", "web")
    assert by_name["region"].domain == ("east", "north", "south", "west")
    assert by_name["region"].sensitive and not by_name["channel"].sensitive
    assert not any(c.sensitive for c in s.columns if c.name != "region")
    assert s.notes == ()


def test_infer_regression_target(ingested, tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        task="regression",
        search={"candidates": [{"family": "linear"}]},
        gate={"thresholds": {}},
    )
    data = synthetic.generate(300, 3, task="regression")
    table, _ = ingested({"train.parquet": data})
    target = schema.infer(table, config).column("label")
    assert target is not None
    assert (target.kind, target.role, target.domain) == ("numeric", "target", None)
    assert target.minimum == pc.min(data.column("label")).as_py()
    assert target.maximum == pc.max(data.column("label")).as_py()


def test_infer_float_labels_are_class_labels(config: Config) -> None:
    table = frame(10, label=pa.array([1.0, 0.0, None, 2.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    s = schema.infer(table, config)
    assert s.label_domain == (0, 1, 2)
    assert all(isinstance(v, int) for v in s.label_domain or ())
    assert s.column("label").null_rate == 0.1  # type: ignore[union-attr]


def test_infer_text_labels(config: Config) -> None:
    labels = pa.array(["yes", "no"] * 5).dictionary_encode()
    assert schema.infer(frame(10, label=labels), config).label_domain == ("no", "yes")


def test_infer_drops_id_like_text(config: Config) -> None:
    n = 600
    table = frame(
        n,
        comment=pa.array([f"free text number {i}" for i in range(n)]),
        street=pa.array([f"street-{i % 350}" for i in range(n)]),  # 350 of 600: mostly unique
        city=pa.array([f"city-{i % 250}" for i in range(n)]),  # 250 of 600: repeated enough
        short=pa.array([f"s{i}" for i in range(n)]),
    )
    s = schema.infer(table, config.replace(features=Features(categorical=("short",))))
    comment = s.column("comment")
    assert comment is not None
    assert (comment.kind, comment.role) == ("text", "dropped")
    assert comment.note == "600 distinct values: looks like an identifier or free text"
    assert "comment: 600 distinct values: looks like an identifier or free text" in s.notes
    assert "comment" not in s.feature_names
    assert s.column("street").role == "dropped"  # type: ignore[union-attr]
    city = s.column("city")
    assert city is not None and (city.kind, city.role) == ("categorical", "feature")
    assert city.domain is not None and len(city.domain) == 250
    # Named in features.categorical: kept whatever its cardinality.
    short = s.column("short")
    assert short is not None and (short.kind, short.role) == ("categorical", "feature")
    assert short.domain is not None and len(short.domain) == n


def test_infer_keeps_low_cardinality_text_under_the_id_threshold(config: Config) -> None:
    # Every value unique, but fewer than ID_LIKE_MIN_UNIQUE of them: still a category.
    n = schema.ID_LIKE_MIN_UNIQUE - 1
    s = schema.infer(frame(n, code=pa.array([f"k{i}" for i in range(n)])), config)
    assert s.column("code").role == "feature"  # type: ignore[union-attr]
    assert s.column("code").kind == "categorical"  # type: ignore[union-attr]


def test_infer_sensitive_high_cardinality_is_kept(tmp_path: Path) -> None:
    n = 1200
    config = make_config(tmp_path / "state", sensitive_columns=["zip"])
    s = schema.infer(frame(n, zip=pa.array([f"z{i}" for i in range(n)])), config)
    zip_column = s.column("zip")
    assert zip_column is not None
    assert (zip_column.role, zip_column.kind, zip_column.sensitive) == (
        "feature",
        "categorical",
        True,
    )
    assert zip_column.domain is None  # more than MAX_DOMAIN values: no domain check


def test_infer_all_null_column_is_dropped_with_a_note(config: Config) -> None:
    table = frame(20, empty=pa.nulls(20), hollow=pa.array([None] * 20, pa.float64()))
    s = schema.infer(table, config)
    for name in ("empty", "hollow"):
        column = s.column(name)
        assert column is not None
        assert column.role == "dropped" and column.null_rate == 1.0
        assert column.note == "every value was null at inference"
        assert f"{name}: every value was null at inference" in s.notes
    assert "empty" not in s.feature_names


def test_infer_nan_counts_as_null(config: Config) -> None:
    s = schema.infer(frame(4, x=pa.array([1.0, float("nan"), None, 3.0])), config)
    x = s.column("x")
    assert x is not None and x.null_rate == 0.5
    assert (x.minimum, x.maximum) == (1.0, 3.0)


def test_infer_feature_overrides(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        sensitive_columns=[],
        features={"numeric": ["amount"], "categorical": ["store"], "drop": ["x"]},
    )
    table = frame(
        12,
        store=pa.array([i % 4 + 1 for i in range(12)]),
        amount=pa.array([str(i / 2) for i in range(12)]),
        flag=pa.array([i % 2 == 0 for i in range(12)]),
        seen_at=pa.array([T0] * 12, TS),
    )
    s = schema.infer(table, config)
    store, amount, x = s.column("store"), s.column("amount"), s.column("x")
    assert store is not None and (store.kind, store.role) == ("categorical", "feature")
    assert store.domain == ("1", "2", "3", "4")
    assert amount is not None and (amount.kind, amount.role) == ("numeric", "feature")
    assert (amount.minimum, amount.maximum) == (0.0, 5.5)
    assert x is not None and (x.role, x.kind, x.note) == (
        "dropped",
        "numeric",
        "dropped by features.drop",
    )
    flag = s.column("flag")
    assert flag is not None and (flag.kind, flag.minimum, flag.maximum) == ("numeric", 0.0, 1.0)
    seen_at = s.column("seen_at")
    assert seen_at is not None and (seen_at.kind, seen_at.role) == ("timestamp", "dropped")
    assert s.feature_names == ["c", "store", "amount", "flag"]
    assert s.config_fingerprint != schema.config_fingerprint(make_config(tmp_path / "state"))


def test_infer_text_forced_numeric_is_a_validation_error(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", features={"numeric": ["c"]}, sensitive_columns=[])
    with pytest.raises(
        ValidationFailed, match=re.escape("column 'c', rule type_change: features.numeric")
    ):
        schema.infer(frame(10), config)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (frame(0), "empty data"),
        (frame(10, label=DROP), "column 'label', rule missing_label: the target column is not in"),
        (
            frame(10, label=pa.nulls(10, pa.int64())),
            "column 'label', rule missing_label: every label",
        ),
        (frame(10, x=DROP, c=DROP), "no usable feature columns"),
    ],
)
def test_infer_refuses(table: pa.Table, message: str, config: Config) -> None:
    with pytest.raises(ValidationFailed, match=re.escape(message)):
        schema.infer(table, config)


def test_schema_json_round_trip(ingested, tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", features={"categorical": ["store"]})
    table, _ = ingested(
        {
            "a.parquet": synthetic.generate(250, 5).append_column(
                "store", pa.array([i % 3 for i in range(250)])
            ),
        }
    )
    table = table.append_column("comment", pa.array([f"t{i}" for i in range(250)]))
    s = schema.infer(table, config, version=4, source_hash="sha256:x")
    back = Schema.from_json(s.to_json())
    assert back == s
    assert back.label_domain == (0, 1)
    assert isinstance(back.columns, tuple) and isinstance(back.notes, tuple) and back.notes
    assert back.column("store").domain == ("0", "1", "2")  # type: ignore[union-attr]
    assert "| region | feature (sensitive) | categorical |" in back.markdown()
    assert "**Schema v4**" in back.markdown()


# ------------------------------------------------------------------------ store


def test_store_versions_locally(base_schema: Schema, tmp_path: Path) -> None:
    store = SchemaStore(str(tmp_path / "state"), "model-a")
    assert store.versions() == [] and store.latest() is None
    first = store.save_next(base_schema)
    second = store.save_next(base_schema)
    assert (first.version, second.version) == (1, 2)
    assert store.versions() == [1, 2]
    assert Path(store.uri(1)) == tmp_path / "state" / "schemas" / "model-a" / "v0001.json"
    assert store.load(1) == first
    assert store.latest() == second
    assert store.load(2).columns == base_schema.columns
    # Another model name is another history.
    assert SchemaStore(str(tmp_path / "state"), "model-b").versions() == []


def test_store_ignores_stray_files(base_schema: Schema, tmp_path: Path) -> None:
    store = SchemaStore(str(tmp_path / "state"), "m")
    store.save_next(base_schema)
    folder = tmp_path / "state" / "schemas" / "m"
    (folder / "notes.txt").write_text("hi")
    (folder / "v7.json").write_text("{}")
    (folder / "v0009.json.bak").write_text("{}")
    assert store.versions() == [1]
    assert store.save_next(base_schema).version == 2


class StaleStore(SchemaStore):
    """A store that lists an old state, as a run that lost a race would."""

    def versions(self) -> list[int]:
        return []


def test_store_exclusive_write_takes_the_next_number(base_schema: Schema, tmp_path: Path) -> None:
    store = SchemaStore(str(tmp_path / "state"), "m")
    winner = store.save_next(base_schema)
    store.save_next(base_schema)
    before = Path(store.uri(1)).read_bytes()
    late = StaleStore(str(tmp_path / "state"), "m").save_next(replace(base_schema, rows=7))
    assert late.version == 3
    assert Path(store.uri(1)).read_bytes() == before  # nothing overwritten
    assert store.load(1) == winner
    assert store.load(3).rows == 7
    assert store.versions() == [1, 2, 3]


def test_store_on_s3(s3: Any, base_schema: Schema) -> None:
    bucket = f"ctpipe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    store = SchemaStore(f"s3://{bucket}/state", "m")
    assert store.uri(1) == f"s3://{bucket}/state/schemas/m/v0001.json"
    assert store.versions() == [] and store.latest() is None
    assert store.save_next(base_schema).version == 1
    assert store.save_next(base_schema).version == 2
    assert store.versions() == [1, 2]
    assert store.latest() == replace(base_schema, version=2)
    late = StaleStore(f"s3://{bucket}/state", "m").save_next(base_schema)
    assert late.version == 3
    assert Schema.from_json(storage.read_bytes(store.uri(1)).decode()).version == 1
    assert SchemaStore(f"s3://{bucket}/state", "m2").versions() == []


# ------------------------------------------------------------------- validation


def test_clean_data_passes(check) -> None:
    result, _ = check(new_a(), new_b())
    assert result.violations == ()
    assert result.passed and result.errors == [] and result.warnings == []
    assert result.rows == 200 and result.schema_version == 1
    assert (
        result.summary == "validation passed against schema v1: 200 rows, 0 error(s), 0 warning(s)"
    )
    result.raise_if_failed()
    assert "No anomalies found." in result.markdown()


def test_empty_data(base_schema: Schema, config: Config) -> None:
    result = validation.check(frame(0), base_schema, config.validation, schema_created=True)
    assert not result.passed
    v = only(result, "empty_data")
    assert (v.severity, v.column, v.count) == ("error", None, 0)
    assert "(inferred now)" in result.summary
    with pytest.raises(
        ValidationFailed, match=r"rule empty_data \(integrity\): the data has no rows"
    ):
        result.raise_if_failed()


def test_missing_column_everywhere(check) -> None:
    result, uris = check(new_a(x=DROP), new_b(x=DROP))
    v = only(result, "missing_column")
    assert (v.severity, v.column, v.count) == ("error", "x", 200)
    assert v.files == {uris["a.parquet"]: 100, uris["b.parquet"]: 100}
    assert [w for w in result.violations if w.column == "x"] == [v]


def test_missing_column_in_one_file(check) -> None:
    result, uris = check(new_a(), new_b(x=DROP))
    v = only(result, "missing_column", "x")
    assert (v.severity, v.count) == ("error", 100)
    assert v.files == {uris["b.parquet"]: 100}
    assert "the feature column is missing" in v.detail
    # Its nulls there are also a jump in the null rate.
    assert only(result, "null_rate_increase", "x").files == {uris["b.parquet"]: 100}


def test_missing_label_in_one_file(check) -> None:
    result, uris = check(new_a(label=DROP), new_b())
    found = {v.detail: v for v in result.violations if v.rule == "missing_label"}
    v = found.pop("the target column is missing")
    assert (v.severity, v.column, v.count) == ("error", "label", 100)
    assert v.files == {uris["a.parquet"]: 100}
    # Its rows also count as unlabelled: half the data, far over the tolerance.
    (unlabelled,) = found.values()
    assert (unlabelled.severity, unlabelled.count) == ("error", 100)
    assert unlabelled.files == {uris["a.parquet"]: 100}
    assert not any(w.rule == "unseen_label" for w in result.violations)


def test_missing_id_or_dropped_column_is_fine(check) -> None:
    result, _ = check(new_a(request_id=DROP), new_b(request_id=DROP))
    assert result.violations == ()


def test_extra_column_is_a_warning(check) -> None:
    result, _ = check(new_a(extra=pa.array(range(100))), new_b())
    v = only(result, "extra_column")
    assert (v.severity, v.column, v.count) == ("warning", "extra", 200)
    assert result.passed
    assert result.warnings == [v]


def test_type_change(check) -> None:
    text = pa.array([str(float(i % 10)) for i in range(100)])
    b = new_b(x=text)
    b = with_values(b, "x", {2: "abc", 6: "n/a", 50: "1e3"})
    result, uris = check(new_a(), b)
    v = only(result, "type_change")
    assert (v.severity, v.column, v.count) == ("error", "x", 2)
    assert v.files == {uris["b.parquet"]: 2}
    assert v.examples == (
        Location(uris["b.parquet"], 3, "abc"),
        Location(uris["b.parquet"], 7, "n/a"),
    )
    assert "found text" in v.detail
    assert not any(w.rule == "out_of_range" for w in result.violations)


def test_numbers_as_text_are_still_numbers(check) -> None:
    result, _ = check(new_a(), new_b(x=pa.array([f" {i % 10}.0 " for i in range(100)])))
    assert result.violations == ()


def test_all_null(check) -> None:
    empty = pa.array([None] * 100, pa.float64())
    result, uris = check(new_a(x=empty), new_b(x=empty))
    v = only(result, "all_null")
    assert (v.severity, v.column, v.count) == ("error", "x", 200)
    assert v.files == {uris["a.parquet"]: 100, uris["b.parquet"]: 100}
    assert [w.rule for w in result.violations if w.column == "x"] == ["all_null"]


@pytest.mark.parametrize(
    ("nulls_a", "nulls_b", "severity"),
    [(4, 4, None), (16, 0, "warning"), (30, 30, "error")],
)
def test_null_rate_increase(check, nulls_a: int, nulls_b: int, severity: str | None) -> None:
    a = with_values(new_a(), "x", dict.fromkeys(range(nulls_a)))
    b = with_values(new_b(), "x", dict.fromkeys(range(10, 10 + nulls_b)))
    result, uris = check(a, b)
    found = [v for v in result.violations if v.rule == "null_rate_increase"]
    if severity is None:
        assert result.violations == ()
        return
    (v,) = found
    assert (v.severity, v.column, v.count) == (severity, "x", nulls_a + nulls_b)
    expected_files = {uris["a.parquet"]: nulls_a, uris["b.parquet"]: nulls_b}
    assert v.files == {f: n for f, n in expected_files.items() if n}
    assert v.examples[:2] == (
        Location(uris["a.parquet"], 1, None),
        Location(uris["a.parquet"], 2, None),
    )
    assert f"null rate {(nulls_a + nulls_b) / 200:.1%}" in v.detail
    assert result.passed == (severity == "warning")


def test_nan_counts_as_null_in_validation(check) -> None:
    a = with_values(new_a(), "x", dict.fromkeys(range(40), float("nan")))
    result, _ = check(a, new_b())
    v = only(result, "null_rate_increase")
    assert (v.severity, v.count) == ("warning", 40)


def test_infinite_and_overflowing_numbers_are_integrity_errors(check) -> None:
    """inf fails scikit-learn, and so does 1e308 (inf once cast to float32, or squared),
    with a message that names no column: validation names file, column, row and rule,
    however soft the distribution rules are."""
    a = with_values(new_a(), "x", {2: float("inf"), 5: float("-inf")})
    b = with_values(new_b(), "x", {3: 1e308, 9: -1e39})
    result, uris = check(a, b, distribution="soft")
    infinite, overflow = only(result, "non_finite", "x"), only(result, "overflow", "x")
    assert (infinite.severity, infinite.kind, infinite.count) == ("error", "integrity", 2)
    assert infinite.files == {uris["a.parquet"]: 2}
    assert infinite.examples == (
        Location(uris["a.parquet"], 3, float("inf")),
        Location(uris["a.parquet"], 6, float("-inf")),
    )
    assert (overflow.severity, overflow.kind, overflow.count) == ("error", "integrity", 2)
    assert overflow.files == {uris["b.parquet"]: 2}
    assert [e.row for e in overflow.examples] == [4, 10]
    assert not any(v.rule == "out_of_range" for v in result.violations)
    with pytest.raises(ValidationFailed) as info:
        result.raise_if_failed()
    message = str(info.value)
    assert f"{uris['a.parquet']}: column 'x', rule non_finite (integrity):" in message
    assert f"{uris['b.parquet']}: column 'x', rule overflow (integrity):" in message
    assert "float32" in message and "1e+308 (row 4)" in message


def test_large_finite_numbers_below_the_float32_limit_pass(check) -> None:
    b = with_values(new_b(), "x", {0: 3.0e38, 1: -3.0e38})
    result, _ = check(new_a(), b)
    assert not any(v.rule in ("non_finite", "overflow") for v in result.violations)


def test_regression_labels_must_be_finite(ingested, tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        task="regression",
        search={"candidates": [{"family": "linear"}]},
        gate={"thresholds": {}},
    )
    values = {i: float(i % 7) for i in range(200)}
    train, _ = ingested({"train.parquet": with_values(frame(200), "label", values, pa.float64())})
    fitted = schema.infer(train, config)
    labels = {1: float("inf"), 4: 1e300}
    table, uris = ingested(
        {"new.parquet": with_values(frame(100, 1000), "label", labels, pa.float64())}
    )
    result = validation.check(table, fitted, config.validation)
    infinite, overflow = only(result, "non_finite", "label"), only(result, "overflow", "label")
    assert infinite.examples == (Location(uris["new.parquet"], 2, float("inf")),)
    assert overflow.examples == (Location(uris["new.parquet"], 5, 1e300),)
    assert not result.passed


@pytest.mark.parametrize(
    ("outside", "strictness", "severity"),
    [(1, "hard", None), (6, "hard", "warning"), (60, "hard", "error"), (60, "soft", "warning")],
)
def test_out_of_range(check, outside: int, strictness: str, severity: str | None) -> None:
    half = outside // 2
    a = with_values(new_a(), "x", {i: 100.0 for i in range(outside - half)})
    b = with_values(new_b(), "x", {i: -5.0 for i in range(half)})
    result, uris = check(a, b, distribution=strictness)
    if severity is None:
        assert result.violations == ()
        return
    v = only(result, "out_of_range")
    assert (v.severity, v.column, v.count) == (severity, "x", outside)
    assert v.files == {uris["a.parquet"]: outside - half, uris["b.parquet"]: half}
    assert v.examples[0] == Location(uris["a.parquet"], 1, 100.0)
    assert Location(uris["b.parquet"], 1, -5.0) in v.examples
    assert f"{outside / 200:.1%} of values outside the schema range [0, 9]" in v.detail
    assert v.kind == "distribution"
    assert result.passed == (severity != "error")


def test_examples_come_from_every_affected_file(check) -> None:
    """A file late in the listing still gets its example rows, however many came before."""
    a = with_values(new_a(), "x", {i: 100.0 for i in range(50)})
    b = with_values(new_b(), "x", {i: 100.0 for i in range(90, 100)})
    result, uris = check(a, b)
    v = only(result, "out_of_range")
    by_file = {f: [e.row for e in v.examples if e.file == f] for f in uris.values()}
    assert by_file == {uris["a.parquet"]: [1, 2, 3, 4, 5], uris["b.parquet"]: [91, 92, 93, 94, 95]}
    lines = v.lines()
    assert len(lines) == 2
    assert lines[1].startswith(f"{uris['b.parquet']}: column 'x', rule out_of_range")
    assert "100.0 (row 91)" in lines[1]


@pytest.mark.parametrize(
    ("unseen", "distinct", "strictness", "severity"),
    [
        (4, 1, "hard", "warning"),
        (20, 1, "hard", "error"),
        (80, 80, "hard", "error"),
        (80, 80, "soft", "warning"),
    ],
)
def test_unseen_category(check, unseen: int, distinct: int, strictness: str, severity: str) -> None:
    new = {i: (f"new-{i}" if distinct > 1 else "d") for i in range(unseen)}
    a = with_values(new_a(), "c", {i: v for i, v in new.items() if i < 100})
    b = with_values(new_b(), "c", {i - 100: v for i, v in new.items() if i >= 100})
    result, uris = check(a, b, distribution=strictness)
    v = only(result, "unseen_category")
    assert (v.severity, v.column, v.count) == (severity, "c", unseen)
    assert v.files == {uris["a.parquet"]: min(unseen, 100)}
    assert v.examples[0] == Location(uris["a.parquet"], 1, new[0])
    noun = "category" if distinct == 1 else "categories"
    assert f"{unseen / 200:.1%} of rows hold {distinct:,} {noun} not in the schema" in v.detail
    assert result.passed == (severity == "warning")


def test_unseen_category_ignores_nulls(check) -> None:
    result, _ = check(with_values(new_a(), "c", {0: None}), new_b())
    assert [v.rule for v in result.violations] == []


def test_missing_label_column(check) -> None:
    result, _ = check(new_a(label=DROP), new_b(label=DROP))
    v = only(result, "missing_label")
    assert (v.severity, v.column, v.count) == ("error", "label", 200)
    assert "the target column is missing" in v.detail


def test_every_label_null(check) -> None:
    nothing = pa.nulls(100, pa.int64())
    result, _ = check(new_a(label=nothing), new_b(label=nothing))
    v = only(result, "missing_label")
    assert (v.severity, v.count, v.detail) == ("error", 200, "every label is null")


@pytest.mark.parametrize(("missing", "severity"), [(4, "warning"), (20, "error")])
def test_some_labels_null(check, missing: int, severity: str) -> None:
    b = with_values(new_b(), "label", dict.fromkeys(range(100 - missing, 100)))
    result, uris = check(new_a(), b)
    v = only(result, "missing_label")
    assert (v.severity, v.count) == (severity, missing)
    assert v.files == {uris["b.parquet"]: missing}
    assert v.examples[0].row == 100 - missing + 1
    assert "left out of training" in v.detail
    assert not any(w.rule == "unseen_label" for w in result.violations)


def test_unseen_label(check) -> None:
    b = with_values(new_b(), "label", {3: 2, 4: 7, 40: 2})
    result, uris = check(new_a(), b)
    v = only(result, "unseen_label")
    assert (v.severity, v.column, v.count) == ("error", "label", 3)
    assert v.files == {uris["b.parquet"]: 3}
    assert [(e.row, e.value) for e in v.examples] == [(4, "2"), (5, "7"), (41, "2")]
    assert "[0, 1]" in v.detail


def test_float_labels_match_an_integer_domain(check) -> None:
    as_float = pa.array([float(i % 2) for i in range(100)])
    result, _ = check(new_a(label=as_float), new_b())
    assert result.violations == ()


def test_boolean_labels_match_their_own_domain(ingested, config: Config) -> None:
    """A CSV's true/false column is read as bool; the same data must validate clean."""
    flags = pa.array([i % 3 == 0 for i in range(60)])
    table, _ = ingested({"a.parquet": frame(60, label=flags)})
    s = Schema.from_json(schema.infer(table, config).to_json())
    assert s.label_domain == (False, True)
    assert validation.check(table, s, config.validation).violations == ()


def test_null_timestamp(check) -> None:
    a = with_values(new_a(), "event_time", {5: None, 9: None})
    b = with_values(new_b(), "event_time", {0: None})
    result, uris = check(a, b)
    v = only(result, "null_timestamp")
    assert (v.severity, v.column, v.count) == ("error", "event_time", 3)
    assert v.files == {uris["a.parquet"]: 2, uris["b.parquet"]: 1}
    assert [(e.file, e.row) for e in v.examples] == [
        (uris["a.parquet"], 6),
        (uris["a.parquet"], 10),
        (uris["b.parquet"], 1),
    ]


def test_check_without_provenance_still_counts(base_schema: Schema, config: Config) -> None:
    table = with_values(frame(100, 1000), "c", {0: "zzz"})
    v = only(validation.check(table, base_schema, config.validation), "unseen_category")
    assert (v.count, v.files, v.examples) == (1, {}, ())
    assert v.lines() == [
        "column 'c', rule unseen_category (distribution): 1.0% of rows hold 1 category not in the schema (max 5%)"
    ]


# -------------------------------------------------------------- failure report


@pytest.fixture
def broken(check) -> tuple[ValidationResult, dict[str, str]]:
    a = with_values(new_a(), "event_time", {4: None})
    a = with_values(a, "c", {i: "zzz" for i in range(30)})
    b = new_b(x=pa.array([str(float(i % 10)) for i in range(100)]), extra=pa.array([1] * 100))
    b = with_values(b, "x", {1: "abc"})
    b = with_values(b, "label", {7: 5})
    return check(a, b, distribution="hard")


def test_raise_if_failed_lists_every_error(broken: tuple[ValidationResult, dict[str, str]]) -> None:
    result, uris = broken
    assert rules(result) == {
        ("null_timestamp", "error", "event_time"),
        ("unseen_category", "error", "c"),
        ("type_change", "error", "x"),
        ("unseen_label", "error", "label"),
        ("extra_column", "warning", "extra"),
    }
    assert not result.passed
    assert "4 error(s), 1 warning(s)" in result.summary
    with pytest.raises(ValidationFailed) as info:
        result.raise_if_failed()
    message = str(info.value)
    assert message.startswith("data validation failed against schema v1:\n")
    expected = [
        f"{uris['a.parquet']}: column 'event_time', rule null_timestamp (integrity): rows without a timestamp [1 row(s)]",
        f"{uris['a.parquet']}: column 'c', rule unseen_category (distribution):",
        "[30 row(s)]; e.g. 'zzz' (row 1), 'zzz' (row 2), 'zzz' (row 3)",
        f"{uris['b.parquet']}: column 'x', rule type_change (integrity): expected numbers",
        "[1 row(s)]; e.g. 'abc' (row 2)",
        f"{uris['b.parquet']}: column 'label', rule unseen_label (integrity):",
        "[1 row(s)]; e.g. '5' (row 8)",
    ]
    for text in expected:
        assert text in message, text
    assert "extra_column" not in message  # warnings do not stop the run
    assert message.count("\n  - ") == 4


def test_markdown_report_holds_every_violation(
    broken: tuple[ValidationResult, dict[str, str]],
) -> None:
    result, _ = broken
    report = result.markdown()
    assert report.startswith("## Data validation: FAILED")
    assert result.summary in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + sum(max(1, len(v.files)) for v in result.violations)
    for v in result.violations:
        for file, count in (v.files or {"": v.count}).items():
            prefix = (
                f"| {v.severity} | {v.kind} | {v.rule} | {file} | {v.column or ''} | {count:,} |"
            )
            line = next((r for r in rows if r.startswith(prefix)), None)
            assert line is not None, prefix
            assert v.detail in line
            for e in v.examples:
                if e.file == file:
                    assert f"{e.row}: `{e.value!r}`" in line
    # Errors come before warnings.
    severities = [r.split("|")[1].strip() for r in rows[1:]]
    assert severities == sorted(severities, key=lambda s: s != "error")


def test_warnings_only_pass(check) -> None:
    result, _ = check(new_a(extra=pa.array([1] * 100)), with_values(new_b(), "c", {0: "new"}))
    assert {v.severity for v in result.violations} == {"warning"}
    assert result.passed
    result.raise_if_failed()
    assert "## Data validation: passed" in result.markdown()
    assert "| warning | distribution | unseen_category |" in result.markdown()


def test_violation_lines_without_files() -> None:
    v = Violation("empty_data", "error", None, 0, "the data has no rows")
    assert v.lines() == ["rule empty_data (integrity): the data has no rows"]


def test_a_first_run_on_broken_data_stores_no_schema(
    ingested, config: Config, tmp_path: Path
) -> None:
    """Inferred from data that fails its own check, v1 would carry max = inf into every later
    run: it is stored only once the data passed."""
    from ctpipe import stages

    table, _ = ingested({"a.parquet": with_values(frame(200), "x", {3: 1e308})})
    pq.write_table(table, tmp_path / "data.parquet")
    result = stages.validate(
        config, str(tmp_path / "data.parquet"), str(tmp_path / "schema"), str(tmp_path / "report")
    )
    assert not result.passed and any(v.rule == "overflow" for v in result.violations)
    assert schema.SchemaStore(config.state_dir, config.model_name).latest() is None
    clean, _ = ingested({"a.parquet": frame(200)})
    pq.write_table(clean, tmp_path / "clean.parquet")
    assert stages.validate(
        config, str(tmp_path / "clean.parquet"), str(tmp_path / "schema"), str(tmp_path / "report")
    ).passed
    assert schema.SchemaStore(config.state_dir, config.model_name).latest().version == 1
