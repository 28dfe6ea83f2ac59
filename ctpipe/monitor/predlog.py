"""The prediction log: what a model served, and the labels that arrive later.

Layout, under a local directory or an s3:// prefix:

    <root>/<model_name>/date=YYYY-MM-DD/part-<UTC yyyymmddTHHMMSSffffff>-<8 hex>.parquet
    <labels_root>/<model_name>/part-<UTC yyyymmddTHHMMSSffffff>-<8 hex>.parquet

The date folder is the UTC date of the rows' own timestamps, not of the write, so a read
for a time window opens only the folders that window covers. Files are only ever added,
never rewritten. Files outside `date=` folders are not part of the log and are skipped.

`prediction` holds text: the class for a classifier, the value for a regressor (a
regressor's value is also in `score`, as a number). Text means pyarrow's cast to string
(1 -> "1", 1.0 -> "1", True -> "true"). read_labels applies the same cast to a label
column that is not text, so a prediction and its label compare as strings whatever
Python or Arrow types each side used.

Feature values sit in the struct column `features`, so a feature can never collide with
a column of ours: numbers (bool included) as float64, anything else as text. A feature
that is text in any file or row is read as text everywhere. Parquet cannot store a
struct without fields, so a file whose requests carried no features has no `features`
column; readers treat that as no features.
"""

from __future__ import annotations

import logging
import numbers
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctpipe import storage
from ctpipe.data import tables
from ctpipe.data.tables import is_numeric, is_text
from ctpipe.errors import DataError

logger = logging.getLogger(__name__)

# Columns of a prediction log file.
REQUEST_ID = "request_id"
TIMESTAMP = "timestamp"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
PREDICTION = "prediction"
SCORE = "score"
FEATURES = "features"
# Columns of a label file (plus REQUEST_ID).
LABEL = "label"
LABELLED_AT = "labelled_at"

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
PREDICTION_TYPES: dict[str, pa.DataType] = {
    REQUEST_ID: pa.string(),
    TIMESTAMP: TIMESTAMP_TYPE,
    MODEL_NAME: pa.string(),
    MODEL_VERSION: pa.string(),
    PREDICTION: pa.string(),
    SCORE: pa.float64(),
}
# `features` is not required: see the module docstring.
REQUIRED_PREDICTION_COLUMNS = tuple(PREDICTION_TYPES)
LABEL_SCHEMA = pa.schema(
    [(REQUEST_ID, pa.string()), (LABEL, pa.string()), (LABELLED_AT, TIMESTAMP_TYPE)]
)
REQUIRED_LABEL_COLUMNS = (REQUEST_ID, LABEL)

DATE_FOLDER_PREFIX = "date="
PART_PREFIX = "part-"
PARQUET_SUFFIX = ".parquet"
# A bounded window up to this many days lists its date folders one by one; a wider or
# open window lists the whole model prefix once.
PREFIX_LISTING_MAX_DAYS = 62
# A failed flush waits max_seconds, then twice that, and so on, up to this (or
# max_seconds, if larger) before it tries again.
MAX_RETRY_SECONDS = 60.0
UNMATCHED_EXAMPLES = 5
READ_THREADS = 16


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

    def __post_init__(self) -> None:
        # Checked here, on the caller's thread, so that a bad record fails the request that
        # made it instead of every later flush.
        if not isinstance(self.request_id, str) or not self.request_id:
            raise TypeError(f"request_id must be a non-empty string, got {self.request_id!r}")
        object.__setattr__(self, "timestamp", _utc_or_fail(self.timestamp, "timestamp"))
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

    def __post_init__(self) -> None:
        rows = len(self.request_ids)
        if not all(isinstance(r, str) and r for r in self.request_ids):
            raise TypeError("request_ids must be non-empty strings")
        object.__setattr__(self, "request_ids", list(self.request_ids))
        object.__setattr__(self, "timestamp", _utc_or_fail(self.timestamp, "timestamp"))
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


def _rows_in(items: Iterable[Logged]) -> int:
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
            object.__setattr__(self, "labelled_at", _utc_or_fail(self.labelled_at, "labelled_at"))


