"""The prediction log writer's local journal: rows acknowledged but not yet in the sink.

    <directory>/<model>-<12 hex of the sink URI>/slot-<n>/seg-<UTC stamp>-<16 hex>.journal

A segment is a run of frames, appended and fsync'd once per writer tick (about a second
of traffic). A frame is a header (magic, payload length, rows, CRC-32 of the payload) and
an Arrow IPC stream holding one table. A process that dies mid-append leaves a torn last
frame; the next start keeps the frames before it (the CRC tells where) and cuts the rest.

A writer holds its slot with an flock for its life, so two writers (two replicas on one
volume, or a restarted process while the old one still shuts down) never share a segment.
The kernel drops the lock when the process dies, SIGKILL included: the next writer for the
same sink claims the slot, or adopts the segments of any slot nobody holds, and writes
them to the sink before anything else. The sink is part of the folder name so that a
journal is only ever replayed into the log it was meant for.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ctpipe.predlog.files import fsync_dir, new_stamp, new_token

logger = logging.getLogger(__name__)

MAGIC = b"CTJ1"
HEADER = struct.Struct("<4sIII")  # magic, payload bytes, rows, crc32(payload)
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".journal"
SLOT_PREFIX = "slot-"
LOCK_NAME = "lock"
MAX_SLOTS = 64


class JournalFull(Exception):
    """The journal holds max_bytes already: the rows must wait in memory (or be lost)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A closed segment: its rows are safe on local disk until the sink has them."""

    path: Path
    rows: int
    size: int

    @property
    def stamp(self) -> str:
        return self.path.name.removeprefix(SEGMENT_PREFIX).split("-", 1)[0]

    @property
    def token(self) -> str:
        return self.path.name.removesuffix(SEGMENT_SUFFIX).rsplit("-", 1)[1]


@dataclass(slots=True)
class _Open:
    path: Path
    fd: int
    rows: int = 0
    size: int = 0


def journal_key(model_name: str, sink_root: str) -> str:
    sink = sink_root if sink_root.startswith("s3://") else os.path.abspath(sink_root)
    digest = hashlib.sha256(sink.rstrip("/").encode()).hexdigest()[:12]
    return f"{model_name}-{digest}"


class Journal:
    """Segments of one writer. Thread-safe; append and seal are the hot calls.

    `recovered` lists the segments found at start (a previous process's, or adopted from
    an abandoned slot): the writer sends them to the sink first. `torn_rows` counts rows of
    frames cut short by a crash, which are lost."""

    def __init__(self, directory: str | Path, model_name: str, sink_root: str, *, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self.base = Path(directory) / journal_key(model_name, sink_root)
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "sink.txt").write_text(f"{sink_root}\n")  # for whoever looks in here
        self.slot, self._lock_fd = _claim_slot(self.base)
        self._mutex = threading.Lock()
        self._open: _Open | None = None
        self._broken: list[Segment] = []
        self._closed = False
        _adopt_abandoned(self.base, self.slot)
        self.torn_rows = 0
        self.recovered: list[Segment] = []
        for path in sorted(self.slot.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
            segment, torn = _recover(path)
            self.torn_rows += torn
            if segment is not None:
                self.recovered.append(segment)
        self._bytes = sum(s.size for s in self.recovered)

    @property
    def bytes(self) -> int:
        with self._mutex:
            return self._bytes

    def append(self, table: pa.Table) -> None:
        """Add the table as one frame and fsync it. Raises JournalFull, or OSError (a
        full or broken disk: the segment is cut back to its last whole frame, closed and
        handed out by the next seal(); later appends start a new one)."""
        payload = _encode(table)
        frame = HEADER.pack(MAGIC, len(payload), table.num_rows, zlib.crc32(payload)) + payload
        with self._mutex:
            if self._closed:
                raise OSError(errno.EBADF, "journal is closed")
            if self._bytes + len(frame) > self.max_bytes:
                raise JournalFull(
                    f"journal {self.slot} holds {self._bytes:,} bytes (max_bytes {self.max_bytes:,})"
                )
            if self._open is None:
                self._open = self._new_segment()
            current = self._open
            try:
                _write_all(current.fd, frame)
                os.fsync(current.fd)
            except OSError:
                self._give_up(current)
                raise
            current.rows += table.num_rows
            current.size += len(frame)
            self._bytes += len(frame)

    def seal(self) -> list[Segment]:
        """Close the segment being appended to (and any cut short by an error); they are
        the writer's to send to the sink, then remove()."""
        with self._mutex:
            sealed, self._broken = self._broken, []
            current, self._open = self._open, None
        if current is not None:
            os.close(current.fd)
            if current.rows:
                sealed.append(Segment(current.path, current.rows, current.size))
            else:
                current.path.unlink(missing_ok=True)
        return sealed

    def read(self, segment: Segment) -> list[pa.Table]:
        data = segment.path.read_bytes()[: segment.size]
        tables, _, _ = _decode(data)
        return tables

    def remove(self, segment: Segment) -> None:
        """Forget a segment the sink now holds."""
        segment.path.unlink(missing_ok=True)
        fsync_dir(segment.path.parent)
        with self._mutex:
            self._bytes -= segment.size

    def close(self) -> None:
        """Release the slot. A segment still open stays on disk: the next writer replays it."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            current, self._open = self._open, None
        if current is not None:
            os.close(current.fd)
            if not current.rows:
                current.path.unlink(missing_ok=True)
        os.close(self._lock_fd)  # releases the flock

    def _new_segment(self) -> _Open:
        path = self.slot / f"{SEGMENT_PREFIX}{new_stamp()}-{new_token()}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fsync_dir(self.slot)  # the name must survive a power cut with its contents
        return _Open(path, fd)

    def _give_up(self, current: _Open) -> None:
        """After a failed append: keep the whole frames written so far, nothing more."""
        self._open = None
        with contextlib.suppress(OSError):
            os.ftruncate(current.fd, current.size)
        with contextlib.suppress(OSError):
            os.close(current.fd)
        if current.rows:
            self._broken.append(Segment(current.path, current.rows, current.size))
        else:
            with contextlib.suppress(OSError):
                current.path.unlink(missing_ok=True)


def _claim_slot(base: Path) -> tuple[Path, int]:
    for n in range(MAX_SLOTS):
        slot = base / f"{SLOT_PREFIX}{n}"
        slot.mkdir(exist_ok=True)
        fd = os.open(slot / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise OSError(errno.EBUSY, f"{base}: all {MAX_SLOTS} journal slots are in use")


def _adopt_abandoned(base: Path, own: Path) -> None:
    """Move the segments of slots no live process holds into our own slot."""
    for slot in sorted(base.glob(f"{SLOT_PREFIX}*")):
        if slot == own or not slot.is_dir():
            continue
        try:
            fd = os.open(slot / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            moved = 0
            for path in sorted(slot.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
                os.rename(path, own / path.name)  # same file system; names are unique
                moved += 1
            if moved:
                fsync_dir(own)
                fsync_dir(slot)
                logger.info("journal: adopted %d segment(s) from %s", moved, slot)
        except OSError as exc:
            logger.warning("journal: could not adopt the segments in %s (%s)", slot, exc)
        finally:
            os.close(fd)


def _recover(path: Path) -> tuple[Segment | None, int]:
    """A segment left by an earlier process, cut back to its whole frames; and the rows of
    a torn last frame (lost)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        logger.warning("journal: cannot read %s (%s); it stays for a later start", path, exc)
        return None, 0
    tables, good, torn_rows = _decode(data)
    if good < len(data):
        logger.warning(
            "journal: %s ends in %d bytes of a frame cut short (a crash mid-write); "
            "keeping the %d whole frame(s) before it",
            path,
            len(data) - good,
            len(tables),
        )
        with open(path, "r+b") as handle:
            handle.truncate(good)
            os.fsync(handle.fileno())
    rows = sum(t.num_rows for t in tables)
    if not rows:
        path.unlink(missing_ok=True)
        return None, torn_rows
    return Segment(path, rows, good), torn_rows


def _decode(data: bytes) -> tuple[list[pa.Table], int, int]:
    """The whole frames at the start of data, the bytes they span, and the rows of a torn
    frame after them (0 when its header is unreadable too)."""
    tables: list[pa.Table] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        magic, length, rows, crc = HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            return tables, offset, 0
        start = offset + HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return tables, offset, rows
        try:
            with pa.ipc.open_stream(payload) as reader:
                tables.append(reader.read_all())
        except (pa.ArrowException, OSError):
            return tables, offset, rows
        offset = start + length
    return tables, offset, 0


def _encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]
