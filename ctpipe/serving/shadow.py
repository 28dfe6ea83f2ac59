"""Shadow scoring: a second model answers the requests the champion answered, off the
request path, and its answers go to the prediction log as `shadow` rows.

The shadow is the registry's `challenger` by default (`models:/<name>@challenger` beside
`models:/<name>@champion`), followed on the champion's reload interval: loaded when the
alias appears or moves, dropped when it is removed or names the champion's version. An
unset alias is no shadow, quietly; a version that fails to load (unblessed, a checksum
that does not match, a model that fails its input example) is logged and skipped while
the champion serves on (with no shadow: the version loaded before is no longer the
challenger), and tried again after RETRY_SECONDS or when the alias moves.

A request hands (the shadow snapshot, its parsed batch) to a queue bounded in rows once
the champion's answer is computed: an append under a lock, never a wait. When the queue
is full the work is dropped and counted. One daemon thread scores the queue: it gathers
what arrives over LINGER_SECONDS (or BATCH_ROWS rows) and scores it in one predict call,
so the shadow costs the server about one predict call a second rather than one per
request (a call's fixed cost - DataFrame, preprocessing, input checks - is most of a
single row's: with the bench's pipeline a hundred rows cost under twice one), and takes
the GIL, which the request path needs, about once a second rather than after every
request; bench/serving.py measures what is left. A failed predict is counted and logged
at most once a minute; the answers callers got were the champion's all along.

Shadow rows carry the request ids, the champion row's timestamp, the shadow's version and
its prediction and score; no features (the champion's row of the same request has them).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from ctpipe.errors import CtpipeError
from ctpipe.predlog import ROLE_SHADOW, PredictionBatch, PredictionLogWriter
from ctpipe.serving import metrics
from ctpipe.serving.payload import Batch, predict
from ctpipe.serving.source import Loaded, ModelSource

log = logging.getLogger("ctpipe.serving")

DEFAULT_QUEUE_ROWS = 10_000
LINGER_SECONDS = 1.0  # the worker gathers requests this long before one predict call
BATCH_ROWS = 1024  # most rows in one predict call
ERROR_LOG_SECONDS = 60.0  # a failing shadow logs at most this often
RETRY_SECONDS = 300.0  # a version that failed to load is tried again after this long
STOP_SECONDS = 10.0  # at shutdown, how long the queue may take to drain


@dataclass(frozen=True, slots=True)
class _Work:
    loaded: Loaded
    batch: Batch
    at: datetime  # the champion row's timestamp


class ShadowScorer:
    """The bounded queue and its one daemon worker thread."""

    def __init__(
        self,
        name: str,
        writer: PredictionLogWriter,
        *,
        max_rows: int = DEFAULT_QUEUE_ROWS,
        linger_seconds: float = LINGER_SECONDS,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        if max_rows < 1 or batch_rows < 1:
            raise ValueError(
                f"max_rows and batch_rows must be at least 1, got {max_rows}, {batch_rows}"
            )
        self.name = name
        self.writer = writer
        self.max_rows = max_rows
        self.linger_seconds = linger_seconds
        self.batch_rows = batch_rows
        self._queue: deque[_Work] = deque()
        self._rows = 0  # queued
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._scored = metrics.shadow_rows.labels(name)
        self._dropped = metrics.shadow_dropped.labels(name)
        self._failed = metrics.shadow_failed.labels(name)
        self.scored = self.dropped = self.failed = 0  # this scorer's own counts
        self._errors_unlogged = 0
        self._logged_error_at: float | None = None

    @property
    def queued_rows(self) -> int:
        with self._cond:
            return self._rows

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="ctpipe-shadow-scorer", daemon=True
            )
            self._thread.start()

    def submit(self, loaded: Loaded, batch: Batch, at: datetime) -> bool:
        """Queue a request's batch for the shadow; False (dropped, counted) when the queue
        is full or stopped. Never waits beyond a short lock."""
        rows = batch.rows
        with self._cond:
            if self._stopping or self._rows + rows > self.max_rows:
                self.dropped += rows
                accepted = False
            else:
                wake = not self._queue or self._rows + rows >= self.batch_rows > self._rows
                self._queue.append(_Work(loaded, batch, at))
                self._rows += rows
                accepted = True
                if wake:
                    self._cond.notify()
        if not accepted:
            self._dropped.inc(rows)
        return accepted

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Score what is queued (for up to `timeout` seconds), then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "shadow of %s: %d queued rows not scored at shutdown",
                    self.name,
                    self.queued_rows,
                )

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, and nothing left
                if not self._stopping and self._rows < self.batch_rows:
                    self._cond.wait_for(
                        lambda: self._stopping or self._rows >= self.batch_rows,
                        self.linger_seconds,
                    )
                works = self._take()
            try:
                self._score(works)
            except Exception:  # a bug must not end the worker
                log.exception("shadow of %s: scoring failed", self.name)

    def _take(self) -> list[_Work]:
        """Queued work of up to batch_rows rows (at least one request). Holds _cond."""
        works = [self._queue.popleft()]
        rows = works[0].batch.rows
        while self._queue and rows + self._queue[0].batch.rows <= self.batch_rows:
            work = self._queue.popleft()
            works.append(work)
            rows += work.batch.rows
        self._rows -= rows
        return works

    def _score(self, works: list[_Work]) -> None:
        records: list[PredictionBatch] = []
        # One call per run of requests queued for the same shadow snapshot.
        for _, run in itertools.groupby(works, key=lambda w: id(w.loaded)):
            group = list(run)
            try:
                records += _records(group)
            except Exception as exc:
                if len(group) == 1:
                    self._fail(group[0].batch.rows, exc)
                    continue
                for work in group:  # one bad request must not cost the others theirs
                    try:
                        records += _records([work])
                    except Exception as single:
                        self._fail(work.batch.rows, single)
        if not records:
            return
        try:
            self.writer.append(records)
        except Exception as exc:  # a closed writer, at shutdown
            self._fail(sum(len(r) for r in records), exc)
            return
        rows = sum(len(r) for r in records)
        self.scored += rows
        self._scored.inc(rows)

    def _fail(self, rows: int, exc: Exception) -> None:
        self.failed += rows
        self._failed.inc(rows)
        self._errors_unlogged += rows
        now = time.monotonic()
        if self._logged_error_at is None or now - self._logged_error_at >= ERROR_LOG_SECONDS:
            log.warning(
                "shadow of %s: %d rows failed since the last report (%s: %s); the champion "
                "answered them (next report in %.0fs at the earliest)",
                self.name,
                self._errors_unlogged,
                type(exc).__name__,
                exc,
                ERROR_LOG_SECONDS,
            )
            self._logged_error_at, self._errors_unlogged = now, 0


def _records(works: list[_Work]) -> list[PredictionBatch]:
    """The shadow's answers to the works' requests, scored in one predict call."""
    loaded = works[0].loaded
    kinds = loaded.signature.columns
    if len(works) == 1 and works[0].batch.kinds == kinds:
        batch = works[0].batch
    else:
        # A request lacking a column the shadow needs (its signature differs from the
        # champion's) fails here, with a KeyError naming the column.
        batch = Batch(
            {
                name: list(itertools.chain.from_iterable(w.batch.columns[name] for w in works))
                for name, _ in kinds
            },
            list(itertools.chain.from_iterable(w.batch.ids for w in works)),
            "v1",
            "",
            kinds,
        )
    result = predict(loaded, batch)
    records = []
    start = 0
    for work in works:
        end = start + work.batch.rows
        records.append(
            PredictionBatch(
                work.batch.ids,
                work.at,
                loaded.version,
                result.predictions[start:end],
                result.scores[start:end],
                role=ROLE_SHADOW,
            )
        )
        start = end
    return records


class Shadow:
    """The shadow model of one predictor: its source, the version loaded, its scorer."""

    def __init__(
        self,
        name: str,
        source: ModelSource,
        writer: PredictionLogWriter,
        *,
        queue_rows: int = DEFAULT_QUEUE_ROWS,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self.name = name
        self.source = source
        self.current: Loaded | None = None
        self.scorer = ShadowScorer(name, writer, max_rows=queue_rows, linger_seconds=linger_seconds)
        # The counters start at 0, so that rate() sees the first rows.
        for counter in (metrics.shadow_rows, metrics.shadow_dropped, metrics.shadow_failed):
            counter.labels(name)
        self._failed_version: str | None = None
        self._failed_at = 0.0
        self._error_logged_at: float | None = None

    @property
    def follows(self) -> bool:
        """Whether refresh() has anything to watch: an alias, or a load to retry."""
        return self.source.alias is not None or self.current is None

    def start(self) -> None:
        self.scorer.start()

    def stop(self) -> None:
        self.scorer.stop()

    def submit(self, champion: Loaded, batch: Batch, at: datetime) -> None:
        """After the champion answered: queue the batch for the shadow, when there is one
        and it is another version than the champion's."""
        shadow = self.current
        if shadow is not None and shadow.version != champion.version:
            self.scorer.submit(shadow, batch, at)

    def refresh(self, champion_version: str | None) -> None:
        """Load, swap or drop the shadow as its source says now. Never raises: the
        champion serves whatever happens here."""
        try:
            self._refresh(champion_version)
        except Exception as exc:
            now = time.monotonic()
            if self._error_logged_at is None or now - self._error_logged_at >= ERROR_LOG_SECONDS:
                self._error_logged_at = now
                log.warning(
                    "shadow of %s: cannot check %s (%s: %s); trying again",
                    self.name,
                    self.source.uri,
                    type(exc).__name__,
                    exc,
                )

    def _refresh(self, champion_version: str | None) -> None:
        if self.source.alias is not None:
            version = self.source.current_version()
            if version is None:
                self._unload(f"alias {self.source.alias[1]!r} is not set")
                return
            if version == champion_version:
                self._unload(f"v{version} is the champion")
                return
            if self.current is not None and self.current.version == version:
                return
        elif self.current is not None:
            return  # a pinned source: loaded once
        else:
            version = None
        if version is not None and version == self._failed_version and not self._retry_due():
            return
        if version is None and self._failed_at and not self._retry_due():
            return
        try:
            loaded = self.source.load()
        except Exception as exc:
            self._failed_version, self._failed_at = version, time.monotonic()
            # The alias names another version now: the one loaded is no challenger.
            self._unload(f"the alias moved to v{version}, which did not load")
            detail = str(exc) if isinstance(exc, CtpipeError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "shadow of %s: cannot load %s (%s); no shadow, the champion serves on "
                "(trying again in %.0fs or when the alias moves)",
                self.name,
                self.source.uri,
                detail,
                RETRY_SECONDS,
            )
            return
        self._failed_version, self._failed_at = None, 0.0
        if loaded.version == champion_version:
            self._unload(f"v{loaded.version} is the champion")
            return
        self._install(loaded)

    def _retry_due(self) -> bool:
        return time.monotonic() - self._failed_at >= RETRY_SECONDS

    def _install(self, loaded: Loaded) -> None:
        previous, self.current = self.current, loaded
        metrics.shadow_info.labels(self.name, loaded.version).set(1)
        if previous is not None and previous.version != loaded.version:
            metrics.shadow_info.remove(self.name, previous.version)
        log.info(
            "shadow of %s: scoring version %s from %s beside the champion",
            self.name,
            loaded.version,
            self.source.uri,
        )

    def _unload(self, why: str) -> None:
        previous, self.current = self.current, None
        if previous is None:
            return
        metrics.shadow_info.remove(self.name, previous.version)
        log.info("shadow of %s: stopped scoring version %s (%s)", self.name, previous.version, why)
