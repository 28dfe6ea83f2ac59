"""ctpipe.storage: listing, reading and writing local paths and s3:// (a real moto server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ctpipe import storage
from ctpipe.errors import DataError

SUFFIXES = (".csv", ".parquet", ".jsonl")


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"ctpipe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def put(s3: Any, bucket: str, *keys: str) -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())


# ------------------------------------------------------------------ uri helpers


def test_is_s3_and_split() -> None:
    assert storage.is_s3("s3://bucket/a/b.csv")
    assert not storage.is_s3("/tmp/s3://x")
    assert storage.split_s3("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(DataError, match="needs a bucket name"):
        storage.split_s3("s3:///key")


def test_join() -> None:
    assert storage.join("s3://bucket/state/", "schemas", "/m/") == "s3://bucket/state/schemas/m"
    assert storage.join("/tmp/state", "schemas", "m") == str(Path("/tmp/state/schemas/m"))


def test_s3_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage.s3_endpoint() is None  # conftest clears both
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    assert storage.s3_endpoint() == "http://general:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:2")
    assert storage.s3_endpoint() == "http://s3-only:2"


# ----------------------------------------------------------------- local listing


def test_list_a_single_file(tmp_path: Path) -> None:
    file = touch(tmp_path / "data.csv")
    assert storage.list_files(str(file)) == [str(file)]
    # Suffixes filter directories only: a file named explicitly is always taken.
    assert storage.list_files(str(file), (".parquet",)) == [str(file)]


def test_list_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "data"
    wanted = [
        touch(root / "b.csv"),
        touch(root / "a.parquet"),
        touch(root / "nested" / "deeper" / "c.jsonl"),
    ]
    touch(root / "_SUCCESS")
    touch(root / ".hidden.csv")
    touch(root / "_part.csv")
    touch(root / "notes.txt")
    (root / "empty-dir").mkdir()
    assert storage.list_files(str(root), SUFFIXES) == sorted(str(p) for p in wanted)


def test_list_a_directory_without_suffix_filter(tmp_path: Path) -> None:
    root = tmp_path / "data"
    touch(root / "a.csv")
    touch(root / "notes.txt")
    touch(root / "_SUCCESS")
    touch(root / ".DS_Store")
    assert storage.list_files(str(root)) == [str(root / "a.csv"), str(root / "notes.txt")]


def test_list_a_directory_skips_hidden_folders(tmp_path: Path) -> None:
    """Jupyter checkpoints and Spark's _temporary hold copies of the data, not more data."""
    root = tmp_path / "data"
    touch(root / "a.csv")
    touch(root / ".ipynb_checkpoints" / "a-checkpoint.csv")
    touch(root / "_temporary" / "0" / "part-0.csv")
    touch(root / "day=1" / "b.csv")
    assert storage.list_files(str(root), SUFFIXES) == [
        str(root / "a.csv"),
        str(root / "day=1" / "b.csv"),
    ]


def test_list_a_directory_that_is_itself_hidden(tmp_path: Path) -> None:
    # Only names below the listed directory count, not the directory's own path.
    root = tmp_path / ".cache" / "_data"
    file = touch(root / "a.csv")
    assert storage.list_files(str(root), SUFFIXES) == [str(file)]


def test_list_a_glob(tmp_path: Path) -> None:
    root = tmp_path / "data"
    a, b = touch(root / "2026-02.csv"), touch(root / "2026-01.csv")
    touch(root / "2026-01.parquet")
    (root / "dir.csv").mkdir()  # a directory that matches is not a file
    nested = touch(root / "sub" / "2026-03.csv")
    assert storage.list_files(str(root / "*.csv")) == [str(b), str(a)]
    assert storage.list_files(str(root / "2026-0[2-9].*")) == [str(a)]
    assert storage.list_files(str(root / "**" / "*.csv")) == sorted([str(a), str(b), str(nested)])
    assert storage.list_files(str(root / "*.json")) == []


