"""Reading the prediction log: windows of predictions, labels, and their join.

Layout and rules: ctpipe.predlog. Records, columns and types: ctpipe.predlog.format.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import storage
from ctpipe.data import tables
from ctpipe.errors import DataError
from ctpipe.predlog import files as logfiles
from ctpipe.predlog.distinct import all_distinct, equal_pairs
from ctpipe.predlog.files import DATE_FOLDER_PREFIX, PARQUET_SUFFIX, date_folder
from ctpipe.predlog.format import (
    ALL_PREDICTION_COLUMNS,
    FEATURES,
    LABEL,
    LABEL_SCHEMA,
    LABELLED_AT,
    PREDICTION,
    PREDICTION_TYPES,
    REQUEST_ID,
    REQUIRED_LABEL_COLUMNS,
    REQUIRED_PREDICTION_COLUMNS,
    ROLE,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    ROLES,
    SERVED_ROLES,
    TIMESTAMP,
    TIMESTAMP_TYPE,
    by_time,
    check_model_name,
    check_prediction_schema,
    check_roles,
    empty_features,
    feature_struct,
    rows_where,
    unify,
    utc_or_fail,
    with_role,
)

logger = logging.getLogger(__name__)

# A bounded window up to this many days lists its date folders one by one; a wider or
# open window lists the whole model prefix once.
PREFIX_LISTING_MAX_DAYS = 62
UNMATCHED_EXAMPLES = 5
CONFLICT_EXAMPLES = 5
READ_THREADS = 16
# A compaction may replace files between our listing and our reading them: list again.
READ_ATTEMPTS = 5


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
    duplicate_labels: int  # label rows dropped: another row gives the same label for the id

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
    columns: Sequence[str] | None = None,
    roles: Sequence[str] | None = SERVED_ROLES,
) -> pa.Table:
    """Logged predictions with since <= timestamp < until (naive datetimes are UTC),
    sorted by timestamp, one row per request id (its first). Only the date folders the
    window touches are listed, and only `columns` (default: all) are read: the files are
    scanned as one pyarrow dataset, row groups outside the window skipped by their
    statistics. No files means an empty table with the log's columns.

    `roles` picks rows by their `role`: by default the answers callers got (`champion`
    and `canary`), never a shadow model's; None reads every row. A row from a file without
    the column is a `champion` row. Shadow rows repeat the request ids of the answers they
    shadow: they are de-duplicated among themselves, one shadow row per request id."""
    check_model_name(model_name)
    start = None if since is None else utc_or_fail(since, "since")
    end = None if until is None else utc_or_fail(until, "until")
    wanted = _wanted(columns)
    chosen = check_roles(roles)
    base = storage.join(str(root), model_name)
    for attempt in range(READ_ATTEMPTS):
        files = _log_files(base, start, end)
        try:
            table = _scan(files, start, end, wanted, chosen)
        except logfiles.Vanished:
            if attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2**attempt)  # let the compaction finish deleting
            continue
        break
    table = by_time(table)
    table, dropped = _first_per_request(table)
    if dropped:
        logger.warning(
            "prediction log %s: %d rows repeat a request id already logged; kept the first",
            base,
            dropped,
        )
    return table.select(list(wanted))


def read_history_and_window(
    root: str,
    model_name: str,
    *,
    now: datetime,
    window: timedelta,
    roles: Sequence[str] | None = SERVED_ROLES,
) -> tuple[pa.Table, pa.Table]:
    """What a monitor check reads: every prediction before `now` without its features (to
    count and to join labels), and the rows of the last `window` with them (for drift).
    Each row is read once, and only the window's features: a day of traffic is millions
    of rows. The history keeps one row per request id, as read_predictions does, and
    `roles` picks rows as there (default: what callers were answered, no shadow rows).
    The history has the role column only when shadow rows are asked for with others."""
    start = utc_or_fail(now, "now") - window
    current = read_predictions(root, model_name, since=start, until=now, roles=roles)
    kept = list(REQUIRED_PREDICTION_COLUMNS)
    if _mixes_shadow(check_roles(roles)):
        kept.append(ROLE)  # to tell a shadow row from the answer of the same request
    older = read_predictions(root, model_name, until=start, columns=kept, roles=roles)
    history = pa.concat_tables([older, current.select(kept)])
    history, _ = _first_per_request(history)  # an id logged on both sides of the cut
    return history, current


def read_labels(labels_root: str, model_name: str) -> pa.Table:
    """Every label row for the model (request_id, label as text, labelled_at or null), in
    file-name order (which is write order). Identical duplicates are kept (join_labels
    drops them); labels for one request id that disagree raise a DataError naming the ids
    and the files they are in."""
    check_model_name(model_name)
    files = storage.list_files(storage.join(str(labels_root), model_name), (PARQUET_SUFFIX,))
    parts = _read_all(files, _read_label_file)
    if not parts:
        return LABEL_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    conflicts = conflicting_labels(table)
    if conflicts:
        raise DataError(_conflict_message(conflicts, list(zip(files, parts, strict=True))))
    return table


def join_labels(predictions: pa.Table, labels: pa.Table) -> LabelledPredictions:
    """Attach each prediction's label. Identical labels for one request count once (the
    latest labelled_at is kept); labels that disagree raise a DataError."""
    for name, table in ((REQUEST_ID, predictions), (REQUEST_ID, labels), (LABEL, labels)):
        if name not in table.column_names:
            raise DataError(f"join_labels: column {name!r} is missing")
    if LABELLED_AT not in labels.column_names:
        labels = labels.append_column(LABELLED_AT, pa.nulls(labels.num_rows, TIMESTAMP_TYPE))
    labels = labels.select([REQUEST_ID, LABEL, LABELLED_AT])
    given = labels.num_rows
    rows, label_rows = equal_pairs(predictions[REQUEST_ID], labels[REQUEST_ID])
    if bool((np.bincount(rows, minlength=predictions.num_rows) > 1).any()):
        # A request with several label rows (rare: a label job that ran twice). One hash
        # join with the labels as they are is the common case; this is the slow one.
        conflicts = conflicting_labels(labels)
        if conflicts:
            raise DataError(_conflict_message(conflicts, [("the labels given", labels)]))
        labels = _one_label_per_request(labels)
        rows, label_rows = equal_pairs(predictions[REQUEST_ID], labels[REQUEST_ID])
    matched = np.zeros(labels.num_rows, bool)
    matched[label_rows] = True
    orphans = labels.filter(pa.array(~matched))  # no prediction has their id
    if orphans.num_rows:
        conflicts = conflicting_labels(orphans)
        if conflicts:
            raise DataError(_conflict_message(conflicts, [("the labels given", orphans)]))
        orphans = _one_label_per_request(orphans)
    label_of = np.full(predictions.num_rows, -1, np.int64)
    label_of[rows] = label_rows
    has_label = label_of >= 0
    joined = rows_where(predictions, has_label)
    taken = labels.take(pa.array(label_of[has_label]))
    joined = joined.append_column(LABEL, taken[LABEL]).append_column(
        LABELLED_AT, taken[LABELLED_AT]
    )
    kept = int(matched.sum()) + orphans.num_rows
    return LabelledPredictions(
        table=joined,
        labelled=joined.num_rows,
        unlabelled=predictions.num_rows - joined.num_rows,
        unmatched=orphans.num_rows,
        unmatched_examples=tuple(orphans[REQUEST_ID].slice(0, UNMATCHED_EXAMPLES).to_pylist()),
        duplicate_labels=given - kept,
    )


def conflicting_labels(labels: pa.Table) -> list[str]:
    """Request ids with more than one distinct label, sorted."""
    if all_distinct(labels[REQUEST_ID]):
        return []
    counts = (
        labels.select([REQUEST_ID, LABEL])
        .group_by(REQUEST_ID)
        .aggregate([(LABEL, "count_distinct")])
    )
    bad = counts.filter(pc.greater(counts[f"{LABEL}_count_distinct"], 1))
    return sorted(bad[REQUEST_ID].to_pylist())


def logged_predictions(table: pa.Table, task: str) -> Any:
    """The logged predictions: numbers for regression, else the log's spelling of each class."""
    if task == "regression":
        return np.asarray(pc.cast(table[PREDICTION], pa.float64()).to_numpy(zero_copy_only=False))
    return table[PREDICTION].to_pylist()


