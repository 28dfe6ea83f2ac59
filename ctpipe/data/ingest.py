"""Read the configured data (local or s3://, CSV / Parquet / JSON Lines) into one table.

Every row keeps the file and row number it came from, so that validation can point at
the exact line of a bad value. Timestamps are normalised to UTC microseconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import storage
from ctpipe.config import Config, parse_duration, parse_timestamp
from ctpipe.data import tables
from ctpipe.data.tables import FILE_COLUMN, ROW_COLUMN, FileInfo
from ctpipe.errors import DataError

FORMATS_BY_SUFFIX = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class IngestResult:
    source: str
    rows: int
    columns: tuple[str, ...]
    content_hash: str
    files: tuple[str, ...]
    time_min: str | None
    time_max: str | None
    rows_outside_window: int = 0

    def metadata(self) -> dict[str, Any]:
        """What the KFP Dataset artifact carries (shown in the UI, used for lineage)."""
        return {
            "source": self.source,
            "rows": self.rows,
            "columns": list(self.columns),
            "content_hash": self.content_hash,
            "files": len(self.files),
            "time_min": self.time_min,
            "time_max": self.time_max,
            "rows_outside_window": self.rows_outside_window,
        }

    def describe(self) -> str:
        where = (
            f"{len(self.files)} file(s) under {self.source}"
            if self.files != (self.source,)
            else self.source
        )
        return f"read {self.rows:,} rows x {len(self.columns)} columns from {where} ({self.content_hash[:19]})"


def ingest(config: Config, out_path: str) -> IngestResult:
    """Read the configured data, apply the time window, write Parquet to `out_path`."""
    table, files, source = read_source(config)
    table = normalise_timestamp(table, config.timestamp)
    windowed, outside = apply_window(table, config)
    if windowed.num_rows == 0 and table.num_rows > 0:
        # Validation would only say "the data has no rows"; the window is what emptied it.
        raise DataError(_empty_window(table, config, source))
    table = windowed
    tables.write(table, out_path)
    times = table.column(config.timestamp)
    low, high = pc.min(times).as_py(), pc.max(times).as_py()
    return IngestResult(
        source=source,
        rows=table.num_rows,
        columns=tuple(tables.data_columns(table)),
        content_hash=content_hash(table),
        files=tuple(f.uri for f in files),
        time_min=low.isoformat() if low else None,
        time_max=high.isoformat() if high else None,
        rows_outside_window=outside,
    )


def read_source(config: Config) -> tuple[pa.Table, list[FileInfo], str]:
    if config.data.uri is None:
        from ctpipe.data import synthetic

        spec = config.data.synthetic
        table = synthetic.generate(
            spec.rows,
            spec.seed,
            task=config.task,
            numeric=spec.numeric,
            categorical=spec.categorical,
        )
        source = f"synthetic(rows={spec.rows}, seed={spec.seed})"
        info = FileInfo(source, table.num_rows, tuple(table.column_names))
        return tables.with_file_infos(_with_provenance(table, source), [info]), [info], source
    uri = config.data.uri
    suffixes = tuple(FORMATS_BY_SUFFIX) if config.data.format == "auto" else ()
    files = storage.list_files(uri, suffixes)
    if not files:
        raise DataError(
            f"{uri}: no data files found (looked for {', '.join(sorted(FORMATS_BY_SUFFIX))})"
        )
    parts, infos = [], []
    for file in files:
        part = read_file(file, config.data.format)
        infos.append(FileInfo(file, part.num_rows, tuple(part.column_names)))
        parts.append(_with_provenance(part, file))
    return tables.with_file_infos(_concat(parts), infos), infos, uri


def file_format(uri: str, configured: str) -> str:
    if configured != "auto":
        return configured
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix, fmt in FORMATS_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{uri}: cannot tell the format from the extension; set data.format")


def read_file(uri: str, configured_format: str = "auto") -> pa.Table:
    fmt = file_format(uri, configured_format)
    data = storage.read_bytes(uri)
    if not data:
        raise DataError(f"{uri}: the file is empty (0 bytes)")
    buffer = pa.BufferReader(data)
    try:
        if fmt == "csv":
            import pyarrow.csv as pcsv

            # One block covering the whole file: type inference then sees every value,
            # so a stray 'abc' turns its column into text (which validation reports with
            # row numbers) instead of failing the read halfway.
            options = pcsv.ReadOptions(block_size=max(len(data) + 1, 1 << 20))
            return pcsv.read_csv(buffer, read_options=options)
        if fmt == "parquet":
            return tables.read(buffer)
        import pyarrow.json as pjson

        return pjson.read_json(
            buffer, read_options=pjson.ReadOptions(block_size=max(len(data) + 1, 1 << 20))
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        label = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}[fmt]
        raise DataError(f"{uri}: not a readable {label} file ({exc})") from exc


def _with_provenance(table: pa.Table, uri: str) -> pa.Table:
    rows = table.num_rows
    table = table.append_column(
        FILE_COLUMN, pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), [uri])
    )
    return table.append_column(ROW_COLUMN, pa.array(np.arange(1, rows + 1, dtype=np.int64)))


def _concat(parts: list[pa.Table]) -> pa.Table:
    """Concatenate files whose columns or inferred types may differ.

    Columns missing from a file become nulls there (validation reports them per file).
    Types that cannot be reconciled fall back to text, so validation can show the values.
    """
    if len(parts) == 1:
        return parts[0]
    names: list[str] = []
    for part in parts:
        names.extend(n for n in part.column_names if n not in names)
    target = {
        n: _common_type([p.schema.field(n).type for p in parts if n in p.column_names])
        for n in names
    }
    aligned = []
    for part in parts:
        arrays = []
        for name in names:
            if name in part.column_names:
                arrays.append(_cast(part.column(name), target[name]))
            else:
                arrays.append(pa.nulls(part.num_rows, target[name]))
        aligned.append(pa.Table.from_arrays(arrays, names=names))
    return pa.concat_tables(aligned)


def _common_type(types: list[pa.DataType]) -> pa.DataType:
    known = [t for t in types if not pa.types.is_null(t)]
    if not known:
        return pa.null()
    if all(t == known[0] for t in known):
        return known[0]
    if all(pa.types.is_integer(t) for t in known):
        return pa.int64()
    if all(tables.is_numeric(t) or pa.types.is_boolean(t) for t in known):
        return pa.float64()
    if all(pa.types.is_timestamp(t) for t in known):
        return TIMESTAMP_TYPE
    if all(tables.is_text(t) for t in known):
        return pa.string()
    if all(pa.types.is_dictionary(t) and t.value_type == pa.string() for t in known):
        return pa.dictionary(pa.int32(), pa.string())
    return pa.string()


def _cast(column: pa.ChunkedArray, dtype: pa.DataType) -> pa.ChunkedArray:
    if column.type == dtype:
        return column
    if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(dtype):
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return column.cast(dtype, safe=False)  # nanoseconds are truncated to microseconds
    if pa.types.is_dictionary(column.type) and not pa.types.is_dictionary(dtype):
        column = column.cast(column.type.value_type)
    return column.cast(dtype)


def normalise_timestamp(table: pa.Table, name: str) -> pa.Table:
    """Make the timestamp column UTC microseconds; name the file and row of a bad value."""
    if name not in table.column_names:
        first = tables.file_infos(table)
        where = first[0].uri if len(first) == 1 else "the data"
        raise DataError(
            f"{where}: no column {name!r}, the timestamp column named in the config "
            f"(columns: {', '.join(tables.data_columns(table))})"
        )
    column = table.column(name)
    dtype = column.type
    if pa.types.is_timestamp(dtype):
        if dtype.tz is None:
            column = pc.assume_timezone(column, "UTC")
        converted = column.cast(TIMESTAMP_TYPE, safe=False)  # nanoseconds are truncated
    elif pa.types.is_date(dtype):
        converted = column.cast(pa.timestamp("us")).cast(TIMESTAMP_TYPE)
    elif tables.is_numeric(dtype):
        # Numbers are taken as Unix epoch seconds.
        micros = pc.multiply(column.cast(pa.float64()), 1e6)
        converted = pc.round(micros).cast(pa.int64()).cast(TIMESTAMP_TYPE)
    elif tables.is_text(dtype) or pa.types.is_null(dtype):
        converted = _parse_text_timestamps(table, name)
    else:
        raise DataError(f"column {name!r}: cannot use type {dtype} as a timestamp")
    index = table.column_names.index(name)
    return table.set_column(index, pa.field(name, TIMESTAMP_TYPE), converted)


def _parse_text_timestamps(table: pa.Table, name: str) -> pa.ChunkedArray:
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        return pc.cast(column, TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = column.to_pylist()
    parsed: list[datetime | None] = []
    bad: list[int] = []
    for i, value in enumerate(values):
        if value is None or value == "":
            parsed.append(None)
            continue
        try:
            parsed.append(parse_timestamp(value))
        except ValueError:
            bad.append(i)
            parsed.append(None)
    if bad:
        files = table.column(FILE_COLUMN).to_pylist()
        rows = table.column(ROW_COLUMN).to_pylist()
        shown = "; ".join(f"{files[i]} row {rows[i]}: {values[i]!r}" for i in bad[:5])
        raise DataError(
            f"column {name!r}, rule timestamp_format: {len(bad)} value(s) are not ISO 8601 timestamps ({shown})"
        )
    return pa.chunked_array([pa.array(parsed, type=TIMESTAMP_TYPE)])


def apply_window(table: pa.Table, config: Config) -> tuple[pa.Table, int]:
    """Keep the rows inside the configured window; return them and how many were dropped."""
    window = config.data.window
    if window.start is None and window.end is None and window.last is None:
        return table, 0
    times = table.column(config.timestamp)
    keep = pc.is_valid(times)
    if window.start is not None:
        keep = pc.and_(
            keep, pc.greater_equal(times, pa.scalar(parse_timestamp(window.start), TIMESTAMP_TYPE))
        )
    if window.end is not None:
        keep = pc.and_(keep, pc.less(times, pa.scalar(parse_timestamp(window.end), TIMESTAMP_TYPE)))
    if window.last is not None:
        newest = pc.max(times).as_py()
        if newest is not None:
            from datetime import timedelta

            cutoff = newest - timedelta(seconds=parse_duration(window.last))
            keep = pc.and_(keep, pc.greater_equal(times, pa.scalar(cutoff, TIMESTAMP_TYPE)))
    kept = table.filter(keep)
    return kept, table.num_rows - kept.num_rows


def _empty_window(table: pa.Table, config: Config, source: str) -> str:
    window = config.data.window
    bounds = ", ".join(
        f"{name}: {value}"
        for name, value in (("start", window.start), ("end", window.end), ("last", window.last))
        if value is not None
    )
    times = table.column(config.timestamp)
    low, high = pc.min(times).as_py(), pc.max(times).as_py()
    span = f"runs from {low.isoformat()} to {high.isoformat()}" if low else "holds no timestamps"
    untimed = f"; {times.null_count:,} rows have no timestamp" if times.null_count else ""
    return (
        f"{source}: data.window ({bounds}) keeps none of the {table.num_rows:,} rows: the time "
        f"column {config.timestamp!r} {span}{untimed}; move or widen data.window (times are "
        "UTC), or check that the time column is the one meant"
    )


def content_hash(table: pa.Table) -> str:
    """A hash of the data itself (not of the files or of provenance), for lineage."""
    data = table.select(tables.data_columns(table)).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return "sha256:" + hashlib.sha256(sink.getvalue()).hexdigest()
