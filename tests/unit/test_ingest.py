"""ctpipe.data.ingest: CSV / Parquet / JSON Lines, local and s3://, into one table."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ctpipe.config import Config
from ctpipe.data import ingest, synthetic, tables
from ctpipe.data.tables import FILE_COLUMN, ROW_COLUMN
from ctpipe.errors import DataError
from tests.conftest import make_config

ROWS = 240
DATA_COLUMNS = [
    "request_id",
    "event_time",
    *(f"num_{i}" for i in range(8)),
    "region",
    "channel",
    "device",
    "label",
]


def config_for(tmp_path: Path, uri: str | Path, **data: Any) -> Config:
    return make_config(tmp_path / "state", data={"uri": str(uri), **data})


def run(config: Config, tmp_path: Path) -> tuple[ingest.IngestResult, pa.Table]:
    out = tmp_path / f"ingested-{uuid.uuid4().hex[:8]}.parquet"
    result = ingest.ingest(config, str(out))
    return result, tables.read(str(out))


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def rows() -> pa.Table:
    return synthetic.generate(ROWS, 11)


# ------------------------------------------------------------------------ formats


def test_all_formats_give_the_same_content(tmp_path: Path, rows: pa.Table) -> None:
    results = {}
    for ext in ("csv", "parquet", "jsonl"):
        path = tmp_path / "data" / f"rows.{ext}"
        synthetic.write(rows, str(path))
        results[ext] = run(config_for(tmp_path, path), tmp_path)
    hashes = {ext: r.content_hash for ext, (r, _) in results.items()}
    assert len(set(hashes.values())) == 1, hashes
    for ext, (result, table) in results.items():
        assert result.rows == ROWS == table.num_rows, ext
        assert list(result.columns) == DATA_COLUMNS, ext
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC"), ext
        assert result.content_hash.startswith("sha256:")
        assert result.content_hash == ingest.content_hash(table)
    # And the content is the generated rows themselves.
    _, table = results["jsonl"]
    assert table.select(DATA_COLUMNS).replace_schema_metadata(None).equals(rows)


def test_result_metadata(tmp_path: Path, rows: pa.Table) -> None:
    path = tmp_path / "rows.parquet"
    synthetic.write(rows, str(path))
    result, _ = run(config_for(tmp_path, path), tmp_path)
    times = rows.column("event_time")
    assert result.time_min == pc.min(times).as_py().isoformat()
    assert result.time_max == pc.max(times).as_py().isoformat()
    assert result.files == (str(path),)
    assert result.source == str(path)
    meta = result.metadata()
    assert meta["rows"] == ROWS and meta["files"] == 1 and meta["rows_outside_window"] == 0
    assert meta["content_hash"] == result.content_hash
    assert f"read {ROWS:,} rows x {len(DATA_COLUMNS)} columns from {path}" in result.describe()


def test_content_hash_changes_with_content(tmp_path: Path, rows: pa.Table) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    synthetic.write(rows, str(a))
    changed = rows.set_column(
        rows.column_names.index("label"),
        "label",
        pc.subtract(pa.scalar(1, pa.int64()), rows.column("label")),
    )
    synthetic.write(changed, str(b))
    assert run(config_for(tmp_path, a), tmp_path)[0].content_hash != (
        run(config_for(tmp_path, b), tmp_path)[0].content_hash
    )


def test_explicit_format_overrides_the_extension(tmp_path: Path, rows: pa.Table) -> None:
    path = tmp_path / "rows.csv"
    synthetic.write(rows, str(path))
    renamed = path.rename(tmp_path / "rows.dat")
    result, _ = run(config_for(tmp_path, renamed, format="csv"), tmp_path)
    assert result.rows == ROWS
    with pytest.raises(DataError, match="cannot tell the format from the extension"):
        run(config_for(tmp_path, renamed), tmp_path)


def test_synthetic_source_when_no_uri(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", data={"synthetic": {"rows": 150, "seed": 5}})
    result, table = run(config, tmp_path)
    assert result.rows == 150
    assert result.source == "synthetic(rows=150, seed=5)"
    assert set(table.column(FILE_COLUMN).to_pylist()) == {result.source}
    assert result.content_hash == ingest.content_hash(synthetic.generate(150, 5))


# ---------------------------------------------------------------- several files


def test_directory_of_several_files(tmp_path: Path, rows: pa.Table) -> None:
    root = tmp_path / "data"
    # Three files in three formats; sorted by name they hold the rows in order.
    synthetic.write(rows.slice(0, 80), str(root / "part-0.csv"))
    synthetic.write(rows.slice(80, 90), str(root / "part-1.parquet"))
    synthetic.write(rows.slice(170), str(root / "sub" / "part-2.jsonl"))
    (root / "_SUCCESS").write_text("")
    (root / "README.txt").write_text("not data")
    result, table = run(config_for(tmp_path, root), tmp_path)
    files = (
        str(root / "part-0.csv"),
        str(root / "part-1.parquet"),
        str(root / "sub" / "part-2.jsonl"),
    )
    assert result.files == files
    assert result.rows == ROWS
    assert f"3 file(s) under {root}" in result.describe()

    single = tmp_path / "all.parquet"
    synthetic.write(rows, str(single))
    assert result.content_hash == run(config_for(tmp_path, single), tmp_path)[0].content_hash

    # Provenance: every row names its file and its row there, counting from 1.
    assert (
        table.column(FILE_COLUMN).to_pylist() == [files[0]] * 80 + [files[1]] * 90 + [files[2]] * 70
    )
    assert table.column(ROW_COLUMN).to_pylist() == [
        *range(1, 81),
        *range(1, 91),
        *range(1, 71),
    ]
    ids = table.column("request_id").to_pylist()
    assert ids[80] == rows.column("request_id")[80].as_py()
    assert table.column(ROW_COLUMN)[80].as_py() == 1
    assert [(f.uri, f.rows) for f in tables.file_infos(table)] == [
        (files[0], 80),
        (files[1], 90),
        (files[2], 70),
    ]
    assert tables.data_columns(table) == DATA_COLUMNS


def test_glob_selects_files(tmp_path: Path, rows: pa.Table) -> None:
    root = tmp_path / "data"
    synthetic.write(rows.slice(0, 100), str(root / "2026-01.csv"))
    synthetic.write(rows.slice(100), str(root / "2026-02.csv"))
    synthetic.write(rows, str(root / "2026-01.parquet"))
    result, _ = run(config_for(tmp_path, root / "*.csv"), tmp_path)
    assert result.rows == ROWS
    assert result.files == (str(root / "2026-01.csv"), str(root / "2026-02.csv"))


def test_disagreeing_types_become_text(tmp_path: Path) -> None:
    root = tmp_path / "data"
    first = write_csv(
        root / "a.csv",
        "event_time,label,amount\n2026-01-01T00:00:00Z,1,1.5\n2026-01-02T00:00:00Z,0,2\n",
    )
    second = write_csv(
        root / "b.csv",
        "event_time,label,amount\n2026-01-03T00:00:00Z,1,3.25\n2026-01-04T00:00:00Z,0,abc\n",
    )
    assert ingest.read_file(str(first)).schema.field("amount").type == pa.float64()
    assert ingest.read_file(str(second)).schema.field("amount").type == pa.string()
    _, table = run(config_for(tmp_path, root), tmp_path)
    assert table.schema.field("amount").type == pa.string()
    assert table.column("amount").to_pylist() == ["1.5", "2", "3.25", "abc"]
    assert table.column("label").to_pylist() == [1, 0, 1, 0]
    assert table.schema.field("label").type == pa.int64()


def test_integer_and_float_files_widen_to_float(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_csv(root / "a.csv", "event_time,label,x\n2026-01-01,1,1\n2026-01-02,0,2\n")
    (root / "b.jsonl").write_text('{"event_time": "2026-01-03", "label": 1, "x": 2.5}\n')
    _, table = run(config_for(tmp_path, root), tmp_path)
    assert table.schema.field("x").type == pa.float64()
    assert table.column("x").to_pylist() == [1.0, 2.0, 2.5]


def test_file_lacking_a_column_gets_nulls(tmp_path: Path, rows: pa.Table) -> None:
    root = tmp_path / "data"
    synthetic.write(rows.slice(0, 100), str(root / "a.parquet"))
    synthetic.write(rows.slice(100).drop_columns(["channel", "num_3"]), str(root / "b.parquet"))
    result, table = run(config_for(tmp_path, root), tmp_path)
    assert result.rows == ROWS
    assert "channel" in result.columns and "num_3" in result.columns
    channel = table.column("channel")
    assert channel.slice(0, 100).null_count == 0
    assert channel.slice(100).null_count == ROWS - 100
    assert table.column("num_3").slice(100).null_count == ROWS - 100
    infos = {f.uri: f for f in tables.file_infos(table)}
    assert "channel" in infos[str(root / "a.parquet")].columns
    assert "channel" not in infos[str(root / "b.parquet")].columns
    assert "num_3" not in infos[str(root / "b.parquet")].columns
    assert infos[str(root / "b.parquet")].rows == ROWS - 100


def test_file_with_an_extra_column(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_csv(root / "a.csv", "event_time,label\n2026-01-01,1\n")
    write_csv(root / "b.csv", "event_time,label,new\n2026-01-02,0,x\n")
    _, table = run(config_for(tmp_path, root), tmp_path)
    assert table.column("new").to_pylist() == [None, "x"]


# ------------------------------------------------------------------------ errors


def test_empty_file_names_the_file(tmp_path: Path, rows: pa.Table) -> None:
    root = tmp_path / "data"
    synthetic.write(rows, str(root / "a.csv"))
    empty = root / "b.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as info:
        run(config_for(tmp_path, root), tmp_path)
    assert str(empty) in str(info.value)
    assert "empty (0 bytes)" in str(info.value)


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "data" / "bad.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 this is not really parquet PAR1")
    with pytest.raises(DataError) as info:
        run(config_for(tmp_path, bad), tmp_path)
    assert str(info.value).startswith(f"{bad}: not a readable Parquet file")


def test_truncated_parquet_names_the_file(tmp_path: Path, rows: pa.Table) -> None:
    path = tmp_path / "cut.parquet"
    synthetic.write(rows, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable Parquet file")):
        run(config_for(tmp_path, path), tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "label"),
    [
        ("bad.csv", "a,b\n1,2\n3\n", "CSV"),
        ("bad.jsonl", '{"a": 1}\n{"a": \n', "JSON Lines"),
    ],
)
def test_malformed_text_files_name_the_file(
    tmp_path: Path, name: str, text: str, label: str
) -> None:
    path = write_csv(tmp_path / name, text)
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable {label} file")):
        ingest.read_file(str(path))


def test_no_matching_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("hello")
    (root / "_SUCCESS").write_text("")
    for uri in (root, root / "*.csv", tmp_path / "missing.csv"):
        with pytest.raises(DataError) as info:
            run(config_for(tmp_path, uri), tmp_path)
        assert str(info.value).startswith(f"{uri}: no data files found")
        assert ".csv" in str(info.value) and ".parquet" in str(info.value)


def test_missing_timestamp_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "when,label\n2026-01-01,1\n")
    with pytest.raises(DataError) as info:
        run(config_for(tmp_path, path), tmp_path)
    assert str(path) in str(info.value)
    assert "'event_time'" in str(info.value) and "when" in str(info.value)


def test_unparseable_timestamps_name_file_and_row(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_csv(root / "a.csv", "event_time,label\n2026-01-01T00:00:00Z,1\n2026-01-02T00:00:00Z,0\n")
    bad = write_csv(
        root / "b.csv",
        "event_time,label\n2026-01-03T00:00:00Z,1\nyesterday,0\n2026-01-05T00:00:00Z,1\n31/01/2026,0\n",
    )
    with pytest.raises(DataError) as info:
        run(config_for(tmp_path, root), tmp_path)
    message = str(info.value)
    assert "'event_time'" in message
    assert "2 value(s)" in message
    assert f"{bad} row 2: 'yesterday'" in message
    assert f"{bad} row 4: '31/01/2026'" in message
    assert "a.csv" not in message


def test_text_timestamps_with_offsets_and_blanks(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        "event_time,label\n2026-01-01T02:00:00+02:00,1\n2026-01-01 05:30:00,0\n,1\nbad-one,0\n",
    )
    with pytest.raises(DataError, match="row 4: 'bad-one'"):
        run(config_for(tmp_path, path), tmp_path)
    path.write_text("event_time,label\n2026-01-01T02:00:00+02:00,1\n2026-01-01 05:30:00,0\n,1\n")
    _, table = run(config_for(tmp_path, path), tmp_path)
    assert table.column("event_time").to_pylist() == [
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 5, 30, tzinfo=UTC),
        None,
    ]


def test_numeric_timestamps_are_epoch_seconds(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "event_time,label\n0,1\n1767225600.5,0\n")
    _, table = run(config_for(tmp_path, path), tmp_path)
    assert table.column("event_time").to_pylist() == [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
    ]


def test_nanosecond_timestamps_are_truncated_to_microseconds(tmp_path: Path) -> None:
    """pandas writes datetime64[ns]; ingest keeps microseconds instead of failing the cast."""
    root = tmp_path / "data"
    root.mkdir()
    naive_ns = pa.array([1767225600123456789, 1767225601000000000], pa.timestamp("ns"))
    pq.write_table(pa.table({"event_time": naive_ns, "label": [1, 0]}), root / "a.parquet")
    _, table = run(config_for(tmp_path, root / "a.parquet"), tmp_path)
    assert table.column("event_time").to_pylist() == [
        datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    ]
    # Two files with different units and zones meet in UTC microseconds too.
    berlin_us = pa.array(
        [datetime(2026, 1, 2, 1, 0, tzinfo=UTC)], pa.timestamp("us", "Europe/Berlin")
    )
    pq.write_table(pa.table({"event_time": berlin_us, "label": [1]}), root / "b.parquet")
    _, table = run(config_for(tmp_path, root), tmp_path)
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.column("event_time").to_pylist()[1:] == [
        datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 1, 2, 1, 0, tzinfo=UTC),
    ]


# ------------------------------------------------------------------------ window


@pytest.fixture
def daily(tmp_path: Path) -> Path:
    """Ten rows, one a day from 2026-01-01 00:00 UTC."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    table = pa.table(
        {
            "event_time": pa.array(
                [start + timedelta(days=i) for i in range(10)], pa.timestamp("us", "UTC")
            ),
            "label": pa.array([i % 2 for i in range(10)]),
        }
    )
    path = tmp_path / "daily.parquet"
    pq.write_table(table, path)
    return path


