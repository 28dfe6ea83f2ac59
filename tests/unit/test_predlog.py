"""ctpipe.predlog: the prediction log writer and reader, on disk and on S3 (moto)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctpipe import predlog
from ctpipe.errors import DataError
from ctpipe.predlog import Label, Prediction, PredictionLogWriter, reader
from ctpipe.predlog import writer as logwriter

MODEL = "churn"
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def pred(request_id: str, at: datetime = T0, **features: Any) -> Prediction:
    return Prediction(request_id, at, "7", 1, 0.75, features or {"age": 40, "plan": "pro"})


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def log_files(root: Path) -> list[Path]:
    return sorted(root.rglob("part-*.parquet"))


def ids(table: pa.Table) -> list[str]:
    return sorted(table[predlog.REQUEST_ID].to_pylist())


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"predlog-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# ------------------------------------------------------------------ round trips


def test_round_trip_local(tmp_path: Path) -> None:
    with PredictionLogWriter(str(tmp_path), MODEL) as writer:
        version = 3  # a number, as MLflow clients sometimes hand it over: stored as "3"
        writer.append(
            Prediction("a", T0, version, "yes", 0.9, {"age": 31, "plan": "pro", "vip": True})  # type: ignore[arg-type]
        )
        writer.append(
            [
                Prediction("b", T0 + timedelta(seconds=1), "3", 0, 0.2, {"age": 45.5}),
                Prediction("c", T0 + timedelta(seconds=2), "3", 2.0, None, {"plan": None}),
            ]
        )
    table = predlog.read_predictions(str(tmp_path), MODEL)

    assert table.schema.field(predlog.TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    features = table.schema.field(predlog.FEATURES).type
    assert {f.name: f.type for f in features} == {
        "age": pa.float64(),
        "plan": pa.string(),
        "vip": pa.float64(),
    }
    rows = table.to_pylist()
    assert [r["request_id"] for r in rows] == ["a", "b", "c"]
    assert [r["prediction"] for r in rows] == ["yes", "0", "2"]  # pyarrow's text of the value
    assert [r["score"] for r in rows] == [0.9, 0.2, None]
    assert {r["model_name"] for r in rows} == {MODEL}
    assert {r["model_version"] for r in rows} == {"3"}
    assert rows[0]["timestamp"] == T0
    assert rows[0]["features"] == {"age": 31.0, "plan": "pro", "vip": 1.0}
    assert rows[1]["features"] == {"age": 45.5, "plan": None, "vip": None}
    files = log_files(tmp_path)
    assert len(files) == 1
    assert files[0].parent == tmp_path / MODEL / "date=2024-03-10"
    assert not [p for p in (tmp_path / MODEL).rglob("*") if p.name.startswith(".")]


def test_round_trip_s3(s3: Any, bucket: str) -> None:
    root = f"s3://{bucket}/predictions"
    day2 = T0 + timedelta(days=1)
    with PredictionLogWriter(root, MODEL) as writer:
        writer.append([pred("a"), pred("b", day2), pred("c", day2 + timedelta(hours=1))])

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        f"predictions/{MODEL}/date=2024-03-10",
        f"predictions/{MODEL}/date=2024-03-11",
    ]
    assert ids(predlog.read_predictions(root, MODEL)) == ["a", "b", "c"]
    window = predlog.read_predictions(root, MODEL, since=day2, until=day2 + timedelta(minutes=30))
    assert ids(window) == ["b"]
    assert window.to_pylist()[0]["features"] == {"age": 40.0, "plan": "pro"}


def test_read_from_missing_bucket_is_a_data_error(s3: Any) -> None:
    with pytest.raises(DataError, match="cannot list objects"):
        predlog.read_predictions(f"s3://no-such-{uuid.uuid4().hex[:8]}/p", MODEL)


# --------------------------------------------------------------------- flushing


def test_flush_by_size(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), MODEL, max_rows=5, max_seconds=3600)
    try:
        writer.append([pred(f"r{i}") for i in range(4)])
        assert writer.pending == 4
        assert log_files(tmp_path) == []
        time.sleep(0.1)  # lets the thread settle into its long wait, so size must wake it
        assert writer.pending == 4
        writer.append(pred("r4"))
        wait_until(lambda: writer.files_written == 1, "a flush by size")
        assert writer.pending == 0
        assert len(log_files(tmp_path)) == 1
        assert ids(predlog.read_predictions(str(tmp_path), MODEL)) == [f"r{i}" for i in range(5)]
    finally:
        writer.close()


def test_flush_by_time(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), MODEL, max_rows=10_000, max_seconds=0.05)
    try:
        writer.append([pred("a"), pred("b")])
        wait_until(lambda: writer.rows_written == 2, "a flush by time")
        assert len(log_files(tmp_path)) == 1
        writer.append(pred("c"))  # the clock starts again with the next row
        wait_until(lambda: writer.rows_written == 3, "a second flush by time")
        assert len(log_files(tmp_path)) == 2  # a new file; the first is not rewritten
        assert ids(predlog.read_predictions(str(tmp_path), MODEL)) == ["a", "b", "c"]
    finally:
        writer.close()


def test_flush_on_close_is_idempotent(tmp_path: Path) -> None:
    writer = PredictionLogWriter(str(tmp_path), MODEL, max_seconds=3600)
    writer.append([pred("a"), pred("b")])
    assert log_files(tmp_path) == []
    writer.close()
    assert writer.closed
    assert writer.rows_written == 2
    writer.close()
    assert len(log_files(tmp_path)) == 1
    with pytest.raises(ValueError, match="closed"):
        writer.append(pred("c"))
    assert ids(predlog.read_predictions(str(tmp_path), MODEL)) == ["a", "b"]


def test_explicit_flush_and_empty_flush(tmp_path: Path) -> None:
    with PredictionLogWriter(str(tmp_path), MODEL, max_seconds=3600) as writer:
        assert writer.flush() == 0
        writer.append(pred("a"))
        assert writer.flush() == 1
        assert writer.pending == 0
    assert len(log_files(tmp_path)) == 1


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    threads, per_thread = 8, 400
    writer = PredictionLogWriter(str(tmp_path), MODEL, max_rows=50, max_seconds=0.01)
    start = threading.Barrier(threads)

    def produce(n: int) -> None:
        start.wait()
        for i in range(0, per_thread, 4):
            if i == per_thread // 2:  # flushes must run while threads are still appending
                wait_until(lambda: writer.files_written >= 1, "a flush between appends")
            if i % 8:
                writer.append(pred(f"t{n}-{i + k}") for k in range(4))
            else:
                for k in range(4):
                    writer.append(pred(f"t{n}-{i + k}"))

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.close()

    logged = predlog.read_predictions(str(tmp_path), MODEL)[predlog.REQUEST_ID].to_pylist()
    expected = {f"t{n}-{i}" for n in range(threads) for i in range(per_thread)}
    assert len(logged) == len(expected) == writer.rows_written
    assert set(logged) == expected  # every id exactly once
    assert len(log_files(tmp_path)) == writer.files_written > 1


def test_failed_flush_keeps_rows_until_the_bucket_exists(s3: Any) -> None:
    name = f"later-{uuid.uuid4().hex[:12]}"
    root = f"s3://{name}/log"
    writer = PredictionLogWriter(root, MODEL, max_seconds=3600)
    try:
        writer.append([pred("a"), pred("b"), pred("c")])
        with pytest.raises(DataError, match=rf"{name}.*3 rows wait in memory only \(no journal\)"):
            writer.flush()
        assert writer.pending == 3
        assert writer.failed_flushes == 1
        assert writer.last_error and name in writer.last_error

        s3.create_bucket(Bucket=name)
        writer.append(pred("d"))
        assert writer.flush() == 4
        assert writer.failed_flushes == 0
    finally:
        writer.close()
    assert ids(predlog.read_predictions(root, MODEL)) == ["a", "b", "c", "d"]


def test_background_flush_retries_after_a_failure(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"later-{uuid.uuid4().hex[:12]}"
    root = f"s3://{name}/log"
    caplog.set_level(logging.WARNING, logger=logwriter.__name__)
    writer = PredictionLogWriter(root, MODEL, max_seconds=0.05)
    try:
        writer.append([pred("a"), pred("b")])
        wait_until(lambda: writer.failed_flushes >= 1, "a failed background flush")
        assert writer.pending == 2
        wait_until(
            lambda: any("2 rows wait in memory only" in r.getMessage() for r in caplog.records),
            "the warning about the kept rows",
        )

        s3.create_bucket(Bucket=name)
        wait_until(lambda: writer.rows_written == 2, "the retry after the bucket appeared")
        assert writer.failed_flushes == 0
    finally:
        writer.close()
    assert ids(predlog.read_predictions(root, MODEL)) == ["a", "b"]


def test_failing_writes_back_off_and_close_retries(tmp_path: Path) -> None:
    blocker = tmp_path / "root"
    blocker.write_text("a file where the log's folder should be")
    writer = PredictionLogWriter(str(blocker), MODEL, max_rows=1, max_seconds=3600)
    writer.append(pred("a"))
    wait_until(lambda: writer.failed_flushes >= 1, "the first failed flush")
    writer.append(pred("b"))  # over max_rows, but the writer waits out its back-off
    time.sleep(0.3)
    assert writer.failed_flushes == 1
    assert writer.pending == 2

    with pytest.raises(
        DataError, match=r"2 rows could not be written at close.*2 of them are in memory only"
    ):
        writer.close()
    assert writer.pending == 2

    blocker.unlink()
    writer.close()  # again: retries what the failed close kept
    assert writer.pending == 0
    assert ids(predlog.read_predictions(str(blocker), MODEL)) == ["a", "b"]


# ---------------------------------------------------------------------- reading


def write_days(root: Path) -> None:
    rows = [
        pred("d1-2300", datetime(2024, 3, 9, 23, 0, tzinfo=UTC)),
        pred("d2-0030", datetime(2024, 3, 10, 0, 30, tzinfo=UTC)),
        pred("d2-1200", datetime(2024, 3, 10, 12, 0, tzinfo=UTC)),
        pred("d3-0100", datetime(2024, 3, 11, 1, 0, tzinfo=UTC)),
    ]
    with PredictionLogWriter(str(root), MODEL) as writer:
        writer.append(rows)


def test_one_flush_writes_one_file_per_date(tmp_path: Path) -> None:
    write_days(tmp_path)
    assert [p.parent.name for p in log_files(tmp_path)] == [
        "date=2024-03-09",
        "date=2024-03-10",
        "date=2024-03-11",
    ]


def test_time_window_is_half_open(tmp_path: Path) -> None:
    write_days(tmp_path)
    read = predlog.read_predictions
    day2 = datetime(2024, 3, 10, tzinfo=UTC)
    assert ids(read(str(tmp_path), MODEL, since=day2, until=day2 + timedelta(days=1))) == [
        "d2-0030",
        "d2-1200",
    ]
    window = read(
        str(tmp_path),
        MODEL,
        since=datetime(2024, 3, 10, 0, 30),  # naive: UTC
        until=datetime(2024, 3, 10, 12, 0),
    )
    assert ids(window) == ["d2-0030"]
    assert ids(read(str(tmp_path), MODEL, since=datetime(2024, 3, 10, 12, tzinfo=UTC))) == [
        "d2-1200",
        "d3-0100",
    ]
    assert ids(read(str(tmp_path), MODEL, until=day2)) == ["d1-2300"]
    # Another zone is the same instant.
    plus_two = datetime(2024, 3, 10, 2, 0, tzinfo=ZoneInfo("Etc/GMT-2"))
    assert ids(read(str(tmp_path), MODEL, since=plus_two, until=day2 + timedelta(hours=1))) == [
        "d2-0030"
    ]
    timestamps = read(str(tmp_path), MODEL)[predlog.TIMESTAMP].to_pylist()
    assert timestamps == sorted(timestamps)


@pytest.mark.parametrize("days_wide", [1, reader.PREFIX_LISTING_MAX_DAYS + 30])
def test_reads_open_only_the_date_folders_of_the_window(tmp_path: Path, days_wide: int) -> None:
    write_days(tmp_path)
    # A corrupt file in a folder outside the window: reading it would fail.
    corrupt = tmp_path / MODEL / "date=2024-03-09" / "part-corrupt.parquet"
    corrupt.write_bytes(b"not parquet")
    until = datetime(2024, 3, 11, 12, tzinfo=UTC)
    window = predlog.read_predictions(
        str(tmp_path), MODEL, since=datetime(2024, 3, 10, tzinfo=UTC), until=until
    )
    assert ids(window) == ["d2-0030", "d2-1200", "d3-0100"]
    wide = predlog.read_predictions(
        str(tmp_path),
        MODEL,
        since=datetime(2024, 3, 10, tzinfo=UTC),
        until=until + timedelta(days=days_wide),
    )
    assert ids(wide) == ["d2-0030", "d2-1200", "d3-0100"]

    with pytest.raises(DataError, match=r"part-corrupt\.parquet.*not a readable Parquet"):
        predlog.read_predictions(str(tmp_path), MODEL)


def test_empty_reads_have_the_log_schema(tmp_path: Path) -> None:
    nothing = predlog.read_predictions(str(tmp_path / "missing"), MODEL)
    assert nothing.num_rows == 0
    assert nothing.column_names == [
        *predlog.REQUIRED_PREDICTION_COLUMNS,
        predlog.ROLE,
        predlog.FEATURES,
    ]
    assert list(predlog.ALL_PREDICTION_COLUMNS) == nothing.column_names
    assert nothing.schema.field(predlog.TIMESTAMP).type == predlog.TIMESTAMP_TYPE

    write_days(tmp_path)
    no_files = predlog.read_predictions(str(tmp_path), MODEL, since=datetime(2025, 1, 1))
    assert no_files.num_rows == 0
    assert no_files.schema == nothing.schema
    # Files read, every row filtered out: their features stay in the schema.
    no_rows = predlog.read_predictions(str(tmp_path), MODEL, since=datetime(2024, 3, 11, 5))
    assert no_rows.num_rows == 0
    assert no_rows.schema.field(predlog.FEATURES).type == pa.struct(
        [("age", pa.float64()), ("plan", pa.string())]
    )
    assert predlog.read_labels(str(tmp_path / "missing"), MODEL).schema == predlog.LABEL_SCHEMA


def test_files_missing_required_columns_are_named(tmp_path: Path) -> None:
    bad = tmp_path / MODEL / "date=2024-03-10" / "part-bad.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a"], "timestamp": [T0], "features": [{"x": 1}]}), bad)
    with pytest.raises(DataError) as info:
        predlog.read_predictions(str(tmp_path), MODEL)
    message = str(info.value)
    assert str(bad) in message
    assert "missing required column(s): model_name, model_version, prediction, score" in message

    labels = tmp_path / "labels" / MODEL / "part-bad.parquet"
    labels.parent.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a"], "outcome": [1]}), labels)
    with pytest.raises(DataError, match=r"part-bad\.parquet: label file is missing .*: label"):
        predlog.read_labels(str(tmp_path / "labels"), MODEL)


def test_bad_label_values_are_named(tmp_path: Path) -> None:
    labels = tmp_path / MODEL / "part-x.parquet"
    labels.parent.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a", None], "label": [1, 0]}), labels)
    with pytest.raises(DataError, match=r"part-x\.parquet: column 'request_id' is empty in 1"):
        predlog.read_labels(str(tmp_path), MODEL)


def test_features_unify_across_files_and_flatten(tmp_path: Path) -> None:
    with PredictionLogWriter(str(tmp_path), MODEL) as writer:
        writer.append(Prediction("a", T0, "1", 0, 0.1, {"zip": 1234, "age": 30}))
    with PredictionLogWriter(str(tmp_path), MODEL) as writer:
        writer.append(Prediction("b", T0, "1", 0, 0.1, {"zip": "SW1A", "city": "x"}))
    with PredictionLogWriter(str(tmp_path), MODEL) as writer:
        writer.append(Prediction("c", T0, "1", 0, 0.1, {}))  # a file without features
    table = predlog.read_predictions(str(tmp_path), MODEL).sort_by("request_id")

    flat = predlog.features_table(table)
    assert flat.num_rows == 3
    assert dict(zip(flat.column_names, flat.schema.types, strict=True)) == {
        "zip": pa.string(),  # text in one file: text everywhere
        "age": pa.float64(),
        "city": pa.string(),
    }
    assert flat.to_pylist() == [
        {"zip": "1234", "age": 30.0, "city": None},
        {"zip": "SW1A", "age": None, "city": "x"},
        {"zip": None, "age": None, "city": None},
    ]
    # A feature named like one of our columns stays inside the struct.
    with PredictionLogWriter(str(tmp_path / "clash"), MODEL) as writer:
        writer.append(Prediction("d", T0, "1", 0, 0.5, {"score": 3, "request_id": "x"}))
    clash = predlog.read_predictions(str(tmp_path / "clash"), MODEL)
    assert clash[predlog.SCORE].to_pylist() == [0.5]
    assert predlog.features_table(clash).to_pylist() == [{"score": 3.0, "request_id": "x"}]


def test_prediction_checks_its_fields() -> None:
    naive = Prediction("a", datetime(2024, 1, 1, 12), "1", "x", 1)
    assert naive.timestamp == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert naive.score == 1.0
    with pytest.raises(TypeError, match="score"):
        Prediction("a", T0, "1", "x", "high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timestamp"):
        Prediction("a", "2024-01-01", "1", "x", 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request_id"):
        Prediction("", T0, "1", "x", 0.1)
    features = {"a": 1}
    record = Prediction("a", T0, "1", "x", 0.1, features)
    features["a"] = 2
    assert record.features == {"a": 1}  # copied: the caller may reuse its dict


# ------------------------------------------------------------------------ labels


def test_join_labels_counts_and_drops_identical_duplicates(tmp_path: Path) -> None:
    labels_root = str(tmp_path / "labels")
    with PredictionLogWriter(str(tmp_path / "log"), MODEL) as writer:
        writer.append(
            [Prediction(f"p{i}", T0 + timedelta(minutes=i), "1", i % 2, 0.5) for i in range(6)]
        )
    later = T0 + timedelta(hours=2)
    predlog.write_labels(
        labels_root,
        MODEL,
        [
            Label("p0", 1, later),  # the later copy, written first
            Label("p1", 1, T0),
            Label("p2", 0),  # no labelled_at: older than any dated label
            Label("u1", 1, T0),
            Label("u2", 0, T0),
        ],
    )
    # The same outcomes again (a label job that ran twice): harmless.
    predlog.write_labels(labels_root, MODEL, [Label("p0", 1, T0), Label("p2", 0, T0)])
    # A label file from elsewhere: integer labels and no labelled_at column.
    foreign = tmp_path / "labels" / MODEL / "upstream" / "export.parquet"
    foreign.parent.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["p3"], "label": [1]}), foreign)

    labels = predlog.read_labels(labels_root, MODEL)
    assert labels.num_rows == 8
    joined = predlog.join_labels(predlog.read_predictions(str(tmp_path / "log"), MODEL), labels)

    assert (joined.labelled, joined.unlabelled) == (4, 2)
    assert joined.duplicate_labels == 2
    assert joined.unmatched == 2
    assert sorted(joined.unmatched_examples) == ["u1", "u2"]
    rows = {r["request_id"]: r for r in joined.table.to_pylist()}
    assert {k: (r["prediction"], r["label"]) for k, r in rows.items()} == {
        "p0": ("0", "1"),
        "p1": ("1", "1"),
        "p2": ("0", "0"),
        "p3": ("1", "1"),  # integer 1 reads as "1", like the prediction
    }
    assert rows["p0"]["labelled_at"] == later  # of identical copies, the latest is kept
    assert rows["p2"]["labelled_at"] == T0  # a dated copy beats an undated one
    assert joined.table.column_names[-2:] == [predlog.LABEL, predlog.LABELLED_AT]

    with pytest.raises(DataError, match=r"2 labels match no logged prediction.*u1"):
        joined.raise_if_unmatched()


def test_labels_that_disagree_are_an_error_naming_ids_and_files(tmp_path: Path) -> None:
    """Issue 15: a relabel used to win silently (the latest labelled_at); a request has one
    true outcome, so two different labels for it mean one of them is wrong."""
    root = str(tmp_path / "labels")
    first = predlog.write_labels(
        root, MODEL, [Label("a", 1, T0), Label("b", 0, T0), Label("c", "x", T0)]
    )
    second = predlog.write_labels(
        root, MODEL, [Label("a", 0, T0 + timedelta(hours=1)), Label("b", 0), Label("c", "y")]
    )
    assert first and second
    with pytest.raises(DataError) as info:
        predlog.read_labels(root, MODEL)
    message = str(info.value)
    assert "2 request ids have labels that disagree" in message
    assert f"a: '1' in {first}, '0' in {second}" in message
    assert f"c: 'x' in {first}, 'y' in {second}" in message
    assert "b:" not in message  # the same label twice is fine

    table = pa.table({"request_id": ["a", "a"], "label": ["1", "0"]})
    with pytest.raises(DataError, match=r"1 request ids have labels that disagree.*a: '1'"):
        predlog.join_labels(pa.table({"request_id": ["a"]}), table)


def test_join_without_unmatched_labels_passes() -> None:
    predictions = pa.table({"request_id": ["a", "b"], "prediction": ["1", "0"]})
    labels = pa.table({"request_id": ["a", "a"], "label": ["0", "0"]})
    joined = predlog.join_labels(predictions, labels)
    joined.raise_if_unmatched()
    assert (joined.labelled, joined.unlabelled, joined.unmatched) == (1, 1, 0)
    assert joined.duplicate_labels == 1
    assert joined.table["label"].to_pylist() == ["0"]

    many = pa.table({"request_id": [f"x{i}" for i in range(9)], "label": ["1"] * 9})
    result = predlog.join_labels(predictions, many)
    assert result.unmatched == 9
    assert len(result.unmatched_examples) == reader.UNMATCHED_EXAMPLES


def test_write_labels_to_s3_and_nothing_to_write(s3: Any, bucket: str) -> None:
    root = f"s3://{bucket}/labels"
    assert predlog.write_labels(root, MODEL, []) is None
    uri = predlog.write_labels(root, MODEL, [Label("a", "yes", T0)])
    assert uri is not None and uri.startswith(f"{root}/{MODEL}/part-")
    assert predlog.read_labels(root, MODEL).to_pylist() == [
        {"request_id": "a", "label": "yes", "labelled_at": T0}
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2.5, None, True], [1.0, 2.5, None, 1.0]),
        ([1, "one"], ["1", "one"]),  # mixed types: text, value by value
        ([None, None], [None, None]),
        ([2**40, -3], [float(2**40), -3.0]),
        ([[1, 2], [3]], [predlog.prediction_text([1, 2]), predlog.prediction_text([3])]),
    ],
)
def test_a_feature_column_is_numbers_or_text(values: list[Any], expected: list[Any]) -> None:
    assert predlog.feature_array(values).to_pylist() == expected


def test_a_request_batch_and_single_rows_land_in_one_table(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    batch = predlog.PredictionBatch(
        ["b-0", "b-1"],
        now,
        3,  # type: ignore[arg-type]  # a number, as MLflow clients sometimes hand it over
        ["yes", "no"],
        [0.9, 0.1],
        {"x": [1.0, None], "c": ["a", "b"]},
    )
    single = Prediction("s-0", now, "3", "yes", 0.7, {"x": 2.0, "extra": 5})
    with PredictionLogWriter(str(tmp_path), "m", max_rows=100, max_seconds=60) as writer:
        writer.append(batch)
        writer.append(single)
        assert writer.pending == 3
    table = predlog.read_predictions(str(tmp_path), "m")
    assert table.column(predlog.REQUEST_ID).to_pylist() == ["b-0", "b-1", "s-0"]
    assert table.column(predlog.MODEL_VERSION).to_pylist() == ["3", "3", "3"]
    assert table.column(predlog.SCORE).to_pylist() == [0.9, 0.1, 0.7]
    features = table.column(predlog.FEATURES).to_pylist()
    assert features == [
        {"x": 1.0, "c": "a", "extra": None},
        {"x": None, "c": "b", "extra": None},
        {"x": 2.0, "c": None, "extra": 5.0},
    ]


def test_a_bad_batch_fails_the_request_that_made_it() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="every column must hold 2 rows"):
        predlog.PredictionBatch(["a", "b"], now, "1", ["x"], [0.1, 0.2])
    with pytest.raises(TypeError, match="request_ids must be non-empty strings"):
        predlog.PredictionBatch(["a", ""], now, "1", ["x", "y"], [0.1, 0.2])
    with pytest.raises(TypeError, match="scores must be numbers"):
        predlog.PredictionBatch(["a"], now, "1", ["x"], [True])
    with pytest.raises(TypeError, match="timestamp must be a datetime"):
        predlog.PredictionBatch(["a"], "noon", "1", ["x"], [0.1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values", [[1, 2, None], ["a", None], [True, False], [1.5, None], [1, "a"], [None, None]]
)
def test_prediction_text_of_a_column_matches_value_by_value(values: list[Any]) -> None:
    expected = [predlog.prediction_text(v) for v in values]
    assert predlog.text_array(values).to_pylist() == expected


# ------------------------------------------------ issue 15: dataset reads, duplicates


def test_a_request_id_logged_twice_counts_once(tmp_path: Path) -> None:
    """Before: a request id logged twice was two rows, counted twice toward
    policy.min_new_rows (and matched its label twice)."""
    root = str(tmp_path / "log")
    with PredictionLogWriter(root, MODEL) as writer:
        writer.append([pred("a", T0 + timedelta(minutes=5)), pred("b", T0)])
    with PredictionLogWriter(root, MODEL) as writer:  # the same ids again, from elsewhere
        writer.append(
            [
                Prediction("a", T0, "7", 0, 0.1, {"age": 1}),  # earlier: this one is first
                Prediction("b", T0 + timedelta(days=1), "7", 0, 0.1, {}),  # another day
            ]
        )
    table = predlog.read_predictions(root, MODEL)
    rows = {r["request_id"]: (r["prediction"], r["timestamp"]) for r in table.to_pylist()}
    assert table.num_rows == 2
    assert rows == {"a": ("0", T0), "b": ("1", T0)}  # each id's first prediction

    predlog.write_labels(str(tmp_path / "labels"), MODEL, [Label("a", 1), Label("b", 1)])
    joined = predlog.join_labels(table, predlog.read_labels(str(tmp_path / "labels"), MODEL))
    assert (joined.labelled, joined.unlabelled, joined.unmatched) == (2, 0, 0)

    window = predlog.read_predictions(root, MODEL, since=T0 + timedelta(hours=12))
    assert window[predlog.REQUEST_ID].to_pylist() == ["b"]  # only what the window holds


def test_a_window_is_one_dataset_scan_with_column_projection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every file was read whole, one by one. Now one pyarrow.dataset scan reads the
    columns asked for."""
    write_days(tmp_path)

    def file_by_file(uri: str) -> pa.Table:
        raise AssertionError(f"{uri} was read on its own")

    monkeypatch.setattr(reader, "_read_prediction_file", file_by_file)
    table = predlog.read_predictions(
        str(tmp_path),
        MODEL,
        since=datetime(2024, 3, 10, tzinfo=UTC),
        columns=[predlog.SCORE, predlog.REQUEST_ID],
    )
    assert table.column_names == [predlog.SCORE, predlog.REQUEST_ID]
    assert table[predlog.REQUEST_ID].to_pylist() == ["d2-0030", "d2-1200", "d3-0100"]
    with pytest.raises(ValueError, match="unknown prediction log column"):
        predlog.read_predictions(str(tmp_path), MODEL, columns=["label"])