# --------------------------------------------------------------------------- writing


class PredictionLogWriter:
    """Buffers predictions in memory and writes them as Parquet from a background thread.

    `append` only takes a lock and extends a list; a daemon thread writes the buffer when
    it holds `max_rows` rows or its oldest row is `max_seconds` old. Each flush adds one
    new file per UTC date among its rows (normally one).

    What can be lost: the buffer, when the process dies without `close()` - at most
    `max_rows` rows or `max_seconds` of traffic, more while writes are failing. A failed
    write keeps its rows for the next attempt, logs a warning and waits (max_seconds,
    doubling, capped) before trying again; rows are never dropped. Use it as a context
    manager, or call `close()`, to write what is left.
    """

    def __init__(
        self,
        root: str,
        model_name: str,
        *,
        max_rows: int = 10_000,
        max_seconds: float = 30.0,
    ) -> None:
        _check_model_name(model_name)
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.root = str(root)
        self.model_name = model_name
        self.max_rows = max_rows
        self.max_seconds = float(max_seconds)
        self._lock = threading.Lock()  # the buffer and counters; never held during I/O
        self._io_lock = threading.Lock()  # one flush at a time, so kept rows stay in order
        self._wake = threading.Event()
        self._buffer: list[Logged] = []
        self._buffered = 0  # rows in the buffer (a PredictionBatch holds many)
        self._oldest: float | None = None  # monotonic time the oldest buffered row came in
        self._closed = False
        self._failures = 0  # consecutive failed flushes
        self._retry_at = 0.0
        self._rows_written = 0
        self._files_written = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"ctpipe-predlog-{model_name}", daemon=True
        )
        self._thread.start()

    @property
    def location(self) -> str:
        return storage.join(self.root, self.model_name)

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        with self._lock:
            return self._buffered

    @property
    def rows_written(self) -> int:
        with self._lock:
            return self._rows_written

    @property
    def files_written(self) -> int:
        with self._lock:
            return self._files_written

    @property
    def failed_flushes(self) -> int:
        """Flushes that failed in a row; 0 after a successful one."""
        with self._lock:
            return self._failures

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def append(self, records: Logged | Iterable[Prediction]) -> None:
        """Buffer one prediction, a request's batch, or several predictions; never waits
        for I/O."""
        if isinstance(records, Prediction | PredictionBatch):
            batch: list[Logged] = [records]
        else:
            batch = list(records)
        for record in batch:
            if not isinstance(record, Prediction | PredictionBatch):
                raise TypeError(
                    f"expected Prediction or PredictionBatch, got {type(record).__name__}"
                )
        rows = _rows_in(batch)
        if not rows:
            return
        wake = False
        with self._lock:
            if self._closed:
                raise ValueError(f"prediction log writer for {self.location} is closed")
            before = self._buffered
            if not before:
                self._oldest = time.monotonic()
                wake = True  # starts the thread's clock
            self._buffer.extend(batch)
            self._buffered += rows
            wake = wake or before < self.max_rows <= self._buffered
        if wake:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written.

        Raises DataError if a write fails; the unwritten rows stay buffered.
        """
        return self._flush_pending()

    def close(self) -> None:
        """Stop the thread and write what is left. Safe to call again: a second call
        retries rows that a failed final write kept."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        self._flush_pending()

    def __enter__(self) -> PredictionLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before reading state: a set() after this is not lost
            with self._lock:
                if self._closed:
                    return
                pending, oldest, retry_at = self._buffered, self._oldest, self._retry_at
            timeout: float | None = None
            if pending:
                now = time.monotonic()
                due = now if pending >= self.max_rows else (oldest or now) + self.max_seconds
                due = max(due, retry_at)
                if now >= due:
                    try:
                        self._flush_pending()
                    except DataError as exc:
                        logger.warning("%s", exc)
                    except Exception:  # a bug must not stop later flushes
                        logger.exception("prediction log %s: flush failed", self.location)
                    continue
                timeout = due - now
            self._wake.wait(timeout)

    def _flush_pending(self) -> int:
        with self._io_lock:
            with self._lock:
                batch, oldest = self._buffer, self._oldest
                self._buffer, self._oldest, self._buffered = [], None, 0
            if not batch:
                return 0
            kept: list[Logged] = []
            errors: list[str] = []
            written = files = 0
            for day, rows in _by_date(batch):
                try:
                    self._write_file(day, rows)
                except Exception as exc:  # storage raises DataError, a local disk OSError
                    kept.extend(rows)
                    errors.append(str(exc))
                else:
                    written += _rows_in(rows)
                    files += 1
            with self._lock:
                self._rows_written += written
                self._files_written += files
                if not kept:
                    self._failures, self._retry_at, self._last_error = 0, 0.0, None
                    return written
                self._buffer = kept + self._buffer
                self._buffered += _rows_in(kept)
                self._oldest = oldest
                self._failures += 1
                delay = min(
                    self.max_seconds * 2 ** min(self._failures - 1, 30),
                    max(self.max_seconds, MAX_RETRY_SECONDS),
                )
                self._retry_at = time.monotonic() + delay
                self._last_error = errors[0]
                buffered = self._buffered
        raise DataError(
            f"prediction log {self.location}: could not write {_rows_in(kept)} rows; "
            f"{buffered} rows stay buffered, next try in {delay:g}s ({errors[0]})"
        )

    def _write_file(self, day: date, rows: Sequence[Logged]) -> str:
        data = _parquet_bytes(_predictions_table(self.model_name, rows))
        return _write_part(storage.join(self.location, date_folder(day)), data)