def days_of(table: pa.Table) -> list[int]:
    return [t.day for t in table.column("event_time").to_pylist()]


def test_window_start_is_inclusive(tmp_path: Path, daily: Path) -> None:
    result, table = run(config_for(tmp_path, daily, window={"start": "2026-01-04"}), tmp_path)
    assert days_of(table) == [4, 5, 6, 7, 8, 9, 10]
    assert result.rows_outside_window == 3
    assert result.time_min == "2026-01-04T00:00:00+00:00"


def test_window_end_is_exclusive(tmp_path: Path, daily: Path) -> None:
    result, table = run(
        config_for(tmp_path, daily, window={"end": "2026-01-04T00:00:00Z"}), tmp_path
    )
    assert days_of(table) == [1, 2, 3]
    assert result.rows_outside_window == 7
    assert result.time_max == "2026-01-03T00:00:00+00:00"


def test_window_start_and_end_with_offset(tmp_path: Path, daily: Path) -> None:
    # 2026-01-03T02:00+02:00 is 2026-01-03T00:00Z: inclusive.
    window = {"start": "2026-01-03T02:00:00+02:00", "end": "2026-01-06"}
    _, table = run(config_for(tmp_path, daily, window=window), tmp_path)
    assert days_of(table) == [3, 4, 5]


