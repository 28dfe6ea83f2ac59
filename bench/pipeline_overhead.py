"""What running as a KFP pipeline costs over calling the same code in one process.

Both sides start from nothing (fresh state, fresh MLflow store) and run the same stage
functions on the same data with the shipped search space:

  in-process  stages.run_in_process: every step as a plain call in one Python process,
              candidates one after another, all CPUs each;
  pipeline    `ctpipe run`'s path: kfp.local, one fresh process per step, two steps at
              a time (kfp.local's cap), half the CPUs each.

Prints both wall times and their ratio. Target: ratio <= 1.25 on 100k rows x 20 columns.

    python bench/pipeline_overhead.py [--rows 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ctpipe import config as config_module
from ctpipe import stages
from ctpipe.data import synthetic
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
    args = parser.parse_args()

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

    from ctpipe.pipelines.local import LOCAL_PARALLELISM, run_local

    os.environ[THREADS_ENV] = str(cpus)
    started = time.perf_counter()
    steps = stages.run_in_process(
        base.replace(state_dir=str(work / "state-inprocess")), work / "inprocess"
    ).seconds
    baseline = time.perf_counter() - started
    print(f"in-process: {baseline:7.1f}s  " + "  ".join(f"{k} {v:.1f}" for k, v in steps.items()))

    os.environ[THREADS_ENV] = str(max(1, cpus // LOCAL_PARALLELISM))
    started = time.perf_counter()
    run = run_local(base.replace(state_dir=str(work / "state-pipeline")), out=io.StringIO())
    pipeline = time.perf_counter() - started
    if not run.ok:
        raise SystemExit(f"the pipeline run failed: {run.errors}")
    print(
        f"pipeline:   {pipeline:7.1f}s  ({len(run.candidates)} candidates, champion v{run.registered_version})"
    )

    ratio = pipeline / baseline
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"ratio pipeline / in-process: {ratio:.3f}  ({verdict} the target <= {TARGET})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