def features_table(predictions: pa.Table) -> pa.Table:
    """The `features` struct as plain columns, one per feature, for the drift engine."""
    if FEATURES not in predictions.column_names:
        return pa.table({})
    flat = predictions.select([FEATURES]).flatten()
    prefix = f"{FEATURES}."
    return flat.rename_columns([name.removeprefix(prefix) for name in flat.column_names])


# --------------------------------------------------------------------------- internals


def _wanted(columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        return ALL_PREDICTION_COLUMNS
    unknown = [c for c in columns if c not in ALL_PREDICTION_COLUMNS]
    if unknown:
        raise ValueError(
            f"unknown prediction log column(s) {unknown}; the log has {list(ALL_PREDICTION_COLUMNS)}"
        )
    return tuple(dict.fromkeys(columns))


def _mixes_shadow(roles: tuple[str, ...] | None) -> bool:
    """Whether rows of these roles can share a request id: shadow rows with answers."""
    chosen = set(ROLES if roles is None else roles)
    return ROLE_SHADOW in chosen and len(chosen) > 1


def _role_filter(roles: tuple[str, ...] | None) -> Any:
    """A dataset filter keeping the rows of `roles` (a missing role is `champion`)."""
    import pyarrow.dataset as ds

    if roles is None:
        return None
    keep = ds.field(ROLE).isin(pa.array(roles, pa.string()))
    if ROLE_CHAMPION in roles:
        keep = keep | ds.field(ROLE).is_null()
    return keep


def _scan(
    files: list[str],
    start: datetime | None,
    end: datetime | None,
    wanted: tuple[str, ...],
    roles: tuple[str, ...] | None = SERVED_ROLES,
) -> pa.Table:
    """The live files among `files` as one table of the log's schema, rows in the window
    and of `roles`. Always holds request_id and timestamp (to sort and de-duplicate), and
    role when rows of several roles can share a request id."""
    import pyarrow.dataset as ds

    columns = list(dict.fromkeys([REQUEST_ID, TIMESTAMP, *wanted]))
    if _mixes_shadow(roles) and ROLE not in columns:
        columns.append(ROLE)
    if not files:
        return empty_predictions().select(columns)
    footers = logfiles.live(logfiles.read_footers(files, "prediction log"))
    for footer in footers:
        check_prediction_schema(footer.uri, footer.schema)
    features = feature_struct(
        f.schema.field(FEATURES).type for f in footers if FEATURES in f.schema.names
    )
    schema = pa.schema([*PREDICTION_TYPES.items(), (FEATURES, features)])
    fs, _ = logfiles.filesystem(files[0])
    dataset = ds.FileSystemDataset(
        [f.fragment for f in footers], schema, ds.ParquetFileFormat(), fs
    )
    window = _role_filter(roles)
    if start is not None:
        after = ds.field(TIMESTAMP) >= pa.scalar(start, TIMESTAMP_TYPE)
        window = after if window is None else window & after
    if end is not None:
        before = ds.field(TIMESTAMP) < pa.scalar(end, TIMESTAMP_TYPE)
        window = before if window is None else window & before
    try:
        table = dataset.to_table(columns=columns, filter=window)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # A column the scan cannot cast: read file by file, which names the file.
        table = _read_one_by_one([f.uri for f in footers], start, end, roles)
        return table.select(columns)
    except OSError as exc:
        if any(logfiles.missing(f.uri) for f in footers):
            raise logfiles.Vanished(f"{files[0]}: files replaced while reading") from exc
        raise DataError(f"{logfiles.parent_of(files[0])}: cannot read the log ({exc})") from exc
    if FEATURES in table.column_names:
        table = _whole_features(table, features)
    if ROLE in table.column_names:
        table = with_role(table)  # rows of files from before the column
    return table


def _whole_features(table: pa.Table, features: pa.StructType) -> pa.Table:
    """Rows of files without features read as null structs: make them structs of nulls, as
    the rows of files that have features but not these."""
    column = table[FEATURES]
    if not features.num_fields:
        replaced: pa.Array | pa.ChunkedArray = empty_features(table.num_rows)
    elif column.null_count:
        replaced = pa.chunked_array(
            [pa.StructArray.from_arrays(c.flatten(), fields=list(features)) for c in column.chunks],
            features,
        )
    else:
        return table
    return table.set_column(table.schema.get_field_index(FEATURES), FEATURES, replaced)


def _first_per_request(table: pa.Table) -> tuple[pa.Table, int]:
    """The first row of each request id (rows are in timestamp order); rows dropped. With
    a role column, shadow rows count apart: a request's answer and its shadow row are two
    rows, and each keeps its first."""
    if all_distinct(table[REQUEST_ID]):
        return table, 0
    keys = [REQUEST_ID]
    indexed = pa.table(
        {REQUEST_ID: table[REQUEST_ID], "_row": pa.array(np.arange(table.num_rows, dtype=np.int64))}
    )
    if ROLE in table.column_names:
        shadow = pc.fill_null(pc.equal(table[ROLE], ROLE_SHADOW), False)
        indexed = indexed.append_column("_shadow", shadow)
        keys.append("_shadow")
    first = indexed.group_by(keys, use_threads=False).aggregate([("_row", "min")])
    keep = pc.sort_indices(first["_row_min"])
    kept = table.take(first["_row_min"].take(keep))
    return kept, table.num_rows - kept.num_rows


def _one_label_per_request(labels: pa.Table) -> pa.Table:
    """One row per request id (their labels agree): the latest by labelled_at (a null
    labelled_at counts as oldest; ties go to the later row)."""
    if all_distinct(labels[REQUEST_ID]):
        return labels
    when = pc.fill_null(labels[LABELLED_AT].cast(pa.int64()), pa.scalar(-(2**63), pa.int64()))
    order = pc.sort_indices(pa.table({"when": when}), sort_keys=[("when", "ascending")])
    ranked = labels.take(order)
    ranked = ranked.append_column("_rank", pa.array(np.arange(ranked.num_rows, dtype=np.int64)))
    last = ranked.group_by(REQUEST_ID, use_threads=False).aggregate([("_rank", "max")])
    keep = pc.sort_indices(last["_rank_max"])  # back to labelled_at order
    return ranked.take(last["_rank_max"].take(keep)).drop_columns(["_rank"])


def _conflict_message(conflicts: list[str], sources: list[tuple[str, pa.Table]]) -> str:
    examples = conflicts[:CONFLICT_EXAMPLES]
    seen: dict[str, list[str]] = {request: [] for request in examples}
    value_set = pa.array(examples, pa.string())
    for where, table in sources:
        rows = table.filter(pc.is_in(table[REQUEST_ID], value_set=value_set))
        for request, label in zip(
            rows[REQUEST_ID].to_pylist(), rows[LABEL].to_pylist(), strict=True
        ):
            seen[request].append(f"{label!r} in {where}")
    details = "; ".join(f"{request}: {', '.join(found)}" for request, found in seen.items())
    more = f" (and {len(conflicts) - len(examples)} more)" if len(conflicts) > len(examples) else ""
    return (
        f"{len(conflicts)} request ids have labels that disagree{more}: {details}. A request "
        "has one true outcome: remove or correct the wrong label rows"
    )


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
    """Read files concurrently: each S3 GET waits mostly on the network. The first bad
    file raises."""
    if len(files) < 2:
        return [read(uri) for uri in files]
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(files))) as pool:
        return list(pool.map(read, files))


def _read_one_by_one(
    files: list[str],
    start: datetime | None,
    end: datetime | None,
    roles: tuple[str, ...] | None = SERVED_ROLES,
) -> pa.Table:
    """The slow path of _scan, file by file: every cast is checked per file, so an error
    names the file it is in."""
    parts = _read_all(files, _read_prediction_file)
    table = unify(parts) if parts else empty_predictions()
    if roles is not None:
        table = table.filter(pc.is_in(table[ROLE], value_set=pa.array(roles, pa.string())))
    if start is not None:
        table = table.filter(pc.greater_equal(table[TIMESTAMP], pa.scalar(start, TIMESTAMP_TYPE)))
    if end is not None:
        table = table.filter(pc.less(table[TIMESTAMP], pa.scalar(end, TIMESTAMP_TYPE)))
    return table


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
    check_prediction_schema(uri, table.schema)
    table = with_role(table)  # a file from before the column: its rows are the champion's
    columns = {name: _cast(table[name], t, uri, name) for name, t in PREDICTION_TYPES.items()}
    result = pa.table(columns)
    if FEATURES in table.column_names:
        result = result.append_column(FEATURES, table[FEATURES])
    return result  # unify() gives every part the same features


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
