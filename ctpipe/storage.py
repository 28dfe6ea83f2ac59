"""One place for URIs: local paths and s3:// (boto3).

The S3 endpoint comes from the environment: `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`),
which boto3 also reads on its own, so MinIO, SeaweedFS or moto work like AWS.
"""

from __future__ import annotations

import fnmatch
import functools
import glob as globlib
import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from ctpipe.errors import DataError

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_GLOB_CHARS = set("*?[")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise DataError(f"{uri}: an s3:// URI needs a bucket name")
    return bucket, key


def s3_endpoint() -> str | None:
    return next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def s3_client() -> Any:
    return _client(s3_endpoint())


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def list_files(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Expand a file, directory, glob or S3 prefix into a sorted list of file URIs.

    In a directory or under a prefix only names ending in one of `suffixes` count (when
    given), so stray files such as _SUCCESS markers are skipped.
    """
    if is_s3(uri):
        return _list_s3(uri, suffixes)
    if _GLOB_CHARS & set(uri):
        return sorted(p for p in globlib.glob(uri, recursive=True) if Path(p).is_file())
    path = Path(uri)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        return sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file()
            and not _hidden(p.relative_to(path).as_posix())
            and (not suffixes or p.name.endswith(suffixes))
        )
    return []


def _hidden(relative: str) -> bool:
    """A name, or a folder on the way to it, starts with '.' or '_' (.ipynb_checkpoints, _temporary)."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _list_s3(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    bucket, key = split_s3(uri)
    pattern = key if _GLOB_CHARS & set(key) else None
    prefix = key[: min(key.index(c) for c in _GLOB_CHARS if c in key)] if pattern else key
    keys: list[str] = []
    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    except Exception as exc:  # botocore raises many types; the message is what matters
        raise DataError(f"{uri}: cannot list objects ({exc})") from exc
    if pattern:
        return sorted(f"s3://{bucket}/{k}" for k in keys if fnmatch.fnmatchcase(k, pattern))
    if key in keys:  # an exact object, not a prefix
        return [uri]
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    names = [k for k in keys if k.startswith(base) and not k.endswith("/")]
    return sorted(
        f"s3://{bucket}/{k}"
        for k in names
        if not _hidden(k[len(base) :]) and (not suffixes or k.endswith(suffixes))
    )


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise DataError(f"{uri}: cannot read object ({exc})") from exc
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise DataError(f"{uri}: cannot read file ({exc.strerror})") from exc


def write_bytes(uri: str, data: bytes, *, exclusive: bool = False) -> bool:
    """Write data; with `exclusive`, only if nothing is there yet. Returns False if it was."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if exclusive and code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise DataError(f"{uri}: cannot write object ({exc})") from exc
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then move into place: a reader never sees a half-written file.
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        staged.write_bytes(data)  # inside the try: a full disk must not leave the stub behind
        if not exclusive:
            os.replace(staged, path)
            return True
        try:
            os.link(staged, path)  # atomic, and fails if the name exists
        except FileExistsError:
            return False
        return True
    finally:
        staged.unlink(missing_ok=True)


def write_record(folder: str, record: dict[str, Any], now: datetime) -> str:
    """Write one JSON record under `folder`, named after `now`. A second record for the same
    time (a rerun with the same --now) gets the next free name: a record is never
    overwritten. Returns its URI."""
    body = json.dumps(record, indent=2, default=str).encode()
    stem = join(folder, now.strftime("%Y%m%dT%H%M%S%fZ"))
    for attempt in range(1, 1000):
        uri = f"{stem}.json" if attempt == 1 else f"{stem}_{attempt}.json"  # sorts after
        if write_bytes(uri, body, exclusive=True):
            return uri
    raise DataError(f"{stem}*.json: 999 records for one time; not writing more")


def delete(uri: str) -> None:
    """Remove a file or object; one that is already gone is not an error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise DataError(f"{uri}: cannot delete object ({exc})") from exc
        return
    try:
        Path(uri).unlink(missing_ok=True)
    except OSError as exc:
        raise DataError(f"{uri}: cannot delete file ({exc.strerror})") from exc