def test_window_last(tmp_path: Path, daily: Path) -> None:
    result, table = run(config_for(tmp_path, daily, window={"last": "3d"}), tmp_path)
    assert days_of(table) == [7, 8, 9, 10]  # the newest row and everything within 3 days of it
    assert result.rows_outside_window == 6
    _, table = run(config_for(tmp_path, daily, window={"last": "36h"}), tmp_path)
    assert days_of(table) == [9, 10]


def test_a_window_that_keeps_nothing_names_the_window_column_and_time_range(
    tmp_path: Path, daily: Path
) -> None:
    """Not "the data has no rows" from validation later: which window, which column, and
    when the data actually is."""
    config = config_for(tmp_path, daily, window={"start": "2027-01-01", "end": "2027-02-01"})
    out = tmp_path / "never-written.parquet"
    with pytest.raises(DataError) as info:
        ingest.ingest(config, str(out))
    message = str(info.value)
    assert message.startswith(f"{daily}: data.window (start: 2027-01-01, end: 2027-02-01)")
    assert "keeps none of the 10 rows" in message
    assert (
        "'event_time' runs from 2026-01-01T00:00:00+00:00 to 2026-01-10T00:00:00+00:00" in message
    )
    assert not out.exists()


def test_a_window_on_rows_without_timestamps_says_so(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "event_time,label\n,1\n,0\n")
    with pytest.raises(
        DataError, match=r"data.window \(last: 7d\) keeps none of the 2 rows"
    ) as info:
        run(config_for(tmp_path, path, window={"last": "7d"}), tmp_path)
    assert "'event_time' holds no timestamps; 2 rows have no timestamp" in str(info.value)