def test_a_file_the_scan_cannot_cast_is_read_on_its_own(tmp_path: Path) -> None:
    """Files from elsewhere: nanosecond stamps (cut to microseconds, as before) and an
    integer request id; a real type error still names the file."""
    folder = tmp_path / MODEL / "date=2024-03-10"
    folder.mkdir(parents=True)
    stamp = pa.array([1710072000123456789], pa.timestamp("ns", tz="UTC"))
    pq.write_table(
        pa.table(
            {
                "request_id": pa.array([7], pa.int64()),
                "timestamp": stamp,
                "model_name": [MODEL],
                "model_version": ["1"],
                "prediction": ["x"],
                "score": [0.5],
            }
        ),
        folder / "part-foreign.parquet",
    )
    table = predlog.read_predictions(str(tmp_path), MODEL)
    assert table[predlog.REQUEST_ID].to_pylist() == ["7"]
    assert table[predlog.TIMESTAMP].to_pylist() == [
        datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
    ]

    pq.write_table(
        pa.table(
            {
                "request_id": ["y"],
                "timestamp": ["noon"],
                "model_name": [MODEL],
                "model_version": ["1"],
                "prediction": ["x"],
                "score": [0.5],
            }
        ),
        folder / "part-text-stamps.parquet",
    )
    with pytest.raises(DataError, match=r"part-text-stamps\.parquet: column 'timestamp'"):
        predlog.read_predictions(str(tmp_path), MODEL)