def test_list_a_missing_path(tmp_path: Path) -> None:
    assert storage.list_files(str(tmp_path / "nope")) == []
    assert storage.list_files(str(tmp_path / "nope" / "a.csv"), SUFFIXES) == []


def test_list_an_empty_directory(tmp_path: Path) -> None:
    assert storage.list_files(str(tmp_path), SUFFIXES) == []


# -------------------------------------------------------------------- s3 listing


def test_s3_list_exact_key(s3: Any, bucket: str) -> None:
    put(s3, bucket, "data/a.csv", "data/a.csv.bak")
    assert storage.list_files(f"s3://{bucket}/data/a.csv", SUFFIXES) == [
        f"s3://{bucket}/data/a.csv"
    ]


def test_s3_list_prefix(s3: Any, bucket: str) -> None:
    put(
        s3,
        bucket,
        "data/b.csv",
        "data/a.parquet",
        "data/nested/c.jsonl",
        "data/_SUCCESS",
        "data/.hidden.csv",
        "data/notes.txt",
        "data/folder/",  # a "directory" marker object
        "data2/other.csv",  # shares the text prefix, not the folder
        "elsewhere/d.csv",
    )
    expected = [
        f"s3://{bucket}/data/a.parquet",
        f"s3://{bucket}/data/b.csv",
        f"s3://{bucket}/data/nested/c.jsonl",
    ]
    assert storage.list_files(f"s3://{bucket}/data", SUFFIXES) == expected
    assert storage.list_files(f"s3://{bucket}/data/", SUFFIXES) == expected
    unfiltered = storage.list_files(f"s3://{bucket}/data/")
    assert f"s3://{bucket}/data/notes.txt" in unfiltered
    assert f"s3://{bucket}/data/_SUCCESS" not in unfiltered
    assert f"s3://{bucket}/data/folder/" not in unfiltered


def test_s3_list_whole_bucket(s3: Any, bucket: str) -> None:
    put(s3, bucket, "a.csv", "x/b.csv", "x/_SUCCESS")
    assert storage.list_files(f"s3://{bucket}", SUFFIXES) == [
        f"s3://{bucket}/a.csv",
        f"s3://{bucket}/x/b.csv",
    ]
    assert storage.list_files(f"s3://{bucket}/", SUFFIXES) == storage.list_files(
        f"s3://{bucket}", SUFFIXES
    )


def test_s3_list_skips_hidden_folders(s3: Any, bucket: str) -> None:
    put(s3, bucket, "data/a.csv", "data/_temporary/0/part-0.csv", "data/.ipynb_checkpoints/a.csv")
    assert storage.list_files(f"s3://{bucket}/data", SUFFIXES) == [f"s3://{bucket}/data/a.csv"]


def test_s3_list_glob(s3: Any, bucket: str) -> None:
    put(
        s3,
        bucket,
        "data/2026-01.csv",
        "data/2026-02.csv",
        "data/2026-02.parquet",
        "other/2026-01.csv",
    )
    assert storage.list_files(f"s3://{bucket}/data/*.csv") == [
        f"s3://{bucket}/data/2026-01.csv",
        f"s3://{bucket}/data/2026-02.csv",
    ]
    assert storage.list_files(f"s3://{bucket}/data/2026-0[2].*") == [
        f"s3://{bucket}/data/2026-02.csv",
        f"s3://{bucket}/data/2026-02.parquet",
    ]
    assert storage.list_files(f"s3://{bucket}/*/2026-01.csv") == [
        f"s3://{bucket}/data/2026-01.csv",
        f"s3://{bucket}/other/2026-01.csv",
    ]
    assert storage.list_files(f"s3://{bucket}/data/*.json") == []


def test_s3_list_missing_prefix(s3: Any, bucket: str) -> None:
    put(s3, bucket, "data/a.csv")
    assert storage.list_files(f"s3://{bucket}/nothing-here/", SUFFIXES) == []