def test_window_drops_rows_without_a_timestamp(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "event_time,label\n2026-01-01,1\n,0\n2026-01-03,1\n")
    result, _ = run(config_for(tmp_path, path, window={"last": "90d"}), tmp_path)
    assert result.rows == 2 and result.rows_outside_window == 1
    _, unwindowed = run(config_for(tmp_path, path), tmp_path)
    assert unwindowed.num_rows == 3


# ---------------------------------------------------------------------------- s3


def test_read_from_s3(s3: Any, tmp_path: Path, rows: pa.Table) -> None:
    bucket = f"ctpipe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "local"
    synthetic.write(rows.slice(0, 120), str(local / "a.csv"))
    synthetic.write(rows.slice(120), str(local / "b.parquet"))
    s3.upload_file(str(local / "a.csv"), bucket, "data/a.csv")
    s3.upload_file(str(local / "b.parquet"), bucket, "data/b.parquet")
    s3.put_object(Bucket=bucket, Key="data/_SUCCESS", Body=b"")

    result, table = run(config_for(tmp_path, f"s3://{bucket}/data/"), tmp_path)
    files = (f"s3://{bucket}/data/a.csv", f"s3://{bucket}/data/b.parquet")
    assert result.files == files
    assert result.rows == ROWS
    assert table.column(FILE_COLUMN).to_pylist() == [files[0]] * 120 + [files[1]] * 120
    whole = tmp_path / "whole.parquet"
    synthetic.write(rows, str(whole))
    assert result.content_hash == run(config_for(tmp_path, whole), tmp_path)[0].content_hash

    one, _ = run(config_for(tmp_path, f"s3://{bucket}/data/a.csv"), tmp_path)
    assert one.rows == 120 and one.files == (files[0],)


def test_s3_empty_object_names_it(s3: Any, tmp_path: Path) -> None:
    bucket = f"ctpipe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/empty.csv", Body=b"")
    with pytest.raises(
        DataError, match=re.escape(f"s3://{bucket}/data/empty.csv: the file is empty")
    ):
        run(config_for(tmp_path, f"s3://{bucket}/data"), tmp_path)


def test_s3_no_matching_objects(s3: Any, tmp_path: Path) -> None:
    bucket = f"ctpipe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(DataError, match=re.escape(f"s3://{bucket}/nothing/: no data files found")):
        run(config_for(tmp_path, f"s3://{bucket}/nothing/"), tmp_path)
