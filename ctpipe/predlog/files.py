"""Files of the prediction log: names, atomic writes, footers, and which files are live.

A partition (`<root>/<model>/date=YYYY-MM-DD/`) holds two kinds of Parquet file:

    part-<UTC yyyymmddTHHMMSSffffff>-<hex>.parquet     one flush of a writer
    compact-<UTC yyyymmddTHHMMSSffffff>-<hex>.parquet  many files merged into one

A compact file names, in its footer (key `ctpipe.compacted_from`), every file it replaces,
and every file those replaced in turn. A file so named is *superseded*: readers skip it
whether or not it still exists. That is what makes compaction safe without a rename (S3
has none): before the compact file's single atomic PUT a reader sees the old files only,
after it the compact file only, and deleting the old ones later changes nothing it reads.
It also absorbs a writer that re-creates a file after compaction removed it (a journal
replayed after a crash writes under the same name again): the name is superseded, so the
copy is skipped, and the next compaction deletes it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import secrets
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa

from ctpipe import storage
from ctpipe.errors import DataError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DATE_FOLDER_PREFIX = "date="
PART_PREFIX = "part-"
COMPACT_PREFIX = "compact-"
PARQUET_SUFFIX = ".parquet"
COMPACTED_FROM_KEY = b"ctpipe.compacted_from"
FOOTER_THREADS = 16
# pyarrow.dataset and pyarrow.fs are imported where they are used: the predictor imports
# this module for its writer, and pyarrow.dataset alone costs ~0.4 s of start-up.


def date_folder(day: date) -> str:
    return f"{DATE_FOLDER_PREFIX}{day.isoformat()}"


def new_stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"


def new_token() -> str:
    return secrets.token_hex(8)


def part_name(stamp: str, token: str) -> str:
    """The name of one writer flush. The same stamp and token give the same name, so a
    flush retried (or replayed from the journal) cannot add a second copy."""
    return f"{PART_PREFIX}{stamp}-{token}{PARQUET_SUFFIX}"


def compact_name() -> str:
    return f"{COMPACT_PREFIX}{new_stamp()}-{new_token()}{PARQUET_SUFFIX}"


def name_of(uri: str) -> str:
    return uri.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[-1]


def is_compact(uri: str) -> bool:
    return name_of(uri).startswith(COMPACT_PREFIX)


# --------------------------------------------------------------------------- writing


def write_new(uri: str, data: bytes) -> bool:
    """Create uri holding data, atomically; False if something is there already.

    A local file is written aside under a hidden name, fsync'd, then linked into place,
    and the aside copy is removed whatever happens: a full disk leaves no 0-byte or half
    files behind. The fsync matters because the writer deletes its journal once this
    returns: the file must survive a power cut as the journal would have."""
    if storage.is_s3(uri):
        return storage.write_bytes(uri, data, exclusive=True)
    path = Path(uri)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)  # atomic, and fails if the name exists
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise DataError(f"{uri}: cannot write file ({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # a full disk raises; this is for odd file systems
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """Make a new or removed directory entry durable (a file's own fsync does not)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the data itself is synced
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading


@functools.lru_cache(maxsize=4)
def _s3_filesystem(endpoint: str | None) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    if not endpoint:
        return pafs.S3FileSystem()
    parsed = urlparse(endpoint)
    if not parsed.scheme:
        return pafs.S3FileSystem(endpoint_override=endpoint)
    return pafs.S3FileSystem(endpoint_override=parsed.netloc, scheme=parsed.scheme)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system for uri, and uri's path on it. S3 settings come from the same
    environment boto3 reads (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...)."""
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        return _s3_filesystem(storage.s3_endpoint()), f"{bucket}/{key}"
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem(), str(Path(uri).absolute())


@dataclass(frozen=True, slots=True)
class Footer:
    """One Parquet file as its footer describes it, and a fragment to scan it with."""

    uri: str
    schema: pa.Schema
    fragment: Any  # pyarrow.dataset.ParquetFileFragment, its footer read and cached

    @property
    def name(self) -> str:
        return name_of(self.uri)

    @property
    def compacted_from(self) -> tuple[str, ...]:
        raw = (self.schema.metadata or {}).get(COMPACTED_FROM_KEY)
        return tuple(json.loads(raw)) if raw and is_compact(self.uri) else ()


class Vanished(DataError):
    """A file listed a moment ago is gone: a compaction replaced it. List again."""


def read_footers(uris: Sequence[str], kind: str) -> list[Footer]:
    """The footer of every file, read concurrently (each is a small ranged read; on S3 a
    round trip). Raises Vanished when a file disappeared, DataError when one is not
    Parquet."""
    import pyarrow.dataset as ds

    if not uris:
        return []
    fs, _ = filesystem(uris[0])
    parquet = ds.ParquetFileFormat()

    def footer(uri: str) -> Footer:
        path = filesystem(uri)[1]
        fragment = parquet.make_fragment(path, fs)
        try:
            return Footer(uri, fragment.physical_schema, fragment)
        except (pa.ArrowException, OSError) as exc:
            if missing(uri):
                raise Vanished(f"{uri}: gone while reading") from exc
            raise DataError(f"{uri}: not a readable Parquet {kind} file ({exc})") from exc

    if len(uris) == 1:
        return [footer(uris[0])]
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(uris))) as pool:
        return list(pool.map(footer, uris))


def missing(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        return bool(fs.get_file_info(path).type == pafs.FileType.NotFound)
    except (pa.ArrowException, OSError):
        return False


def superseded(footers: Iterable[Footer]) -> set[str]:
    """Names that some compact file among footers replaced, per partition folder."""
    names: set[str] = set()
    for footer in footers:
        folder = parent_of(footer.uri)
        names.update(f"{folder}/{name}" for name in footer.compacted_from)
    return names


def parent_of(uri: str) -> str:
    return uri.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[0]


def key_of(uri: str) -> str:
    """uri with '/' separators, to compare with what superseded() returns."""
    return uri.replace(os.sep, "/")


def live(footers: Sequence[Footer]) -> list[Footer]:
    """The files a reader reads: all but the superseded ones."""
    gone = superseded(footers)
    return [f for f in footers if key_of(f.uri) not in gone]


@dataclass(frozen=True, slots=True)
class Entry:
    uri: str
    size: int
    relative: str  # to the folder listed, '/'-separated


def list_sizes(base: str) -> list[Entry]:
    """Every visible .parquet file under base with its size, sorted (for compaction, which
    picks small files; the reader lists through ctpipe.storage)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(base)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    try:
        infos = fs.get_file_info(selector)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{base}: cannot list files ({exc})") from exc
    root = path.rstrip("/")
    entries: list[Entry] = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(PARQUET_SUFFIX):
            continue
        relative = info.path[len(root) :].strip("/")
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        uri = storage.join(base, relative) if storage.is_s3(base) else info.path
        entries.append(Entry(uri, int(info.size or 0), relative))
    return sorted(entries, key=lambda e: e.uri)


def json_names(names: Iterable[str]) -> bytes:
    return json.dumps(sorted(set(names)), separators=(",", ":")).encode()
