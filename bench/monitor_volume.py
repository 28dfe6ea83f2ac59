"""What one monitor check costs over a day of prediction log, before and after compaction.

A simulated day of traffic: `--replicas` predictors (3) serving `--rps` requests a second
in all (100), 11 features (8 numbers, 3 categories), one row per request. Written in the
writer's own layout and file format (date= folders, part-<stamp>-<token>.parquet, the
writer's table schema, one file per date per flush) with the old 10 s flush: 8,640 files a
day per replica. Labels arrive an hour late, one label file per hour.

  uncompacted  the check over those files
  compacted    `ctpipe log compact` (ctpipe.predlog.compact.compact), then the check again
  old reader   (for information) the file-by-file reader the check used before, on the
               uncompacted files

The check is the data work of ctpipe.monitor.runner.run_monitor: read the log up to now
without features, read the 1-day window with them and flatten them for the drift engine, read
the labels, join them, keep the champion's labelled rows and count the new ones. Each check, and the
compaction, runs in a fresh process, as the CronJob runs them; its peak RSS is shown.

Target: compacted <= 10 s. The ratio is against the uncompacted check of the same run.

    python bench/monitor_volume.py [--hours 24] [--replicas 3] [--rps 100] [--repeat 1]
                                   [--skip-old] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctpipe import predlog, storage
from ctpipe.predlog import compact, reader
from ctpipe.predlog import files as logfiles
from ctpipe.predlog.format import for_file, parquet_bytes, split_by_date

TARGET_COMPACTED_S = 10.0
MODEL = "volume"
VERSION = "7"
START = datetime(2026, 3, 1, tzinfo=UTC)
NUMERIC = [f"num_{i}" for i in range(8)]
CATEGORICAL = [f"cat_{i}" for i in range(3)]
LEVELS = np.array(["north", "south", "east", "west", "centre"])
WINDOW = timedelta(days=1)
WRITE_THREADS = 4


@dataclass(frozen=True)
class Check:
    seconds: float
    rows: int
    window_rows: int
    labelled: int
    new_rows: int


def log_file(replica: int, flush: int, rows: int, seconds: float) -> tuple[pa.Table, datetime]:
    """One flush of one replica, as the writer's table: its rows and their first stamp."""
    rng = np.random.default_rng([replica, flush])
    begin = START + timedelta(seconds=flush * seconds)
    offsets = np.sort(rng.uniform(0, seconds * 1e6, rows)).astype(np.int64)
    stamps = np.int64(begin.timestamp() * 1e6) + offsets
    ids = [f"{replica:08x}{flush:012x}{i:012x}" for i in range(rows)]
    score = rng.random(rows)
    features = [pa.array(rng.normal(size=rows)) for _ in NUMERIC] + [
        pa.array(LEVELS[rng.integers(0, len(LEVELS), rows)]) for _ in CATEGORICAL
    ]
    table = pa.table(
        {
            predlog.REQUEST_ID: pa.array(ids, pa.string()),
            predlog.TIMESTAMP: pa.array(stamps, predlog.TIMESTAMP_TYPE),
            predlog.MODEL_NAME: pa.array([MODEL] * rows, pa.string()),
            predlog.MODEL_VERSION: pa.array([VERSION] * rows, pa.string()),
            predlog.PREDICTION: pc.cast(pa.array(score > 0.5), pa.string()),
            predlog.SCORE: pa.array(score),
            predlog.FEATURES: pa.StructArray.from_arrays(features, NUMERIC + CATEGORICAL),
        }
    )
    return table, begin


