"""Issue 15, item 5: compaction merges a partition's small files into one, atomically (a
reader sees the old files or the new one, never both or neither), without losing or
doubling a row while predictors keep writing; `ctpipe log compact` and the CronJob."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctpipe import cli, predlog, storage
from ctpipe.errors import DataError
from ctpipe.predlog import Prediction, PredictionLogWriter, compact
from ctpipe.predlog import files as logfiles
from ctpipe.predlog import reader as log_reader
from ctpipe.predlog.compact import LOCK_NAME

MODEL = "churn"
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
DAY = T0.date()
CONFIG = (
    f"model_name: {MODEL}\nstate_dir: {{state}}\ntask: classification\ntarget: label\n"
    "timestamp: event_time\n"
)


def pred(request_id: str, at: datetime = T0, **features: Any) -> Prediction:
    return Prediction(request_id, at, "7", 1, 0.5, features or {"age": 40, "plan": "pro"})


def write_small_files(root: str, count: int, rows: int = 5, prefix: str = "r") -> list[str]:
    """`count` files (one writer flush each) of `rows` rows in T0's partition; their ids."""
    ids: list[str] = []
    with PredictionLogWriter(root, MODEL, max_seconds=3600) as writer:
        for f in range(count):
            batch = [f"{prefix}{f:03d}-{r}" for r in range(rows)]
            # Stamps interleave across files, as replicas' flushes do.
            writer.append(
                pred(i, T0 + timedelta(seconds=r * count + f)) for r, i in enumerate(batch)
            )
            writer.flush()
            ids.extend(batch)
    return ids


def raw_ids(root: str) -> list[str]:
    """Every row of the live files, duplicates kept (the reader would hide them)."""
    files = storage.list_files(storage.join(root, MODEL), (".parquet",))
    ids: list[str] = []
    for footer in logfiles.live(logfiles.read_footers(files, "prediction log")):
        ids.extend(footer.fragment.to_table(columns=[predlog.REQUEST_ID])[0].to_pylist())
    return ids


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"compact-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# ---------------------------------------------------------------------- merging


def test_small_files_become_one_and_every_row_reads_the_same(tmp_path: Path) -> None:
    root = str(tmp_path)
    ids = write_small_files(root, 12)
    with PredictionLogWriter(root, MODEL) as writer:  # another day: its own partition
        writer.append([pred("next-day", T0 + timedelta(days=1)), pred("x", T0 + timedelta(days=1))])
    before = predlog.read_predictions(root, MODEL)
    folder = tmp_path / MODEL / "date=2024-03-10"
    assert len(names(folder)) == 12

    result = compact.compact(root, MODEL)

    (output,) = names(folder)
    assert output.startswith("compact-")
    assert len(names(tmp_path / MODEL / "date=2024-03-11")) == 1  # a single file stays
    assert result.errors == []
    (merged,) = [m for p in result.partitions for m in p.merged]
    assert (merged.inputs, merged.rows) == (12, 60)
    assert "merged 12 files (60 rows) into 1, deleted 12" in result.summary()
    after = predlog.read_predictions(root, MODEL)
    assert after.equals(before)
    assert sorted(raw_ids(root)) == sorted([*ids, "next-day", "x"])
    stamps = pq.read_table(folder / output)[predlog.TIMESTAMP].to_pylist()
    assert stamps == sorted(stamps)  # sorted: the reader's sort leaves it in place

    # Nothing small left to merge: a second run changes nothing.
    again = compact.compact(root, MODEL)
    assert names(folder) == [output]
    assert [m for p in again.partitions for m in p.merged] == []


def test_compaction_on_s3(s3: Any, bucket: str) -> None:
    root = f"s3://{bucket}/log"
    ids = write_small_files(root, 6)
    before = predlog.read_predictions(root, MODEL)
    result = compact.compact(root, MODEL)
    assert result.errors == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1 and "/compact-" in keys[0]
    assert predlog.read_predictions(root, MODEL).equals(before)
    assert sorted(raw_ids(root)) == sorted(ids)


def test_a_compact_file_that_is_still_small_is_merged_again(tmp_path: Path) -> None:
    root = str(tmp_path)
    first = write_small_files(root, 3, prefix="a")
    compact.compact(root, MODEL)
    second = write_small_files(root, 3, prefix="b")
    compact.compact(root, MODEL)
    folder = tmp_path / MODEL / "date=2024-03-10"
    (output,) = names(folder)
    replaced = logfiles.read_footers([str(folder / output)], "x")[0].compacted_from
    assert len(replaced) == 7  # six part files, and the first compact file
    assert sorted(raw_ids(root)) == sorted(first + second)