def test_s3_list_missing_bucket(s3: Any) -> None:
    with pytest.raises(DataError) as info:
        storage.list_files("s3://no-such-bucket-ctpipe/data/")
    assert "s3://no-such-bucket-ctpipe/data/: cannot list objects" in str(info.value)
    assert "NoSuchBucket" in str(info.value)


# ------------------------------------------------------------------ read / write


def test_local_write_then_read(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.bin"
    assert storage.write_bytes(str(target), b"\x00hello") is True
    assert storage.read_bytes(str(target)) == b"\x00hello"
    assert storage.write_bytes(str(target), b"again") is True  # not exclusive: overwrites
    assert storage.read_bytes(str(target)) == b"again"


def test_local_read_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as info:
        storage.read_bytes(str(missing))
    assert str(missing) in str(info.value)
    assert "cannot read file" in str(info.value)


def test_local_exclusive_write(tmp_path: Path) -> None:
    target = tmp_path / "schemas" / "v0001.json"
    assert storage.write_bytes(str(target), b"first", exclusive=True) is True
    assert storage.write_bytes(str(target), b"second", exclusive=True) is False
    assert storage.read_bytes(str(target)) == b"first"


def test_s3_write_then_read(s3: Any, bucket: str) -> None:
    uri = f"s3://{bucket}/state/x.bin"
    assert storage.write_bytes(uri, b"\x00hello") is True
    assert storage.read_bytes(uri) == b"\x00hello"
    assert s3.get_object(Bucket=bucket, Key="state/x.bin")["Body"].read() == b"\x00hello"
    assert storage.write_bytes(uri, b"again") is True
    assert storage.read_bytes(uri) == b"again"


def test_s3_read_missing(s3: Any, bucket: str) -> None:
    uri = f"s3://{bucket}/nope.csv"
    with pytest.raises(DataError) as info:
        storage.read_bytes(uri)
    assert f"{uri}: cannot read object" in str(info.value)
    assert "NoSuchKey" in str(info.value)


def test_s3_write_to_missing_bucket(s3: Any) -> None:
    with pytest.raises(DataError, match="cannot write object"):
        storage.write_bytes("s3://no-such-bucket-ctpipe/x", b"1")


def test_s3_exclusive_write(s3: Any, bucket: str) -> None:
    """moto's server answers If-None-Match: * with 412 PreconditionFailed, as S3 does."""
    uri = f"s3://{bucket}/schemas/m/v0001.json"
    assert storage.write_bytes(uri, b"first", exclusive=True) is True
    assert storage.write_bytes(uri, b"second", exclusive=True) is False
    assert storage.read_bytes(uri) == b"first"
    # A plain write still replaces it.
    assert storage.write_bytes(uri, b"third") is True
    assert storage.read_bytes(uri) == b"third"


def test_s3_exclusive_write_precondition_is_real(s3: Any, bucket: str) -> None:
    """The server itself rejects the second conditional put (not ctpipe checking first)."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(Exception) as info:
        s3.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    response = info.value.response  # type: ignore[attr-defined]
    assert response["Error"]["Code"] == "PreconditionFailed"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_delete_a_file_and_an_object(tmp_path: Path, s3: Any, bucket: str) -> None:
    local = touch(tmp_path / "pending" / "run-1.json")
    storage.delete(str(local))
    assert not local.exists()
    storage.delete(str(local))  # already gone: not an error
    put(s3, bucket, "schemas/pending/run-1.json", "schemas/v0001.json")
    storage.delete(f"s3://{bucket}/schemas/pending/run-1.json")
    assert storage.list_files(f"s3://{bucket}/schemas") == [f"s3://{bucket}/schemas/v0001.json"]
    storage.delete(f"s3://{bucket}/schemas/pending/run-1.json")
    with pytest.raises(DataError, match="cannot delete object"):
        storage.delete(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x.json")
