"""What a drift check costs, against its floor and against evidently, and what it finds.

Two windows of `--rows` rows x 20 columns (15 numeric, 5 categorical), reference and
current, written as Parquet. Five columns drift clearly (0.5σ mean shift, 1.5x spread,
20% of values moved by 2σ, a new category mix, a new 15% category), one moves by a
negligible 0.05σ, fourteen are stable (two with 1% nulls).

  ours      load the stored reference profile, read the current window, check it
  floor     read both windows (the same reader) and np.sort every numeric column of
            both: what any exact two-sample check (KS, Wasserstein) on raw data costs
  evidently Report([DataDriftPreset()]) on the same two windows, read into pandas
  fresh     `python -c` doing ours as a KFP step or CronJob would, at 10k and --rows
            rows (both windows that size), timed as a whole; its peak RSS (VmHWM)

Targets: ours / floor <= 2.0, evidently / ours >= 30, fresh <= 0.5 s at 10k and <= 3 s at
1M, peak RSS <= 1.2 GB, and at 10k, 100k and 1M: 5 of 5 drifted columns found, none of the
14 stable ones and not the 0.05σ one flagged (default settings: effect size).

    python bench/drift_check.py [--rows 1000000] [--skip-evidently] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctpipe import drift
from ctpipe.drift import DriftSettings, ReferenceProfile

TARGET_FLOOR_RATIO = 2.0
TARGET_EVIDENTLY_SPEEDUP = 30.0
TARGET_FRESH_SMALL_S = 0.5
TARGET_FRESH_LARGE_S = 3.0
TARGET_RSS_GB = 1.2
SMALL_ROWS = 10_000

NUMERIC = [f"num_{i}" for i in range(15)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
DRIFTED = ["num_0", "num_1", "num_2", "cat_0", "cat_1"]
TINY = "num_3"  # a 0.05σ shift: real, and too small to matter
STABLE = [c for c in NUMERIC + CATEGORICAL if c not in [*DRIFTED, TINY]]
WITH_NULLS = ("num_5", "cat_2")

LEVELS = np.array(["north", "south", "east", "west", "centre", "islands"])
MIX = np.array([0.30, 0.25, 0.18, 0.12, 0.09, 0.06])
MIX_DRIFTED = np.array([0.14, 0.16, 0.17, 0.18, 0.17, 0.18])  # Jensen-Shannon 0.21

STEP = """
import sys
from pathlib import Path
from ctpipe.drift import ReferenceProfile, compare, read_window
profile = ReferenceProfile.from_bytes(Path(sys.argv[1]).read_bytes())
report = compare(profile, read_window(sys.argv[2], profile))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "scipy", "evidently", "sklearn"})
status = Path("/proc/self/status")
peak = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM")]
print(len(report.drifted_columns), peak[0] if peak else 0, ",".join(heavy) or "-")
"""


def window(rows: int, seed: int, *, current: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    for j, name in enumerate(NUMERIC):
        mean, sd = 10.0 * j, 1.0 + j  # every column on its own scale
        x = rng.normal(0.0, 1.0, rows)
        if current:
            if name == "num_0":
                x += 0.5
            elif name == "num_1":
                x *= 1.5
            elif name == "num_2":
                x[rng.random(rows) < 0.2] += 2.0
            elif name == TINY:
                x += 0.05
        nulls = rng.random(rows) < 0.01 if name in WITH_NULLS else None
        columns[name] = pa.array(mean + sd * x, mask=nulls)
    for name in CATEGORICAL:
        mix, levels = MIX, LEVELS
        if current and name == "cat_0":
            mix = MIX_DRIFTED
        elif current and name == "cat_1":
            mix, levels = np.append(MIX * 0.85, 0.15), np.append(LEVELS, "new")
        codes = np.minimum(np.searchsorted(np.cumsum(mix), rng.random(rows)), len(mix) - 1)
        nulls = rng.random(rows) < 0.01 if name in WITH_NULLS else None
        columns[name] = pa.array(levels[codes], mask=nulls)
    return pa.table(columns)


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def prepare(rows: int, work: Path) -> tuple[Path, Path, Path]:
    """Write both windows as Parquet and the reference profile as a file."""
    reference, current = window(rows, 1, current=False), window(rows, 2, current=True)
    ref_path, cur_path = work / f"reference-{rows}.parquet", work / f"current-{rows}.parquet"
    pq.write_table(reference, ref_path)
    pq.write_table(current, cur_path)
    profile = drift.build_profile_from_table(reference, NUMERIC, CATEGORICAL)
    profile_path = work / f"profile-{rows}.npz"
    profile_path.write_bytes(profile.to_bytes())
    return ref_path, cur_path, profile_path


def ours(profile_path: Path, cur_path: Path) -> drift.DriftReport:
    profile = ReferenceProfile.from_bytes(profile_path.read_bytes())
    return drift.compare(profile, drift.read_window(cur_path, profile))


def floor(profile: ReferenceProfile, ref_path: Path, cur_path: Path) -> None:
    for path in (ref_path, cur_path):
        table = drift.read_window(path, profile)  # the same reader as ours
        for name in NUMERIC:
            np.sort(table.column(name).to_numpy())


def evidently_run(ref_path: Path, cur_path: Path) -> dict[str, bool]:
    """evidently's per-column verdicts with its defaults (Wasserstein / Jensen-Shannon)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    reference = Dataset.from_pandas(pq.read_table(ref_path).to_pandas(), data_definition=definition)
    current = Dataset.from_pandas(pq.read_table(cur_path).to_pandas(), data_definition=definition)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
    flags = {}
    for test in snapshot.dict()["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith("ValueDrift"):
            flags[params["column"]] = test["status"] == "FAIL"
    return flags


def fresh(profile_path: Path, cur_path: Path, repeat: int) -> tuple[float, float, float, str]:
    """Best wall time of the step as a new process; its peak RSS in GB, as the process
    saw it (VmHWM) and as getrusage reports it; its heavy imports.

    ru_maxrss of a child counts the RSS it had before exec, i.e. a share of this big
    benchmark process at fork time, so VmHWM is the figure to trust on Linux.
    """
    times, own, rusage, heavy = [], 0.0, 0.0, ""
    for _ in range(repeat):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", STEP, str(profile_path), str(cur_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        times.append(time.perf_counter() - started)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"the fresh-process check failed (exit {process.returncode})")
        _, hwm_kb, heavy = output.split()
        own = max(own, int(hwm_kb) / 1024**2)
        rusage = max(rusage, usage.ru_maxrss / 1024**2)  # KB on Linux
    return min(times), own or rusage, rusage, heavy


def detection(report: drift.DriftReport) -> tuple[int, int, bool]:
    flagged = set(report.drifted_columns)
    return len(flagged & set(DRIFTED)), len(flagged & set(STABLE)), TINY in flagged


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--keep", help="work in this directory and keep it")
    args = parser.parse_args()
    rows = args.rows
    work = Path(args.keep or tempfile.mkdtemp(prefix="ctpipe-drift-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, bool]] = []

    sizes = sorted({min(SMALL_ROWS, rows), min(100_000, rows), rows})
    files = {n: prepare(n, work) for n in sizes}
    ref_path, cur_path, profile_path = files[rows]
    print(
        f"data: {rows:,} rows x {len(NUMERIC) + len(CATEGORICAL)} columns per window "
        f"({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical); profile "
        f"{profile_path.stat().st_size / 1e6:.0f} MB; {os.cpu_count()} CPUs"
    )

    ours(profile_path, cur_path)  # warm the page cache and the allocator
    ours_s = best_of(args.repeat, lambda: ours(profile_path, cur_path))
    profile = ReferenceProfile.from_bytes(profile_path.read_bytes())
    floor_s = best_of(args.repeat, lambda: floor(profile, ref_path, cur_path))
    ratio = ours_s / floor_s
    print(
        f"ours (load profile + read current + check): {ours_s:.3f}s   floor (read both + sort "
        f"numeric): {floor_s:.3f}s   ratio {ratio:.2f}  ({verdict(ratio <= TARGET_FLOOR_RATIO)} "
        f"<= {TARGET_FLOOR_RATIO})"
    )
    results.append(("ours / floor", ratio <= TARGET_FLOOR_RATIO))

    report = ours(profile_path, cur_path)
    if not args.skip_evidently:
        started = time.perf_counter()
        flags = evidently_run(ref_path, cur_path)
        evidently_s = time.perf_counter() - started
        speedup = evidently_s / ours_s
        agree = sum(flags.get(c.name) == c.drifted for c in report.columns)
        print(
            f"evidently DataDriftPreset: {evidently_s:.1f}s   speed-up {speedup:.0f}x  "
            f"({verdict(speedup >= TARGET_EVIDENTLY_SPEEDUP)} >= {TARGET_EVIDENTLY_SPEEDUP:.0f}x); "
            f"per-column verdicts agree on {agree} of {len(report.columns)}"
        )
        results.append(("evidently / ours", speedup >= TARGET_EVIDENTLY_SPEEDUP))

    for n, target in ((sizes[0], TARGET_FRESH_SMALL_S), (rows, TARGET_FRESH_LARGE_S)):
        _, small_cur, small_profile = files[n]
        seconds, rss, rusage, heavy = fresh(small_profile, small_cur, args.repeat)
        print(
            f"fresh process at {n:,} rows: {seconds:.2f}s  ({verdict(seconds <= target)} <= "
            f"{target}s); peak RSS {rss:.2f} GB (getrusage: {rusage:.2f} GB); heavy imports: "
            f"{heavy}"
        )
        results.append((f"fresh {n:,}", seconds <= target))
        if n == rows:
            print(f"  peak RSS {verdict(rss <= TARGET_RSS_GB)} <= {TARGET_RSS_GB} GB")
            results.append(("peak RSS", rss <= TARGET_RSS_GB))

    for n in sizes:
        _, n_cur, n_profile = files[n]
        found, false_alarms, tiny = detection(ours(n_profile, n_cur))
        n_reference = ReferenceProfile.from_bytes(n_profile.read_bytes())
        holm = drift.compare(
            n_reference, drift.read_window(n_cur, n_reference), DriftSettings(method="holm")
        )
        h_found, h_false, h_tiny = detection(holm)
        ok = found == len(DRIFTED) and false_alarms == 0 and not tiny
        print(
            f"detection at {n:>9,} rows: found {found} of {len(DRIFTED)} drifted, flagged "
            f"{false_alarms} of {len(STABLE)} stable, 0.05σ column "
            f"{'flagged' if tiny else 'not flagged'}  ({verdict(ok)})   [holm: {h_found}/"
            f"{len(DRIFTED)}, {h_false}/{len(STABLE)}, 0.05σ {'flagged' if h_tiny else 'not flagged'}]"
        )
        results.append((f"detection {n:,}", ok))

    print(report.summary())
    missed = [name for name, ok in results if not ok]
    print(
        f"targets: {len(results) - len(missed)} of {len(results)} met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
