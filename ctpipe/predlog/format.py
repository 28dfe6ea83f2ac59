"""The prediction log's records and table layout, shared by its writer, reader and compaction.

`prediction` holds text: the class for a classifier, the value for a regressor (a
regressor's value is also in `score`, as a number). Text means pyarrow's cast to string
(1 -> "1", 1.0 -> "1", True -> "true"). The reader applies the same cast to a label
column that is not text, so a prediction and its label compare as strings whatever
Python or Arrow types each side used.

Feature values sit in the struct column `features`, so a feature can never collide with
a column of ours: numbers (bool included) as float64, anything else as text. A feature
that is text in any file or row is read as text everywhere. Parquet cannot store a
struct without fields, so a file whose requests carried no features has no `features`
column; readers treat that as no features.

`role` says how a row was served: `champion` or `canary` rows are the answers callers got
(from the stable revision, or from a canary revision given part of the traffic); `shadow`
rows are a second model's answers to the same requests, logged after the caller had the
champion's (same request ids, the shadow's own model_version; no features, the champion's
row has them). Files written before the column existed have none: their rows are
`champion`.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctpipe.data.tables import is_numeric, is_text
from ctpipe.errors import DataError

# Columns of a prediction log file.
REQUEST_ID = "request_id"
TIMESTAMP = "timestamp"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
PREDICTION = "prediction"
SCORE = "score"
ROLE = "role"
FEATURES = "features"
# Columns of a label file (plus REQUEST_ID).
LABEL = "label"
LABELLED_AT = "labelled_at"
# Values of ROLE.
ROLE_CHAMPION = "champion"
ROLE_CANARY = "canary"
ROLE_SHADOW = "shadow"
ROLES = (ROLE_CHAMPION, ROLE_CANARY, ROLE_SHADOW)
SERVED_ROLES = (ROLE_CHAMPION, ROLE_CANARY)  # the rows whose answers callers got

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
PREDICTION_TYPES: dict[str, pa.DataType] = {
    REQUEST_ID: pa.string(),
    TIMESTAMP: TIMESTAMP_TYPE,
    MODEL_NAME: pa.string(),
    MODEL_VERSION: pa.string(),
    PREDICTION: pa.string(),
    SCORE: pa.float64(),
    ROLE: pa.string(),
}
# Neither `role` nor `features` is required: see the module docstring.
REQUIRED_PREDICTION_COLUMNS = tuple(c for c in PREDICTION_TYPES if c != ROLE)
ALL_PREDICTION_COLUMNS = (*PREDICTION_TYPES, FEATURES)
# Above this many stretches, by_time and rows_where copy the whole table at once.
MAX_SORT_PIECES = 256
LABEL_SCHEMA = pa.schema(
    [(REQUEST_ID, pa.string()), (LABEL, pa.string()), (LABELLED_AT, TIMESTAMP_TYPE)]
)
REQUIRED_LABEL_COLUMNS = (REQUEST_ID, LABEL)


def prediction_text(value: Any) -> str | None:
    """A prediction or label as the log stores it: pyarrow's cast of the value to text."""
    if value is None or isinstance(value, str):
        return value
    try:
        text = pa.scalar(value).cast(pa.string()).as_py()
    except (pa.ArrowException, TypeError, ValueError):
        return str(value)
    return text if isinstance(text, str) else str(value)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One served request. A naive timestamp is taken as UTC; `features` is copied."""

    request_id: str
    timestamp: datetime
    model_version: str
    prediction: Any
    score: float | None
    features: Mapping[str, Any] = field(default_factory=dict)
    role: str = ROLE_CHAMPION

    def __post_init__(self) -> None:
        # Checked here, on the caller's thread, so that a bad record fails the request that
        # made it instead of every later flush.
        if not isinstance(self.request_id, str) or not self.request_id:
            raise TypeError(f"request_id must be a non-empty string, got {self.request_id!r}")
        check_role(self.role)
        object.__setattr__(self, "timestamp", utc_or_fail(self.timestamp, "timestamp"))
        object.__setattr__(self, "model_version", str(self.model_version))
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, numbers.Real):
                raise TypeError(f"score must be a number or None, got {self.score!r}")
            object.__setattr__(self, "score", float(self.score))
        if not isinstance(self.features, Mapping):
            raise TypeError(f"features must be a mapping, got {type(self.features).__name__}")
        object.__setattr__(self, "features", {str(k): v for k, v in self.features.items()})


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """The rows of one served request, by column: what the predictor logs. Checked once per
    request instead of once per row; the sequences are copied."""

    request_ids: Sequence[str]
    timestamp: datetime
    model_version: str
    predictions: Sequence[Any]
    scores: Sequence[float | None]
    features: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    role: str = ROLE_CHAMPION

    def __post_init__(self) -> None:
        rows = len(self.request_ids)
        check_role(self.role)
        if not all(isinstance(r, str) and r for r in self.request_ids):
            raise TypeError("request_ids must be non-empty strings")
        object.__setattr__(self, "request_ids", list(self.request_ids))
        object.__setattr__(self, "timestamp", utc_or_fail(self.timestamp, "timestamp"))
        object.__setattr__(self, "model_version", str(self.model_version))
        if not all(
            s is None or (isinstance(s, numbers.Real) and not isinstance(s, bool))
            for s in self.scores
        ):
            raise TypeError("scores must be numbers or None")
        columns = {str(k): list(v) for k, v in self.features.items()}
        lengths = {len(self.predictions), len(self.scores), *map(len, columns.values())}
        if lengths - {rows}:
            raise ValueError(f"every column must hold {rows} rows, got lengths {sorted(lengths)}")
        object.__setattr__(self, "predictions", list(self.predictions))
        object.__setattr__(self, "scores", [None if s is None else float(s) for s in self.scores])
        object.__setattr__(self, "features", columns)

    def __len__(self) -> int:
        return len(self.request_ids)


Logged = Prediction | PredictionBatch


def rows_in(items: Iterable[Logged]) -> int:
    return sum(len(item) if isinstance(item, PredictionBatch) else 1 for item in items)


@dataclass(frozen=True, slots=True)
class Label:
    """The true outcome of one request, known later. A naive labelled_at is taken as UTC."""

    request_id: str
    label: Any
    labelled_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise TypeError(f"request_id must be a non-empty string, got {self.request_id!r}")
        if self.label is None:
            raise TypeError(f"label of request {self.request_id!r} is None")
        if self.labelled_at is not None:
            object.__setattr__(self, "labelled_at", utc_or_fail(self.labelled_at, "labelled_at"))


def check_role(role: Any) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")


def check_roles(roles: Iterable[str] | None) -> tuple[str, ...] | None:
    """The roles a reader keeps, checked (None: every row)."""
    if roles is None:
        return None
    if isinstance(roles, str):
        raise TypeError(f"roles must be a sequence of roles, not the string {roles!r}")
    chosen = tuple(dict.fromkeys(roles))
    for role in chosen:
        check_role(role)
    return chosen


def check_model_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not model_name or "/" in model_name:
        raise ValueError(f"model name must be a non-empty name without '/', got {model_name!r}")
    if model_name in (".", ".."):
        raise ValueError(f"model name {model_name!r} is not a folder name")


def utc_or_fail(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def predictions_table(model_name: str, items: Sequence[Logged]) -> pa.Table:
    """One table from predictions and batches: columns are gathered as Python lists (list
    extends, cheap) and converted once each by pyarrow. This runs on the predictor's
    writer thread, holding the GIL that requests need, so it must stay cheap."""
    ids: list[str] = []
    stamps: list[datetime] = []
    versions: list[str] = []
    roles: list[str] = []
    predictions: list[Any] = []
    scores: list[float | None] = []
    features: dict[str, list[Any]] = {}
    count = 0
    for item in items:
        if isinstance(item, PredictionBatch):
            rows = len(item)
            ids.extend(item.request_ids)
            stamps.extend([item.timestamp] * rows)
            versions.extend([item.model_version] * rows)
            roles.extend([item.role] * rows)
            predictions.extend(item.predictions)
            scores.extend(item.scores)
            values_by_name: Mapping[str, Sequence[Any]] = item.features
        else:
            rows = 1
            ids.append(item.request_id)
            stamps.append(item.timestamp)
            versions.append(item.model_version)
            roles.append(item.role)
            predictions.append(item.prediction)
            scores.append(item.score)
            values_by_name = {name: [value] for name, value in item.features.items()}
        for name, values in values_by_name.items():
            column = features.setdefault(name, [None] * count)
            column.extend(values)
        count += rows
        for column in features.values():  # a feature this item lacks is null
            if len(column) < count:
                column.extend([None] * (count - len(column)))
    columns: dict[str, pa.Array] = {
        REQUEST_ID: pa.array(ids, pa.string()),
        TIMESTAMP: pa.array(stamps, TIMESTAMP_TYPE),
        MODEL_NAME: pa.array([model_name] * count, pa.string()),
        MODEL_VERSION: pa.array(versions, pa.string()),
        PREDICTION: text_array(predictions),
        SCORE: pa.array(scores, pa.float64()),
        ROLE: pa.array(roles, pa.string()),
    }
    if features:
        columns[FEATURES] = pa.StructArray.from_arrays(
            [feature_array(values) for values in features.values()], names=list(features)
        )
    return pa.table(columns)


def feature_array(values: list[Any]) -> pa.Array:
    """A feature column: float64 when every value is a number (or missing), else text."""
    kinds = {type(v) for v in values} - {type(None)}
    if all(issubclass(kind, numbers.Real) for kind in kinds):
        try:
            return pa.array(values, pa.float64())
        except (pa.ArrowException, TypeError, ValueError):
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return text_array(values)


def text_array(values: list[Any]) -> pa.Array:
    """prediction_text of every value, as one string array: one cast in C++ when the
    values share a simple type, value by value otherwise (same result)."""
    if len({type(v) for v in values} - {type(None)}) <= 1:
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        else:
            simple = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
            if (
                pa.types.is_string(array.type)
                or pa.types.is_null(array.type)
                or any(check(array.type) for check in simple)
            ):
                return array.cast(pa.string())
    return pa.array([prediction_text(v) for v in values], pa.string())


# ------------------------------------------------------------- tables of many files


def is_number_type(type_: pa.DataType) -> bool:
    return is_numeric(type_) or pa.types.is_boolean(type_) or pa.types.is_null(type_)


def feature_struct(types: Iterable[pa.DataType]) -> pa.StructType:
    """The features of many files as one struct: every feature any of them has, text
    where any file has it as text, else float64."""
    kinds: dict[str, pa.DataType] = {}
    for struct in types:
        for child in struct:
            if is_text(child.type):
                kinds[child.name] = pa.string()
            else:
                kinds.setdefault(child.name, pa.float64())
    return pa.struct([(name, type_) for name, type_ in kinds.items()])


def features_of(table: pa.Table) -> pa.StructType:
    if FEATURES in table.column_names:
        return table.schema.field(FEATURES).type
    return pa.struct([])


def empty_features(rows: int) -> pa.Array:
    """A struct column without fields (rows of {}), for tables without features."""
    return pa.StructArray.from_buffers(pa.struct([]), rows, [None])


def with_features(table: pa.Table, unified: pa.StructType) -> pa.Table:
    """table with its `features` cast to unified: missing features null, a missing or null
    struct a struct of nulls (so every row reads as a dict of the same keys)."""
    rows = table.num_rows
    present = table[FEATURES].combine_chunks() if FEATURES in table.column_names else None
    children: list[pa.Array] = []
    if present is not None and present.null_count:
        present = pa.StructArray.from_arrays(present.flatten(), fields=list(present.type))
    for child in unified:
        if present is not None and present.type.get_field_index(child.name) >= 0:
            children.append(present.field(child.name).cast(child.type, safe=False))
        else:
            children.append(pa.nulls(rows, child.type))
    if children:
        features = pa.StructArray.from_arrays(children, fields=list(unified))
    else:
        features = empty_features(rows)
    if FEATURES in table.column_names:
        return table.set_column(table.schema.get_field_index(FEATURES), FEATURES, features)
    return table.append_column(FEATURES, features)


def with_role(table: pa.Table) -> pa.Table:
    """table with a `role` column, with each missing role (a file from before the column,
    a journal written by an older predictor) `champion`."""
    champions = pa.array([ROLE_CHAMPION] * table.num_rows, pa.string())
    if ROLE not in table.column_names:
        return table.append_column(ROLE, champions)
    column = table[ROLE]
    if pa.types.is_null(column.type):
        return table.set_column(table.schema.get_field_index(ROLE), ROLE, champions)
    if column.null_count:
        filled = pc.fill_null(column, pa.scalar(ROLE_CHAMPION, column.type))
        return table.set_column(table.schema.get_field_index(ROLE), ROLE, filled)
    return table


def unify(tables: Sequence[pa.Table]) -> pa.Table:
    """One table from tables of the log's columns whose features differ, and some of which
    may have no role (the log's column order, roles filled in)."""
    unified = feature_struct(features_of(t) for t in tables)
    order = list(ALL_PREDICTION_COLUMNS)
    return pa.concat_tables([with_role(with_features(t, unified)).select(order) for t in tables])


def check_prediction_schema(uri: str, schema: pa.Schema) -> None:
    """A DataError naming uri when its schema is not one of a prediction log file."""
    missing = [name for name in REQUIRED_PREDICTION_COLUMNS if name not in schema.names]
    if missing:
        raise DataError(
            f"{uri}: prediction log file is missing required column(s): {', '.join(missing)} "
            f"(it has: {', '.join(schema.names) or 'none'})"
        )
    if ROLE in schema.names:
        role = schema.field(ROLE).type
        if not (is_text(role) or pa.types.is_null(role)):
            raise DataError(f"{uri}: column 'role' must be text, found {role}")
    if FEATURES not in schema.names:
        return
    features = schema.field(FEATURES).type
    if not pa.types.is_struct(features):
        raise DataError(f"{uri}: column 'features' must be a struct, found {features}")
    for child in features:
        if not (is_number_type(child.type) or is_text(child.type)):
            raise DataError(
                f"{uri}: feature {child.name!r} has type {child.type}; "
                "the log holds numbers and text only"
            )


def for_file(table: pa.Table) -> pa.Table:
    """table as a log file stores it: no `features` column when there are no features
    (Parquet cannot store a struct without fields)."""
    if FEATURES in table.column_names and not features_of(table).num_fields:
        return table.drop_columns([FEATURES])
    return table


def by_time(table: pa.Table) -> pa.Table:
    """Sorted by timestamp, stably. Log files are runs of rows in time order (a writer's
    flush, a sorted compact file), so most rows of a day are in place already: those stay
    as zero-copy slices, and only the stretches that move are copied (a day of traffic
    is a gigabyte or more; copying it all took seconds)."""
    rows = table.num_rows
    stamps = table[TIMESTAMP]
    if rows < 2:
        return table
    if stamps.null_count:
        return table.sort_by([(TIMESTAMP, "ascending")])  # nulls last
    values = stamps.cast(pa.int64()).to_numpy()
    order = np.argsort(values, kind="stable")  # timsort: quick on runs
    moved = order != np.arange(rows)
    if not moved.any():
        return table
    edges = np.flatnonzero(moved[1:] != moved[:-1]) + 1
    bounds = [0, *edges.tolist(), rows]
    if len(bounds) > MAX_SORT_PIECES:
        return table.take(order)
    pieces = [
        table.take(order[start:end]) if moved[start] else table.slice(start, end - start)
        for start, end in itertools.pairwise(bounds)
    ]
    return pa.concat_tables(pieces)


def rows_where(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """table.filter(keep), with long runs of kept rows as zero-copy slices: the labelled
    rows of a day are most of it, in a few runs (labels arrive in time order)."""
    if bool(keep.all()):
        return table
    edges = np.flatnonzero(keep[1:] != keep[:-1]) + 1
    bounds = [0, *edges.tolist(), len(keep)]
    if len(bounds) > MAX_SORT_PIECES:
        return table.filter(pa.array(keep))
    pieces = [
        table.slice(start, end - start) for start, end in itertools.pairwise(bounds) if keep[start]
    ]
    return pa.concat_tables(pieces) if pieces else table.slice(0, 0)


def split_by_date(table: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    """The rows of each UTC date of their timestamps (the partition they belong in)."""
    days = table[TIMESTAMP].cast(pa.date32())  # the zone is UTC, so the UTC date
    for day in pc.unique(days).to_pylist():
        yield day, table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
