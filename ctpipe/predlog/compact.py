"""Compaction: each partition's small files merged into one, no row lost or doubled.

A partition's live files smaller than `small_bytes` are merged, in name order, into one
`compact-*.parquet`, its rows sorted by time (several files when their rows take more
than `max_output_bytes` of memory, which bounds what one merge holds). Its footer lists every file it replaces; it is
written with one atomic create (a local link, an S3 PUT), and only then are the old files
deleted. Readers skip listed files (ctpipe.predlog.files), so at every moment they see
either the old files or the compact one, never both and never neither; a reader that
listed the old files just before they went lists again.

Writers keep adding files meanwhile: a file that appears after the merge listed its
inputs is simply not an input, and stays for the next run. One compaction runs at a time
per model: a lock object (`_compact.lock`, created exclusively, with an expiry so that a
crashed run does not block the next ones for long) keeps a second one out, since two
merges of the same files would each produce a copy of their rows.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from ctpipe import storage
from ctpipe.errors import DataError
from ctpipe.predlog import files as logfiles
from ctpipe.predlog.files import DATE_FOLDER_PREFIX, Entry, Footer
from ctpipe.predlog.format import (
    FEATURES,
    PREDICTION_TYPES,
    by_time,
    check_model_name,
    check_prediction_schema,
    feature_struct,
    with_role,
)

logger = logging.getLogger(__name__)

MIB = 2**20
DEFAULT_SMALL_BYTES = 64 * MIB
DEFAULT_MAX_OUTPUT_BYTES = 256 * MIB  # of rows in memory: a merge holds them twice
DEFAULT_LOCK_SECONDS = 3600.0
ROW_GROUP_ROWS = 256 * 1024
LOCK_NAME = "_compact.lock"  # '_': listings of the log skip it


@dataclass(frozen=True, slots=True)
class Merged:
    """One compact file and what it replaced."""

    output: str
    inputs: int
    rows: int


@dataclass(frozen=True, slots=True)
class PartitionCompaction:
    folder: str
    merged: tuple[Merged, ...]
    removed: int  # files deleted: merged inputs, and copies an earlier merge had replaced
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one `compact` call did."""

    location: str
    partitions: tuple[PartitionCompaction, ...]
    skipped: str | None = None  # why nothing was done

    @property
    def errors(self) -> list[str]:
        return [f"{p.folder}: {p.error}" for p in self.partitions if p.error]

    def summary(self) -> str:
        if self.skipped:
            return f"{self.location}: compaction skipped: {self.skipped}"
        merged = [m for p in self.partitions for m in p.merged]
        removed = sum(p.removed for p in self.partitions)
        line = (
            f"{self.location}: {len(self.partitions)} partition(s) looked at; merged "
            f"{sum(m.inputs for m in merged)} files ({sum(m.rows for m in merged):,} rows) "
            f"into {len(merged)}, deleted {removed}"
        )
        return "\n".join([line, *(f"  error: {e}" for e in self.errors)])


def compact(
    root: str,
    model_name: str,
    *,
    days: int | None = None,
    today: date | None = None,
    small_bytes: int = DEFAULT_SMALL_BYTES,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    lock_seconds: float = DEFAULT_LOCK_SECONDS,
) -> Compaction:
    """Merge the small files of each partition of the model's log (with `days`, only the
    partitions of the last `days` UTC dates, today included). A partition that fails is
    reported in the result and left as it was; the others go on."""
    check_model_name(model_name)
    base = storage.join(str(root), model_name)
    partitions = _partitions(base, logfiles.list_sizes(base))
    if days is not None:
        first = (today or datetime.now(UTC).date()) - timedelta(days=days - 1)
        partitions = {k: v for k, v in partitions.items() if k[1] >= first}
    if not partitions:
        return Compaction(base, ())
    owner = _lock(base, lock_seconds)
    if owner is None:
        return Compaction(base, (), skipped=f"another compaction holds {LOCK_NAME}")
    try:
        results = tuple(
            _compact_partition(folder, entries, small_bytes, max_output_bytes)
            for (folder, _), entries in sorted(partitions.items())
        )
    finally:
        _unlock(base, owner)
    return Compaction(base, results)


def _partitions(base: str, entries: list[Entry]) -> dict[tuple[str, date], list[Entry]]:
    groups: dict[tuple[str, date], list[Entry]] = {}
    for entry in entries:
        parts = entry.relative.split("/")
        if len(parts) != 2 or not parts[0].startswith(DATE_FOLDER_PREFIX):
            continue
        try:
            day = date.fromisoformat(parts[0][len(DATE_FOLDER_PREFIX) :])
        except ValueError:
            continue
        groups.setdefault((storage.join(base, parts[0]), day), []).append(entry)
    return groups