def write_labels(labels_root: str, model_name: str, labels: Iterable[Label]) -> str | None:
    """Write one new label file; returns its URI, or None when there were no labels."""
    _check_model_name(model_name)
    rows = list(labels)
    if not rows:
        return None
    table = pa.table(
        {
            REQUEST_ID: pa.array([r.request_id for r in rows], pa.string()),
            LABEL: pa.array([prediction_text(r.label) for r in rows], pa.string()),
            LABELLED_AT: pa.array([r.labelled_at for r in rows], TIMESTAMP_TYPE),
        }
    )
    return _write_part(storage.join(str(labels_root), model_name), _parquet_bytes(table))


def date_folder(day: date) -> str:
    return f"{DATE_FOLDER_PREFIX}{day.isoformat()}"


def _check_model_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not model_name or "/" in model_name:
        raise ValueError(f"model name must be a non-empty name without '/', got {model_name!r}")
    if model_name in (".", ".."):
        raise ValueError(f"model name {model_name!r} is not a folder name")


def _utc_or_fail(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _by_date(rows: Sequence[Logged]) -> Iterator[tuple[date, list[Logged]]]:
    groups: dict[date, list[Logged]] = {}
    for row in rows:
        groups.setdefault(row.timestamp.date(), []).append(row)  # timestamps are UTC
    yield from groups.items()


def _part_name() -> str:
    now = datetime.now(UTC)
    return f"{PART_PREFIX}{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}{PARQUET_SUFFIX}"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _write_part(folder: str, data: bytes) -> str:
    """Add a new part file under folder; returns its URI. The write is exclusive, so an
    existing file is never replaced, and atomic (storage stages a local file aside; an S3
    PUT is atomic), so a reader never sees half a file."""
    for _ in range(3):
        uri = storage.join(folder, _part_name())
        if storage.write_bytes(uri, data, exclusive=True):
            return uri
    raise DataError(f"{folder}: no free part file name after 3 tries")


def _predictions_table(model_name: str, items: Sequence[Logged]) -> pa.Table:
    """One table from predictions and batches: columns are gathered as Python lists (list
    extends, cheap) and converted once each by pyarrow. This runs on the predictor's
    writer thread, holding the GIL that requests need, so it must stay cheap."""
    ids: list[str] = []
    stamps: list[datetime] = []
    versions: list[str] = []
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
            predictions.extend(item.predictions)
            scores.extend(item.scores)
            values_by_name: Mapping[str, Sequence[Any]] = item.features
        else:
            rows = 1
            ids.append(item.request_id)
            stamps.append(item.timestamp)
            versions.append(item.model_version)
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
        PREDICTION: _text_array(predictions),
        SCORE: pa.array(scores, pa.float64()),
    }
    if features:
        columns[FEATURES] = pa.StructArray.from_arrays(
            [_feature_array(values) for values in features.values()], names=list(features)
        )
    return pa.table(columns)