def test_large_files_stay_and_only_recent_days_are_compacted(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_small_files(root, 4)
    result = compact.compact(root, MODEL, small_bytes=100)  # every file is "large"
    assert [m for p in result.partitions for m in p.merged] == []
    result = compact.compact(root, MODEL, days=2, today=DAY + timedelta(days=5))
    assert result.partitions == ()
    result = compact.compact(root, MODEL, days=2, today=DAY + timedelta(days=1))
    assert len(result.partitions) == 1


# ------------------------------------------------------------------ concurrency


def test_readers_never_see_both_or_neither_while_compaction_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    ids = set(write_small_files(root, 40, rows=3))
    doubled: list[int] = []
    real = log_reader._first_per_request

    def count_doubles(table: pa.Table) -> tuple[pa.Table, int]:
        kept, dropped = real(table)
        doubled.append(dropped)  # a reader that saw old and new files would drop rows here
        return kept, dropped

    monkeypatch.setattr(log_reader, "_first_per_request", count_doubles)
    reads: list[set[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                table = predlog.read_predictions(root, MODEL)
            except BaseException as exc:
                errors.append(exc)
                return
            reads.append(set(table[predlog.REQUEST_ID].to_pylist()))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        time.sleep(0.05)
        for _ in range(3):
            compact.compact(root, MODEL, max_output_bytes=3000)  # several outputs, in steps
            compact.compact(root, MODEL)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(reads) >= 3
    assert all(seen == ids for seen in reads), "a read missed rows"
    assert not any(doubled), "a read saw replaced files next to their compact file"


def test_a_writer_appending_during_compaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    root, journal = str(tmp_path / "log"), str(tmp_path / "journal")
    appended: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        with PredictionLogWriter(root, MODEL, journal_dir=journal, max_seconds=0.02) as writer:
            n = 0
            while not stop.is_set():
                batch = [f"w{n + k:05d}" for k in range(5)]
                writer.append(
                    pred(i, T0 + timedelta(milliseconds=n + k)) for k, i in enumerate(batch)
                )
                appended.extend(batch)
                n += 5
                time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.3)
        runs = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            result = compact.compact(root, MODEL)
            assert result.errors == [] and result.skipped is None
            runs += 1
        assert runs >= 3
    finally:
        stop.set()
        producer.join()
    logged = raw_ids(root)
    assert len(logged) == len(set(logged)), "a row is in the log twice"
    assert sorted(logged) == sorted(appended)
    compact.compact(root, MODEL)
    assert sorted(raw_ids(root)) == sorted(appended)


def test_a_replayed_file_that_compaction_replaced_is_skipped_then_removed(
    tmp_path: Path,
) -> None:
    """A journal replay after a crash writes a file again under its old name, after a
    compaction had merged and deleted it: readers skip it, the next compaction deletes it."""
    root = str(tmp_path)
    write_small_files(root, 3)
    folder = tmp_path / MODEL / "date=2024-03-10"
    copies = {name: (folder / name).read_bytes() for name in names(folder)}
    compact.compact(root, MODEL)
    replayed = next(iter(copies))
    (folder / replayed).write_bytes(copies[replayed])
    assert len(names(folder)) == 2

    table = predlog.read_predictions(root, MODEL)
    assert table.num_rows == 15 and len(raw_ids(root)) == 15
    result = compact.compact(root, MODEL)
    assert sum(p.removed for p in result.partitions) == 1
    assert len(names(folder)) == 1


# ------------------------------------------------------------------------ lock


def test_one_compaction_at_a_time(tmp_path: Path) -> None:
    root = str(tmp_path)
    write_small_files(root, 3)
    lock = tmp_path / MODEL / LOCK_NAME
    held = {
        "owner": "x",
        "host": "elsewhere",
        "pid": 1,
        "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    lock.write_text(json.dumps(held))
    result = compact.compact(root, MODEL)
    assert result.skipped and "another compaction" in result.summary()
    assert len(names(tmp_path / MODEL / "date=2024-03-10")) == 3

    held["until"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()  # it died
    lock.write_text(json.dumps(held))
    result = compact.compact(root, MODEL)
    assert result.skipped is None
    assert len(names(tmp_path / MODEL / "date=2024-03-10")) == 1
    assert not lock.exists()  # released


# ------------------------------------------------------------------ CLI, CronJob


def test_ctpipe_log_compact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ctpipe.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    write_small_files(str(tmp_path / "state" / "predictions"), 4)
    assert cli.main(["log", "compact", "--config", str(config), "--days", "100000"]) == 0
    out = capsys.readouterr().out
    assert "merged 4 files (20 rows) into 1" in out


def test_the_monitor_cronjob_compacts_before_each_check() -> None:
    from tests.manifests.conftest import find, render

    (cron,) = find(list(render("base")), "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["ctpipe"]
    assert init["args"][:2] == ["log", "compact"]
    assert "--best-effort" in init["args"]  # a failed compaction must not stop the check
    args = cli.build_parser().parse_args(init["args"])
    assert args.func is cli.cmd_log and args.days and args.config == "/etc/ctpipe/ctpipe.yaml"
    (monitor,) = pod["containers"]
    assert init["image"] == monitor["image"]
    assert {e["configMapRef"]["name"] for e in init["envFrom"] if "configMapRef" in e} == {
        "ctpipe-env"
    }


def test_best_effort_reports_and_exits_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ctpipe.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DataError("s3://nowhere: cannot list objects")

    monkeypatch.setattr(compact, "compact", broken)
    assert cli.main(["log", "compact", "--config", str(config)]) != 0
    assert cli.main(["log", "compact", "--config", str(config), "--best-effort"]) == 0
    assert "cannot list objects" in capsys.readouterr().err


def test_a_relative_root_compacts_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ids = write_small_files("log", 3)
    result = compact.compact("log", MODEL)
    assert [p.folder for p in result.partitions] == [str(Path("log", MODEL, "date=2024-03-10"))]
    assert len(names(tmp_path / "log" / MODEL / "date=2024-03-10")) == 1
    assert sorted(raw_ids("log")) == sorted(ids)