def test_reading_sorts_by_time_copying_only_what_moves() -> None:
    from ctpipe.predlog.format import by_time, rows_where

    stamps = [0, 1, 2, 10, 11, 5, 6, 20, 21]
    table = pa.table(
        {
            predlog.TIMESTAMP: pa.array(stamps, pa.int64()).cast(predlog.TIMESTAMP_TYPE),
            "i": range(9),
        }
    )
    ordered = by_time(table)
    assert ordered["i"].to_pylist() == [0, 1, 2, 5, 6, 3, 4, 7, 8]
    assert by_time(ordered.combine_chunks()) is not None
    same = pa.table(
        {predlog.TIMESTAMP: pa.array([0, 0, 1], pa.int64()).cast(predlog.TIMESTAMP_TYPE)}
    )
    assert by_time(same) is same
    import numpy as np

    kept = rows_where(table, np.array([1, 1, 0, 0, 1, 1, 1, 0, 1], bool))
    assert kept["i"].to_pylist() == [0, 1, 4, 5, 6, 8]


def test_a_check_reads_the_history_without_features_and_the_window_with_them(
    tmp_path: Path,
) -> None:
    with PredictionLogWriter(str(tmp_path), MODEL) as writer:
        writer.append(
            [
                pred("old", T0 - timedelta(days=3)),
                pred("twice", T0 - timedelta(days=2)),  # first logged before the window
                pred("twice", T0 - timedelta(hours=1)),  # again inside it
                pred("new", T0 - timedelta(minutes=5)),
                pred("future", T0 + timedelta(minutes=5)),
            ]
        )
    history, window = predlog.read_history_and_window(
        str(tmp_path), MODEL, now=T0, window=timedelta(days=1)
    )
    # each id once (the first kept), in time order
    assert history[predlog.REQUEST_ID].to_pylist() == ["old", "twice", "new"]
    assert predlog.FEATURES not in history.column_names
    assert history[predlog.TIMESTAMP][1].as_py() == T0 - timedelta(days=2)
    assert window[predlog.REQUEST_ID].to_pylist() == ["twice", "new"]
    assert predlog.FEATURES in window.column_names
    assert predlog.features_table(window).num_rows == 2
