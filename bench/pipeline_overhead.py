"""What running as a KFP pipeline costs over calling the same code in one process.

Both sides start from nothing (fresh state, fresh MLflow store) and run the same stage
functions on the same data with the shipped search space:

  in-process  ctpipe.pipelines.in_process: every step as a plain call in one Python process,
              candidates one after another, all CPUs each;
  pipeline    `ctpipe run`'s path: kfp.local, one fresh process per step, two steps at
              a time (kfp.local's cap), half the CPUs each.

Prints both wall times and their ratio. Target: ratio <= 1.25 on 100k rows x 20 columns.

Each side runs in a fresh Python process, timed from its start to its exit, so both pay
their own imports. This machine's speed drifts by tens of percent within minutes, and one
side runs right after the other: `--rounds N` alternates which side goes first and prints
the ratio of the summed times as well as each round's.

    python bench/pipeline_overhead.py [--rows 100000] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctpipe import config as config_module
from ctpipe import stages, steplog
from ctpipe.data import synthetic
from ctpipe.pipelines.in_process import run_in_process
from ctpipe.training.families import THREADS_ENV

TARGET = 1.25


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--keep", help="work in this directory and keep it (default: a temporary one)"
    )
    parser.add_argument(
        "--search", help="JSON list of candidate spaces instead of the shipped search space"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure both sides this many times, alternating"
    )
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one measured process
    parser.add_argument("--config-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        steplog.skip_final_collection()  # as every pipeline step does
        cpus = os.cpu_count() or 2
        SIDES[args.side](
            config_module.from_dict(json.loads(args.config_json)), Path(args.keep), cpus
        )
        return

    work = Path(args.keep or tempfile.mkdtemp(prefix="ctpipe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data_file = work / "events.parquet"
    # 14 numeric + 3 categorical features + request_id + event_time + label = 20 columns
    table = synthetic.generate(args.rows, seed=7, numeric=14, categorical=3)
    synthetic.write(table, str(data_file))
    print(f"data: {table.num_rows:,} rows x {table.num_columns} columns ({data_file})")

    base = config_module.load()
    base = base.replace(data=dataclasses.replace(base.data, uri=str(data_file)))
    if args.search:
        raw = base.to_dict()
        raw["search"]["candidates"] = json.loads(args.search)
        base = config_module.from_dict(raw)
    cpus = os.cpu_count() or 2
    print(f"search space: {len(stages.plan(base))} candidates; {cpus} CPUs")

    totals = {"in-process": 0.0, "pipeline": 0.0}
    ratios = []
    for round_ in range(1, args.rounds + 1):
        where = work / f"round-{round_}"
        sides = ["in-process", "pipeline"] if round_ % 2 else ["pipeline", "in-process"]
        seconds = {}
        for name in sides:
            seconds[name] = _measure(name, base, where)
            totals[name] += seconds[name]
        ratios.append(seconds["pipeline"] / seconds["in-process"])
        print(f"round {round_}: ratio {ratios[-1]:.3f}")

    ratio = totals["pipeline"] / totals["in-process"]
    verdict = "meets" if ratio <= TARGET else "MISSES"
    if args.rounds > 1:
        print(
            f"in-process {totals['in-process']:.1f}s, pipeline {totals['pipeline']:.1f}s in all; "
            f"rounds' ratios {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})"
        )
    print(f"ratio pipeline / in-process: {ratio:.3f}  ({verdict} the target <= {TARGET})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _measure(side: str, config: config_module.Config, where: Path) -> float:
    """Wall time of one side, run in a fresh process."""
    command = [sys.executable, __file__, "--side", side, "--keep", str(where)]
    command += ["--config-json", json.dumps(config.to_dict())]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{side} failed:\n{result.stdout}")
    print(f"{side + ':':<11} {seconds:7.1f}s  {result.stdout.strip()}", flush=True)
    return seconds


def _in_process(config: config_module.Config, where: Path, cpus: int) -> None:
    os.environ[THREADS_ENV] = str(cpus)
    steps = run_in_process(
        config.replace(state_dir=str(where / "state-inprocess")), where / "inprocess"
    ).seconds
    print("  ".join(f"{k} {v:.1f}" for k, v in steps.items()))


def _pipeline(config: config_module.Config, where: Path, cpus: int) -> None:
    from ctpipe.pipelines.local import LOCAL_PARALLELISM, run_local

    os.environ[THREADS_ENV] = str(max(1, cpus // LOCAL_PARALLELISM))
    run = run_local(config.replace(state_dir=str(where / "state-pipeline")), out=io.StringIO())
    if not run.ok:
        raise SystemExit(f"the pipeline run failed: {run.errors}")
    print(f"{len(run.candidates)} candidates, champion v{run.registered_version}")


SIDES = {"in-process": _in_process, "pipeline": _pipeline}


if __name__ == "__main__":
    main()