def _feature_array(values: list[Any]) -> pa.Array:
    """A feature column: float64 when every value is a number (or missing), else text."""
    kinds = {type(v) for v in values} - {type(None)}
    if all(issubclass(kind, numbers.Real) for kind in kinds):
        try:
            return pa.array(values, pa.float64())
        except (pa.ArrowException, TypeError, ValueError):
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return _text_array(values)


def _text_array(values: list[Any]) -> pa.Array:
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


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LabelledPredictions:
    """Predictions joined with their labels.

    `table` holds the prediction rows that have a label, in their original order, with
    `label` and `labelled_at` added. A label counts as unmatched when no row of the
    predictions given has its request id - including labels for requests outside the
    window the predictions were read for.
    """

    table: pa.Table
    labelled: int
    unlabelled: int
    unmatched: int
    unmatched_examples: tuple[str, ...]
    duplicate_labels: int  # label rows dropped because a later label for the id exists

    def raise_if_unmatched(self) -> None:
        if self.unmatched:
            examples = ", ".join(self.unmatched_examples)
            raise DataError(
                f"{self.unmatched} labels match no logged prediction "
                f"(request ids such as: {examples}); check that labels and predictions "
                "come from the same model and that the prediction window covers them"
            )


def empty_predictions() -> pa.Table:
    """A prediction log table with no rows and no features."""
    schema = pa.schema([*PREDICTION_TYPES.items(), (FEATURES, pa.struct([]))])
    return schema.empty_table()