def write_day(root: Path, labels: Path, hours: float, replicas: int, rps: float) -> int:
    """The uncompacted log and the labels; returns the files written."""
    flush_seconds = 10.0
    flushes = round(hours * 3600 / flush_seconds)
    rows = max(1, round(rps / replicas * flush_seconds))
    base = storage.join(str(root), MODEL)
    hour_labels: dict[int, list[pa.Table]] = {}

    def one(job: tuple[int, int]) -> tuple[int, pa.Table]:
        replica, flush = job
        table, begin = log_file(replica, flush, rows, flush_seconds)
        name = logfiles.part_name(f"{begin:%Y%m%dT%H%M%S%f}", f"{replica:04x}{flush:012x}")
        for day, part in split_by_date(table):
            path = Path(base) / logfiles.date_folder(day) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # The writer's bytes; written plainly (no fsync) so that the day takes a minute.
            path.write_bytes(parquet_bytes(for_file(part)))
        hour = int(flush * flush_seconds // 3600)
        label = table.select([predlog.REQUEST_ID]).append_column(
            predlog.LABEL, pc.cast(pa.array(np.asarray(table[predlog.SCORE]) > 0.4), pa.string())
        )
        return hour, label

    jobs = [(r, f) for f in range(flushes) for r in range(replicas)]
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        for hour, label in pool.map(one, jobs):
            hour_labels.setdefault(hour, []).append(label)
    last = max(hour_labels)
    folder = labels / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    for hour, tables in sorted(hour_labels.items()):
        if hour == last and last > 0:
            continue  # labels come an hour late: the last hour has none yet
        stamp = START + timedelta(hours=hour + 1)
        pq.write_table(pa.concat_tables(tables), folder / f"part-{stamp:%Y%m%dT%H%M%S%f}-0.parquet")
    return len(jobs)


def monitor_check(root: Path, labels: Path, now: datetime, read: Callable[..., pa.Table]) -> Check:
    """The data work of one monitor check (see the module docstring)."""
    started = time.perf_counter()
    if read is old_reader:
        log = read(str(root), MODEL, until=now)
        current = log.filter(
            pc.greater_equal(
                log[predlog.TIMESTAMP], pa.scalar(now - WINDOW, predlog.TIMESTAMP_TYPE)
            )
        )
    else:  # as the runner reads: the history without features, the window with them
        log, current = predlog.read_history_and_window(str(root), MODEL, now=now, window=WINDOW)
    features = predlog.features_table(current)
    joined = predlog.join_labels(log, predlog.read_labels(str(labels), MODEL))
    joined.raise_if_unmatched()
    mine = joined.table.filter(pc.equal(joined.table[predlog.MODEL_VERSION], VERSION))
    after = pa.scalar(START, predlog.TIMESTAMP_TYPE)
    new_rows = int(pc.sum(pc.greater(mine[predlog.TIMESTAMP], after)).as_py() or 0)
    seconds = time.perf_counter() - started
    assert features.num_columns == len(NUMERIC) + len(CATEGORICAL)
    return Check(seconds, log.num_rows, current.num_rows, joined.labelled, new_rows)


def old_reader(root: str, model: str, *, until: datetime) -> pa.Table:
    """The reader before issue 15: every file read on its own, then concatenated."""
    base = storage.join(root, model)
    files = reader._log_files(base, None, until)
    table = reader._read_one_by_one(files, None, until)
    return table.sort_by([(predlog.TIMESTAMP, "ascending")])


def fresh(step: str, work: Path, now: datetime) -> dict[str, Any]:
    """One step in a fresh interpreter, as the monitor's CronJob runs it (each check is a
    new process; compaction is its init container)."""
    result = subprocess.run(
        [sys.executable, __file__, "--step", step, "--work", str(work), "--now", now.isoformat()],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{result.stdout}{result.stderr}")
    return dict(json.loads(result.stdout.splitlines()[-1]))


def run_step(step: str, work: Path, now: datetime) -> dict[str, Any]:
    root, labels = work / "predictions", work / "labels"
    if step == "compact":
        started = time.perf_counter()
        result = compact.compact(str(root), MODEL)
        return {
            "seconds": time.perf_counter() - started,
            "errors": result.errors,
            "files": count_files(root),
        }
    read = old_reader if step == "old" else predlog.read_predictions
    check = monitor_check(root, labels, now, read)
    return {**asdict(check), "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def best(repeat: int, step: str, work: Path, now: datetime) -> dict[str, Any]:
    return min((fresh(step, work, now) for _ in range(repeat)), key=lambda c: c["seconds"])


def count_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.parquet"))


def report(name: str, files: int, check: dict[str, Any], note: str = "") -> None:
    print(
        f"{name:<12} {files:>7,} files  check {check['seconds']:6.2f} s  "
        f"peak RSS {check['peak_rss_gb']:.1f} GB  {note}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of traffic (default 24)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rps", type=float, default=100.0, help="requests a second, all replicas")
    parser.add_argument("--repeat", type=int, default=1, help="best of N checks (default 1)")
    parser.add_argument("--skip-old", action="store_true", help="skip the old reader's check")
    parser.add_argument("--keep", help="write here and keep it (default: a temp dir, removed)")
    parser.add_argument("--step", choices=("check", "old", "compact"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.work), datetime.fromisoformat(args.now))))
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="monitor-volume-"))
    work.mkdir(parents=True, exist_ok=True)
    root, labels = work / "predictions", work / "labels"
    for folder in (root, labels):
        shutil.rmtree(folder, ignore_errors=True)
    now = START + timedelta(hours=args.hours)
    try:
        started = time.perf_counter()
        flushes = write_day(root, labels, args.hours, args.replicas, args.rps)
        files = count_files(root)
        print(
            f"wrote {args.hours:g} h of {args.replicas} replicas at {args.rps:g} requests/s, "
            f"{len(NUMERIC) + len(CATEGORICAL)} features: {flushes:,} flushes, {files:,} files "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        before = best(args.repeat, "check", work, now)
        report(
            "uncompacted",
            files,
            before,
            f"({before['rows']:,} rows, {before['labelled']:,} labelled, {before['new_rows']:,} new)",
        )
        if not args.skip_old:
            report("old reader", files, best(args.repeat, "old", work, now), "(for information)")
        compacted = fresh("compact", work, now)
        if compacted["errors"]:
            print("\n".join(compacted["errors"]), file=sys.stderr)
            return 1
        print(
            f"compact      {files:,} files -> {compacted['files']:,} in "
            f"{compacted['seconds']:.1f} s",
            flush=True,
        )
        after = best(args.repeat, "check", work, now)
        report("compacted", compacted["files"], after)
        keys = ("rows", "window_rows", "labelled", "new_rows")
        ratio = before["seconds"] / after["seconds"] if after["seconds"] else float("inf")
        print(f"ratio uncompacted / compacted: {ratio:.1f}x")
        met = "met" if after["seconds"] <= TARGET_COMPACTED_S else "NOT met"
        print(f"target: compacted check <= {TARGET_COMPACTED_S:g} s: {met}")
        if any(before[k] != after[k] for k in keys):
            print("the compacted log answers differently: rows lost or doubled", file=sys.stderr)
            return 1
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