def _compact_partition(
    folder: str, entries: list[Entry], small_bytes: int, max_output_bytes: int
) -> PartitionCompaction:
    small = [e for e in entries if e.size < small_bytes]
    compacts = [e for e in entries if logfiles.is_compact(e.uri) and e.size >= small_bytes]
    if len(small) < 2 and not compacts:
        return PartitionCompaction(folder, (), 0)
    try:
        footers = logfiles.read_footers([e.uri for e in [*compacts, *small]], "prediction log")
    except logfiles.Vanished as exc:  # a writer or reader does not delete: another compaction
        return PartitionCompaction(folder, (), 0, error=str(exc))
    except DataError as exc:
        return PartitionCompaction(folder, (), 0, error=str(exc))
    gone = logfiles.superseded(footers)
    leftovers = [f for f in footers if logfiles.key_of(f.uri) in gone]
    inputs = [f for f in footers[len(compacts) :] if logfiles.key_of(f.uri) not in gone]
    merged: list[Merged] = []
    removed = _delete([f.uri for f in leftovers])
    error = None
    if len(inputs) >= 2:
        for group in _groups(inputs, max_output_bytes):
            try:
                done = _merge(folder, group)
            except DataError as exc:
                error = str(exc)
                break
            merged.append(done)
            removed += _delete([f.uri for f in group])
    return PartitionCompaction(folder, tuple(merged), removed, error)


def _groups(footers: list[Footer], max_bytes: int) -> Iterator[list[Footer]]:
    """Runs of files, in name order, whose rows take at most about max_bytes in memory
    (estimated from the first file read whole: Parquet's own sizes miss what decoding
    dictionary-encoded text costs)."""
    if not footers:
        return
    sample = footers[0].fragment.to_table()
    per_row = sample.nbytes / max(sample.num_rows, 1)
    group: list[Footer] = []
    total = 0.0
    for footer in footers:
        size = footer.fragment.metadata.num_rows * per_row
        if group and total + size > max_bytes:
            if len(group) >= 2:
                yield group
            group, total = [], 0.0
        group.append(footer)
        total += size
    if len(group) >= 2:
        yield group


def _merge(folder: str, group: list[Footer]) -> Merged:
    """Write one compact file holding every row of group's files; nothing is deleted here."""
    import pyarrow.dataset as ds

    for footer in group:
        check_prediction_schema(footer.uri, footer.schema)
    features = feature_struct(
        f.schema.field(FEATURES).type for f in group if FEATURES in f.schema.names
    )
    fields = list(PREDICTION_TYPES.items())
    if features.num_fields:  # Parquet cannot store a struct without fields
        fields.append((FEATURES, features))
    replaced = {f.name for f in group}.union(*(f.compacted_from for f in group))
    schema = pa.schema(fields)
    expected = sum(f.fragment.metadata.num_rows for f in group)
    fs, _ = logfiles.filesystem(group[0].uri)
    dataset = ds.FileSystemDataset([f.fragment for f in group], schema, ds.ParquetFileFormat(), fs)
    try:
        # Sorted by time: the reader's sort then leaves this file's rows where they are.
        # Rows of files from before the role column are the champion's, and say so now.
        table = by_time(with_role(dataset.to_table(columns=schema.names)))
        sink = pa.BufferOutputStream()
        metadata = {logfiles.COMPACTED_FROM_KEY: logfiles.json_names(replaced)}
        with pq.ParquetWriter(sink, schema.with_metadata(metadata)) as writer:
            writer.write_table(table, ROW_GROUP_ROWS)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot merge {len(group)} files ({exc})") from exc
    rows = table.num_rows
    if rows != expected:  # never replace files by a copy that lacks rows
        raise DataError(f"merged {rows} rows where the {len(group)} files hold {expected}")
    output = storage.join(folder, logfiles.compact_name())
    if not logfiles.write_new(output, sink.getvalue().to_pybytes()):
        raise DataError(f"{output} exists already")
    logger.info("compacted %d files (%d rows) into %s", len(group), rows, output)
    return Merged(output, len(group), rows)


def _delete(uris: list[str]) -> int:
    """Delete what a compact file replaced; a failure only leaves a file readers skip."""
    deleted = 0
    for uri in uris:
        try:
            storage.delete(uri)
        except DataError as exc:
            logger.warning("compaction: %s (readers skip it; the next run retries)", exc)
        else:
            deleted += 1
    return deleted


def _lock(base: str, seconds: float) -> str | None:
    """Take the model's compaction lock; its owner token, or None when another run holds
    it. A lock past its expiry was left by a run that died: it is broken and taken."""
    uri = storage.join(base, LOCK_NAME)
    owner = logfiles.new_token()
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    body = json.dumps(
        {
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "until": until.isoformat(),
        }
    ).encode()
    for _ in range(2):
        if logfiles.write_new(uri, body):
            return owner
        try:
            held = json.loads(storage.read_bytes(uri))
            expired = datetime.fromisoformat(held["until"]) < datetime.now(UTC)
        except (DataError, ValueError, KeyError, TypeError):
            expired = True  # unreadable: a lock cut short, or gone since; try again
        if not expired:
            logger.info(
                "compaction: %s is held by %s until %s", uri, held.get("host"), held["until"]
            )
            return None
        logger.warning("compaction: breaking the expired lock %s", uri)
        storage.delete(uri)
    return None


def _unlock(base: str, owner: str) -> None:
    uri = storage.join(base, LOCK_NAME)
    try:
        held = json.loads(storage.read_bytes(uri))
    except (DataError, ValueError):
        return
    if held.get("owner") == owner:
        storage.delete(uri)