def read_predictions(
    root: str,
    model_name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pa.Table:
    """Logged predictions with since <= timestamp < until (naive datetimes are UTC),
    sorted by timestamp. Only the date folders the window touches are read. No files
    means an empty table with the log's columns."""
    _check_model_name(model_name)
    start = None if since is None else _utc_or_fail(since, "since")
    end = None if until is None else _utc_or_fail(until, "until")
    base = storage.join(str(root), model_name)
    files = _log_files(base, start, end)
    tables = _read_all(files, _read_prediction_file)
    if not tables:
        return empty_predictions()
    table = _concat_predictions(tables)
    if start is not None:
        table = table.filter(pc.greater_equal(table[TIMESTAMP], pa.scalar(start, TIMESTAMP_TYPE)))
    if end is not None:
        table = table.filter(pc.less(table[TIMESTAMP], pa.scalar(end, TIMESTAMP_TYPE)))
    return table.sort_by([(TIMESTAMP, "ascending")])


def read_labels(labels_root: str, model_name: str) -> pa.Table:
    """Every label row for the model (request_id, label as text, labelled_at or null), in
    file-name order (which is write order). Duplicates are kept; join_labels resolves them."""
    _check_model_name(model_name)
    files = storage.list_files(storage.join(str(labels_root), model_name), (PARQUET_SUFFIX,))
    tables = _read_all(files, _read_label_file)
    return pa.concat_tables(tables) if tables else LABEL_SCHEMA.empty_table()


def join_labels(predictions: pa.Table, labels: pa.Table) -> LabelledPredictions:
    """Attach each prediction's label. Of several labels for one request the last by
    labelled_at wins (null labelled_at counts as oldest; ties go to the later row)."""
    for name, table in ((REQUEST_ID, predictions), (REQUEST_ID, labels), (LABEL, labels)):
        if name not in table.column_names:
            raise DataError(f"join_labels: column {name!r} is missing")
    if LABELLED_AT not in labels.column_names:
        labels = labels.append_column(LABELLED_AT, pa.nulls(labels.num_rows, TIMESTAMP_TYPE))
    latest = _latest_labels(labels.select([REQUEST_ID, LABEL, LABELLED_AT]))
    ids = predictions[REQUEST_ID]
    positions = pc.index_in(ids, value_set=latest[REQUEST_ID])
    has_label = pc.is_valid(positions)
    joined = predictions.filter(has_label)
    matched = latest.take(positions.filter(has_label))
    joined = joined.append_column(LABEL, matched[LABEL]).append_column(
        LABELLED_AT, matched[LABELLED_AT]
    )
    orphan = latest.filter(pc.invert(pc.is_in(latest[REQUEST_ID], value_set=ids)))
    return LabelledPredictions(
        table=joined,
        labelled=joined.num_rows,
        unlabelled=predictions.num_rows - joined.num_rows,
        unmatched=orphan.num_rows,
        unmatched_examples=tuple(orphan[REQUEST_ID].slice(0, UNMATCHED_EXAMPLES).to_pylist()),
        duplicate_labels=labels.num_rows - latest.num_rows,
    )


def features_table(predictions: pa.Table) -> pa.Table:
    """The `features` struct as plain columns, one per feature, for the drift engine."""
    if FEATURES not in predictions.column_names:
        return pa.table({})
    flat = predictions.select([FEATURES]).flatten()
    prefix = f"{FEATURES}."
    return flat.rename_columns([name.removeprefix(prefix) for name in flat.column_names])


def _latest_labels(labels: pa.Table) -> pa.Table:
    # A null labelled_at sorts first (oldest); equal times keep row order (stable sort).
    when = pc.fill_null(labels[LABELLED_AT].cast(pa.int64()), pa.scalar(-(2**63), pa.int64()))
    order = pc.sort_indices(pa.table({"when": when}), sort_keys=[("when", "ascending")])
    ranked = labels.take(order)
    ranked = ranked.append_column("_rank", pa.array(range(ranked.num_rows), pa.int64()))
    last = ranked.group_by(REQUEST_ID, use_threads=False).aggregate([("_rank", "max")])
    keep = pc.sort_indices(last["_rank_max"])  # back to labelled_at order
    return ranked.take(last["_rank_max"].take(keep)).drop_columns(["_rank"])


def _log_files(base: str, start: datetime | None, end: datetime | None) -> list[str]:
    if start and end and (end.date() - start.date()).days <= PREFIX_LISTING_MAX_DAYS:
        days = [
            start.date() + timedelta(days=n) for n in range((end.date() - start.date()).days + 1)
        ]
        files = [
            uri
            for day in days
            for uri in storage.list_files(storage.join(base, date_folder(day)), (PARQUET_SUFFIX,))
        ]
    else:
        files = storage.list_files(base, (PARQUET_SUFFIX,))
    keep: list[str] = []
    outside = 0
    for uri in files:
        day = _partition_date(base, uri)
        if day is None:
            outside += 1
        elif (start is None or day >= start.date()) and (end is None or day <= end.date()):
            keep.append(uri)
    if outside:
        logger.warning("prediction log %s: skipped %d files outside date= folders", base, outside)
    return keep


def _partition_date(base: str, uri: str) -> date | None:
    parts = uri[len(base) :].replace(os.sep, "/").strip("/").split("/")
    if len(parts) != 2 or not parts[0].startswith(DATE_FOLDER_PREFIX):
        return None
    try:
        return date.fromisoformat(parts[0][len(DATE_FOLDER_PREFIX) :])
    except ValueError:
        return None


def _read_all(files: list[str], read: Callable[[str], pa.Table]) -> list[pa.Table]:
    """Read files concurrently: a day of 30-second flushes is thousands of small objects,
    and each S3 GET waits mostly on the network. The first bad file raises."""
    if len(files) < 2:
        return [read(uri) for uri in files]
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(files))) as pool:
        return list(pool.map(read, files))


