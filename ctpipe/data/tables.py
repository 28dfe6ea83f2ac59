"""Small helpers on Arrow tables shared by ingest, validation and split.

Arrow rather than pandas on purpose: these steps run as fresh processes, and pyarrow
imports in a fraction of the time pandas does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Provenance columns that ingest adds so that every later message can name file and row.
FILE_COLUMN = "_ctpipe_file"
ROW_COLUMN = "_ctpipe_row"
PROVENANCE = (FILE_COLUMN, ROW_COLUMN)
FILES_METADATA_KEY = b"ctpipe.files"


@dataclass(frozen=True)
class FileInfo:
    """One input file as ingest saw it."""

    uri: str
    rows: int
    columns: tuple[str, ...]


def data_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c not in PROVENANCE]


def file_infos(table: pa.Table) -> list[FileInfo]:
    raw = (table.schema.metadata or {}).get(FILES_METADATA_KEY)
    if not raw:
        return []
    return [FileInfo(f["uri"], f["rows"], tuple(f["columns"])) for f in json.loads(raw)]


def with_file_infos(table: pa.Table, infos: list[FileInfo]) -> pa.Table:
    payload = json.dumps(
        [{"uri": f.uri, "rows": f.rows, "columns": list(f.columns)} for f in infos]
    )
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), FILES_METADATA_KEY: payload.encode()}
    )


def read(source: Any, columns: list[str] | None = None, **options: Any) -> pa.Table:
    """One Parquet file (a path or a buffer) as a table, schema metadata included.

    Through ParquetFile rather than pq.read_table: read_table goes through
    pyarrow.dataset, whose import costs ~0.4 s in every fresh step process.
    """
    with pq.ParquetFile(source, **options) as file:
        return file.read(columns=columns)


def read_schema(path: str | Path) -> pa.Schema:
    with pq.ParquetFile(path) as file:
        return file.schema_arrow


def write(table: pa.Table, path: str) -> None:
    pq.write_table(table, path)


def is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def is_text(dtype: pa.DataType) -> bool:
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_dictionary(dtype)
    )


def to_python(value: Any) -> Any:
    """An Arrow scalar's value in a form that JSON and messages can show."""
    if hasattr(value, "as_py"):
        value = value.as_py()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
