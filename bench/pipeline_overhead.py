"""What running as a KFP pipeline costs over calling the same code in one process.

Both sides start from nothing (fresh state, fresh MLflow store) and run the same stage
functions on the same data with the shipped search space:

  in-process  ingest, validate, split, drift_report, plan, train each candidate, select,
              evaluate, register: one Python process, candidates one after another, all CPUs;
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
from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.training.families import THREADS_ENV

TARGET = 1.25


def in_process(config: Config, work: Path) -> dict[str, float]:
    """The pipeline's steps as plain calls, timed per step."""
    times: dict[str, float] = {}
    work.mkdir(parents=True, exist_ok=True)

    def timed(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        times[name] = times.get(name, 0.0) + time.perf_counter() - started
        return result

    names = (
        "data",
        "schema",
        "report",
        "train",
        "validation",
        "test",
        "profile",
        "reference",
        "drift",
    )
    p = {name: str(work / name) for name in (*names, "best", "evaluation")}
    data = timed("ingest", stages.ingest, config, p["data"])
    result = timed("validate", stages.validate, config, p["data"], p["schema"], p["report"])
    result.raise_if_failed()
    timed(
        "split",
        stages.split,
        config,
        p["data"],
        p["schema"],
        p["train"],
        p["validation"],
        p["test"],
        p["profile"],
        p["reference"],
    )
    timed("drift_report", stages.drift_report, config, p["data"], p["schema"], p["drift"])
    candidates = timed("plan", stages.plan, config)
    trained = []
    for i, candidate in enumerate(candidates):
        path = str(work / f"model-{i}")
        outcome = timed(
            "train", stages.train, config, candidate, p["schema"], p["train"], p["validation"], path
        )
        trained.append((path, outcome.metadata()))
    selection = timed("select", stages.select, config, trained, p["best"])
    evaluation = timed(
        "evaluate", stages.evaluate, config, p["best"], p["test"], p["schema"], p["evaluation"]
    )
    if evaluation.blessed:
        timed(
            "register",
            stages.register,
            config,
            model_path=p["best"],
            model_metadata=selection.chosen.metadata(),
            schema_path=p["schema"],
            evaluation_path=p["evaluation"],
            test_path=p["test"],
            profile_path=p["profile"],
            sample_path=p["reference"],
            dataset_metadata=data.metadata(),
            kfp_run_id="bench",
            kfp_run_name="bench",
            reason="bench",
        )
    return times


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
    steps = in_process(base.replace(state_dir=str(work / "state-inprocess")), work / "inprocess")
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
