"""The prediction log writer: every acknowledged row reaches the sink, or is counted as lost.

A row travels in three steps:

1. `append` puts it in a memory buffer: a lock and a list extend, so the request path never
   waits for I/O. The buffer holds at most `max_buffer_rows`; rows beyond that are lost.
2. Every `journal_seconds` (1 s) a thread turns the buffer into one Arrow table and appends
   it to the local journal (ctpipe.predlog.journal), fsync'd. From then on the row survives
   SIGKILL, an OOM kill and a power cut. Without a journal, or while appending to it fails
   (a full or broken disk), the table waits in memory instead, up to `max_memory_bytes`;
   beyond that rows are lost. Tables that waited move to the journal once it works again.
3. Another thread writes what was journaled since its last write as one Parquet file per
   UTC date once that reaches `max_bytes` (64 MiB of Arrow data) or its oldest row is
   `max_seconds` old (5 min), or `max_rows` rows when set; only then are the rows removed
   from the journal. A failed write keeps them and is retried after a back-off
   (max_seconds, doubling, capped at MAX_RETRY_SECONDS or max_seconds if larger). A batch
   is written under names fixed by its journal segment, so a write retried, or replayed
   after a crash, finds its file there instead of adding a copy.

What can be lost, with a journal: the rows of the last journal interval (<= 1 s) when the
process is killed, and the rows counted in `rows_lost`. Without one: everything not yet in
the sink when the process ends. The journal is replayed when a writer starts on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import pyarrow as pa

from ctpipe import storage
from ctpipe.errors import DataError
from ctpipe.predlog import files as logfiles
from ctpipe.predlog.format import (
    LABEL,
    LABELLED_AT,
    REQUEST_ID,
    TIMESTAMP_TYPE,
    Label,
    Logged,
    Prediction,
    PredictionBatch,
    check_model_name,
    for_file,
    parquet_bytes,
    prediction_text,
    predictions_table,
    rows_in,
    split_by_date,
    unify,
)
from ctpipe.predlog.journal import Journal, JournalFull, Segment

logger = logging.getLogger(__name__)

MIB = 2**20
DEFAULT_MAX_BYTES = 64 * MIB
DEFAULT_MAX_SECONDS = 300.0
DEFAULT_JOURNAL_SECONDS = 1.0
DEFAULT_MAX_JOURNAL_BYTES = 512 * MIB  # the predictor's /tmp emptyDir holds 2 GiB
DEFAULT_MAX_MEMORY_BYTES = 256 * MIB
DEFAULT_MAX_BUFFER_ROWS = 1_000_000
MAX_RETRY_SECONDS = 60.0


@dataclass(slots=True)
class _Batch:
    """Rows sealed for one sink write: a journal segment, or tables held only in memory."""

    stamp: str
    token: str
    rows: int
    segment: Segment | None = None
    tables: list[pa.Table] = field(default_factory=list)
    memory_bytes: int = 0


class PredictionLogWriter:
    """Logs predictions to `<root>/<model_name>/date=YYYY-MM-DD/` from background threads.

    Use it as a context manager, or call `close()`, to write what is left. Pass
    `journal_dir` (a local folder) for durability; see the module docstring.
    `rows_lost` counts rows that were acknowledged by `append` and will never be written.
    """

    def __init__(
        self,
        root: str,
        model_name: str,
        *,
        max_rows: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        journal_dir: str | None = None,
        journal_seconds: float = DEFAULT_JOURNAL_SECONDS,
        max_journal_bytes: int = DEFAULT_MAX_JOURNAL_BYTES,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
        max_buffer_rows: int = DEFAULT_MAX_BUFFER_ROWS,
    ) -> None:
        check_model_name(model_name)
        for name, value in (
            ("max_rows", 1 if max_rows is None else max_rows),
            ("max_bytes", max_bytes),
            ("max_memory_bytes", max_memory_bytes),
            ("max_buffer_rows", max_buffer_rows),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name, seconds in (("max_seconds", max_seconds), ("journal_seconds", journal_seconds)):
            if seconds <= 0:
                raise ValueError(f"{name} must be positive, got {seconds}")
        self.root = str(root)
        self.model_name = model_name
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_seconds = float(max_seconds)
        self.journal_seconds = float(journal_seconds)
        self.max_memory_bytes = max_memory_bytes
        self.max_buffer_rows = max_buffer_rows
        self._lock = threading.Lock()  # all state below; never held during I/O
        self._io_lock = threading.Lock()  # one sink write at a time
        self._tick_lock = threading.Lock()  # one journal step at a time; sealing takes it too
        self._sink_wake = threading.Event()
        self._stop = threading.Event()
        self._buffer: list[Logged] = []
        self._buffered = 0
        self._memory: list[pa.Table] = []  # not journaled, not sealed
        self._memory_rows = 0
        self._memory_bytes = 0  # of _memory and of sealed memory batches
        self._batches: list[_Batch] = []  # sealed, waiting for the sink
        self._open_rows = 0  # rows since the last seal, wherever they are
        self._open_bytes = 0
        self._open_since: float | None = None
        self._pending = 0
        self._journaled = 0
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._rows_written = 0
        self._files_written = 0
        self._rows_lost = 0
        self._last_error: str | None = None
        self._journal_error: str | None = None
        self._journal: Journal | None = None
        if journal_dir is not None:
            try:
                self._journal = Journal(
                    journal_dir, model_name, self.root, max_bytes=max_journal_bytes
                )
            except OSError as exc:
                raise DataError(
                    f"prediction log journal {journal_dir}: cannot open it ({exc})"
                ) from exc
            self._rows_lost = self._journal.torn_rows
            for segment in self._journal.recovered:
                self._batches.append(_Batch(segment.stamp, segment.token, segment.rows, segment))
                self._pending += segment.rows
                self._journaled += segment.rows
            if self._journal.recovered:
                logger.info(
                    "prediction log %s: replaying %d rows from the journal %s",
                    self.location,
                    self._pending,
                    self._journal.slot,
                )
        self._threads = [
            threading.Thread(target=target, name=f"ctpipe-predlog-{model_name}-{kind}", daemon=True)
            for kind, target in (("journal", self._journal_loop), ("sink", self._sink_loop))
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ state

    @property
    def location(self) -> str:
        return storage.join(self.root, self.model_name)

    @property
    def journal_location(self) -> str | None:
        return None if self._journal is None else str(self._journal.slot)

    @property
    def pending(self) -> int:
        """Rows acknowledged and not yet in the sink (nor lost)."""
        with self._lock:
            return self._pending

    @property
    def journaled(self) -> int:
        """Of the pending rows, those safe in the journal."""
        with self._lock:
            return self._journaled

    @property
    def rows_lost(self) -> int:
        """Rows acknowledged that will never be written: the buffer, memory and journal were
        full or failing, or a crash tore the journal's last frame. Only ever grows."""
        with self._lock:
            return self._rows_lost

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
        """Sink writes that failed in a row; 0 after a successful one."""
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

    # ------------------------------------------------------------------ API

    def append(self, records: Logged | Iterable[Logged]) -> None:
        """Buffer one prediction, a request's batch, or several of either; never waits
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
        rows = rows_in(batch)
        if not rows:
            return
        lost = 0
        first = full = False
        with self._lock:
            if self._closed:
                raise ValueError(f"prediction log writer for {self.location} is closed")
            if self._buffered + rows > self.max_buffer_rows:
                self._rows_lost += rows
                lost = self._rows_lost
            else:
                first = self._open_since is None
                if first:
                    self._open_since = time.monotonic()
                self._buffer.extend(batch)
                self._buffered += rows
                self._pending += rows
                self._open_rows += rows
                full = self.max_rows is not None and self._open_rows >= self.max_rows
        if lost:
            logger.error(
                "prediction log %s: buffer full (%d rows): %d rows lost, %d in all",
                self.location,
                self.max_buffer_rows,
                rows,
                lost,
            )
        elif first or full:
            self._sink_wake.set()

    def flush(self) -> int:
        """Write everything acknowledged so far to the sink now; returns the rows written.

        Raises DataError if a write fails; the rows stay where they were (journal or memory).
        """
        return self._flush_pending()

    def close(self) -> None:
        """Stop the threads and write what is left. Safe to call again: a second call
        retries what a failed one kept. Raises DataError saying where the unwritten rows
        are: in the journal (written by the next writer started on it) or in memory (lost
        when the process ends)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._sink_wake.set()
        for thread in self._threads:
            if thread.is_alive() and threading.current_thread() is not thread:
                thread.join()
        try:
            self._flush_pending()
        except DataError as exc:
            raise DataError(self._exit_message(exc)) from exc
        if self._journal is not None:
            self._journal.close()
        lost = self.rows_lost
        if lost:
            logger.error("prediction log %s: %d rows were lost", self.location, lost)

    def __enter__(self) -> PredictionLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ journal thread

    def _journal_loop(self) -> None:
        while not self._stop.wait(self.journal_seconds):
            try:
                with self._tick_lock:
                    self._tick()
            except Exception:  # a bug must not stop later ticks
                logger.exception("prediction log %s: journal step failed", self.location)

    def _tick(self) -> None:
        """Buffer -> one table -> journal (or memory). Holds _tick_lock."""
        with self._lock:
            items, self._buffer, self._buffered = self._buffer, [], 0
        if self._memory and self._journal is not None:
            self._spill_memory()
        if not items:
            return
        rows = rows_in(items)
        try:
            table = predictions_table(self.model_name, items)
        except Exception:
            logger.exception(
                "prediction log %s: %d rows could not be converted", self.location, rows
            )
            self._lose(rows, "they could not be converted")
            return
        if self._journal is not None and not self._memory:
            try:
                self._journal.append(table)
            except (OSError, JournalFull) as exc:
                self._journal_failed(exc)
            else:
                self._kept(table, journaled=True)
                return
        with self._lock:
            fits = self._memory_bytes + table.nbytes <= self.max_memory_bytes
        if not fits:
            self._lose(rows, f"memory holds {self.max_memory_bytes:,} bytes already")
            return
        with self._lock:
            self._memory.append(table)
            self._memory_rows += rows
            self._memory_bytes += table.nbytes
        self._kept(table, journaled=False)

    def _kept(self, table: pa.Table, *, journaled: bool) -> None:
        with self._lock:
            if journaled:
                self._journaled += table.num_rows
                self._journal_error = None
            self._open_bytes += table.nbytes
            full = self._open_bytes >= self.max_bytes
        if full:
            self._sink_wake.set()

    def _spill_memory(self) -> None:
        """Move tables that waited in memory (the journal failed) into the journal."""
        assert self._journal is not None
        while True:
            with self._lock:
                if not self._memory:
                    return
                table = self._memory[0]
            try:
                self._journal.append(table)
            except (OSError, JournalFull) as exc:
                self._journal_failed(exc)
                return
            with self._lock:
                self._memory.pop(0)
                self._memory_rows -= table.num_rows
                self._memory_bytes -= table.nbytes
                self._journaled += table.num_rows
            logger.info(
                "prediction log %s: %d rows that waited in memory are in the journal now",
                self.location,
                table.num_rows,
            )

    def _journal_failed(self, exc: BaseException) -> None:
        message = str(exc)
        with self._lock:
            new, self._journal_error = message != self._journal_error, message
        if new:  # once per distinct error, not once a second
            logger.warning(
                "prediction log %s: cannot append to the journal (%s); rows wait in memory "
                "(up to %d bytes)",
                self.location,
                message,
                self.max_memory_bytes,
            )

    def _lose(self, rows: int, why: str) -> None:
        with self._lock:
            self._rows_lost += rows
            self._pending -= rows
            self._open_rows -= rows
            lost = self._rows_lost
        logger.error(
            "prediction log %s: %d rows lost (%s), %d in all", self.location, rows, why, lost
        )

    # ------------------------------------------------------------------ sink thread

    def _sink_loop(self) -> None:
        while True:
            self._sink_wake.clear()  # before reading state: a set() after this is not lost
            with self._lock:
                if self._closed:
                    return
                due = self._due()
            now = time.monotonic()
            if due is not None and now >= due:
                try:
                    self._flush_pending(when_due=True)
                except DataError as exc:
                    logger.warning("%s", exc)
                except Exception:  # a bug must not stop later flushes
                    logger.exception("prediction log %s: flush failed", self.location)
                continue
            self._sink_wake.wait(None if due is None else due - now)

    def _due(self) -> float | None:
        """When the next sink write is due (monotonic), None when there is nothing to write."""
        now = time.monotonic()
        if self._batches:
            due = now  # sealed and waiting: a replayed journal, or a write that failed
        elif self._open_rows > 0:
            due = (self._open_since or now) + self.max_seconds
            if self._open_bytes >= self.max_bytes or (
                self.max_rows is not None and self._open_rows >= self.max_rows
            ):
                due = now
        else:
            return None
        return max(due, self._retry_at)

    def _flush_pending(self, *, when_due: bool = False) -> int:
        with self._io_lock:
            if when_due:
                # Checked again under the I/O lock: a flush that failed while this thread
                # waited for the lock has set a back-off that this write must respect.
                with self._lock:
                    due = self._due()
                if due is None or due > time.monotonic():
                    return 0
            with self._tick_lock:
                self._tick()
                self._seal()
            with self._lock:
                batches = list(self._batches)
            written = files = 0
            failure: BaseException | None = None
            failed_rows = 0
            for number, batch in enumerate(batches):
                tables = self._load(batch)
                if tables is None:
                    continue
                try:
                    files += self._write_batch(batch, tables)
                except Exception as exc:  # storage raises DataError, a local disk OSError
                    failure = exc
                    failed_rows = sum(b.rows for b in batches[number:])
                    break
                self._done(batch)
                written += batch.rows
            with self._lock:
                self._files_written += files
                if failure is None:
                    self._failures, self._retry_at, self._last_error = 0, 0.0, None
                    return written
                self._failures += 1
                delay = min(
                    self.max_seconds * 2 ** min(self._failures - 1, 30),
                    max(self.max_seconds, MAX_RETRY_SECONDS),
                )
                self._retry_at = time.monotonic() + delay
                self._last_error = str(failure)
                where = self._whereabouts()
        raise DataError(
            f"prediction log {self.location}: could not write {failed_rows} rows ({failure}); "
            f"{where}; next try in {delay:g}s"
        )

    def _seal(self) -> None:
        """What was kept since the last seal becomes batches for the sink. Holds _tick_lock."""
        segments = self._journal.seal() if self._journal is not None else []
        with self._lock:
            for segment in segments:
                self._batches.append(_Batch(segment.stamp, segment.token, segment.rows, segment))
            if self._memory:
                self._batches.append(
                    _Batch(
                        logfiles.new_stamp(),
                        logfiles.new_token(),
                        self._memory_rows,
                        tables=self._memory,
                        memory_bytes=sum(t.nbytes for t in self._memory),
                    )
                )
                self._memory, self._memory_rows = [], 0
            # Rows appended since this step's tick are still in the buffer: they start the
            # next batch.
            self._open_rows, self._open_bytes = self._buffered, 0
            self._open_since = time.monotonic() if self._buffered else None

    def _load(self, batch: _Batch) -> list[pa.Table] | None:
        """The batch's tables; None when its journal segment cannot be read (lost)."""
        if batch.segment is None:
            return batch.tables
        assert self._journal is not None
        try:
            return self._journal.read(batch.segment)
        except OSError as exc:
            logger.error(
                "prediction log %s: journal segment %s is unreadable (%s): %d rows lost",
                self.location,
                batch.segment.path,
                exc,
                batch.rows,
            )
            self._done(batch, lost=True)
            return None

    def _write_batch(self, batch: _Batch, tables: list[pa.Table]) -> int:
        """One Parquet file per date among the batch's rows; returns the files created."""
        name = logfiles.part_name(batch.stamp, batch.token)
        created = 0
        for day, rows in split_by_date(unify(tables)):
            uri = storage.join(self.location, logfiles.date_folder(day), name)
            # False: the file is there from an earlier try of this batch, whose journal
            # segment outlived it (a crash between the write and the removal).
            created += logfiles.write_new(uri, parquet_bytes(for_file(rows)))
        return created

    def _done(self, batch: _Batch, *, lost: bool = False) -> None:
        if batch.segment is not None and self._journal is not None:
            try:
                self._journal.remove(batch.segment)
            except OSError as exc:  # a later start replays it; its files exist, so no copy
                logger.warning("prediction log: cannot remove %s (%s)", batch.segment.path, exc)
        with self._lock:
            if batch in self._batches:
                self._batches.remove(batch)
            self._pending -= batch.rows
            if batch.segment is not None:
                self._journaled -= batch.rows
            else:
                self._memory_bytes -= batch.memory_bytes
            if lost:
                self._rows_lost += batch.rows
            else:
                self._rows_written += batch.rows

    def _whereabouts(self) -> str:
        """Where the pending rows are, in words. Holds _lock."""
        in_memory = self._pending - self._journaled
        parts = []
        if self._journaled:
            parts.append(f"{self._journaled} rows wait in the journal at {self.journal_location}")
        if in_memory:
            why = "no journal" if self._journal is None else "the journal failed"
            parts.append(f"{in_memory} rows wait in memory only ({why})")
        return ", ".join(parts) or "nothing waits"

    def _exit_message(self, exc: DataError) -> str:
        with self._lock:
            journaled, in_memory, lost = (
                self._journaled,
                self._pending - self._journaled,
                self._rows_lost,
            )
            error = self._last_error or str(exc)
        sentences = [
            f"prediction log {self.location}: {journaled + in_memory} rows could not be "
            f"written at close ({error})"
        ]
        if journaled:
            sentences.append(
                f"{journaled} of them are safe in the journal at {self.journal_location} and "
                "are written when a writer starts on it again"
            )
        if in_memory:
            sentences.append(
                f"{in_memory} of them are in memory only and are lost when this process ends "
                "(close() again retries)"
            )
        if lost:
            sentences.append(
                f"{lost} rows were lost before (buffer, memory and journal full or failing)"
            )
        return "; ".join(sentences)


def write_labels(labels_root: str, model_name: str, labels: Iterable[Label]) -> str | None:
    """Write one new label file; returns its URI, or None when there were no labels."""
    check_model_name(model_name)
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
    folder = storage.join(str(labels_root), model_name)
    data = parquet_bytes(table)
    for _ in range(3):
        uri = storage.join(folder, logfiles.part_name(logfiles.new_stamp(), logfiles.new_token()))
        if logfiles.write_new(uri, data):
            return uri
    raise DataError(f"{folder}: no free part file name after 3 tries")