def _read_parquet(uri: str, kind: str, required: Sequence[str]) -> pa.Table:
    data = storage.read_bytes(uri)
    try:
        table = tables.read(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{uri}: not a readable Parquet {kind} file ({exc})") from exc
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise DataError(
            f"{uri}: {kind} file is missing required column(s): {', '.join(missing)} "
            f"(it has: {', '.join(table.column_names) or 'none'})"
        )
    return table


def _cast(column: pa.ChunkedArray, type_: pa.DataType, uri: str, name: str) -> pa.ChunkedArray:
    try:
        # Timestamps may lose sub-microsecond digits; anything else must cast exactly.
        return column.cast(type_, safe=not pa.types.is_timestamp(type_))
    except (pa.ArrowException, TypeError) as exc:
        raise DataError(f"{uri}: column {name!r} of type {column.type} is not {type_}") from exc


def _read_prediction_file(uri: str) -> pa.Table:
    table = _read_parquet(uri, "prediction log", REQUIRED_PREDICTION_COLUMNS)
    columns = {name: _cast(table[name], t, uri, name) for name, t in PREDICTION_TYPES.items()}
    if FEATURES in table.column_names:
        features = table[FEATURES]
        if not pa.types.is_struct(features.type):
            raise DataError(f"{uri}: column 'features' must be a struct, found {features.type}")
        for child in features.type:
            if not (_is_number_type(child.type) or is_text(child.type)):
                raise DataError(
                    f"{uri}: feature {child.name!r} has type {child.type}; "
                    "the log holds numbers and text only"
                )
        columns[FEATURES] = features
    else:
        columns[FEATURES] = pa.chunked_array(
            [pa.array([{}] * table.num_rows, pa.struct([]))], pa.struct([])
        )
    return pa.table(columns)


def _read_label_file(uri: str) -> pa.Table:
    table = _read_parquet(uri, "label", REQUIRED_LABEL_COLUMNS)
    request_id = _cast(table[REQUEST_ID], pa.string(), uri, REQUEST_ID)
    label = _cast(table[LABEL], pa.string(), uri, LABEL)
    for name, column in ((REQUEST_ID, request_id), (LABEL, label)):
        if column.null_count:
            raise DataError(
                f"{uri}: column {name!r} is empty in {column.null_count} rows; "
                "every label row needs a request id and a label"
            )
    if LABELLED_AT in table.column_names:
        labelled_at = _cast(table[LABELLED_AT], TIMESTAMP_TYPE, uri, LABELLED_AT)
    else:
        labelled_at = pa.chunked_array([pa.nulls(table.num_rows, TIMESTAMP_TYPE)])
    return pa.Table.from_arrays([request_id, label, labelled_at], schema=LABEL_SCHEMA)


def _is_number_type(type_: pa.DataType) -> bool:
    return is_numeric(type_) or pa.types.is_boolean(type_) or pa.types.is_null(type_)


def _concat_predictions(tables: list[pa.Table]) -> pa.Table:
    """One table from many files: the features of all files, a text feature in any file
    text everywhere, a feature a file lacks null there."""
    kinds: dict[str, pa.DataType] = {}
    for table in tables:
        for child in table[FEATURES].type:
            if is_text(child.type):
                kinds[child.name] = pa.string()
            else:
                kinds.setdefault(child.name, pa.float64())
    unified = pa.struct([(name, type_) for name, type_ in kinds.items()])
    return pa.concat_tables([_with_features(table, unified) for table in tables])


def _with_features(table: pa.Table, unified: pa.StructType) -> pa.Table:
    n = table.num_rows
    flat = table.select([FEATURES]).flatten()
    children: list[pa.Array] = []
    for child in unified:
        name = f"{FEATURES}.{child.name}"
        if name in flat.column_names:
            children.append(flat[name].combine_chunks().cast(child.type, safe=False))
        else:
            children.append(pa.nulls(n, child.type))
    if children:
        features = pa.StructArray.from_arrays(children, fields=list(unified))
    else:
        features = pa.array([{}] * n, pa.struct([]))
    return table.set_column(table.schema.get_field_index(FEATURES), FEATURES, features)
