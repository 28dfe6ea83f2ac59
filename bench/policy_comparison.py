"""Does retraining pay on real data? `ctpipe simulate --policy never,schedule:K,auto` on
Seattle's daily weather, 2012-2015 (1,461 days, vega_datasets' seattle-weather.csv).

The stream is `ctpipe.data.scenarios.seattle_weather()`: will it rain today (`wet`: any
precipitation), from the day's temperatures, wind, yesterday's precipitation and the
month. The change in it is the seasons. Each policy replays the same stream with the
real monitor and the real pipeline (kfp.local): batches of `--batch` days, the first
champion trained on `--initial-batches` of them, labels one batch late.

Prints the comparison table (also in OUT/comparison.md and .json, plot in comparison.png)
and the ratio auto / never of the per-batch ROC AUC averaged over the replay (the column
to read: scores of different model versions are not calibrated to each other), and
auto / schedule:K, both measured in this run. Above 1: auto's champions predicted better.
No target: this measures, on one real stream, whether the monitor's triggers earn their
compute. The defaults (one linear candidate, batches of 60 days) take about five minutes
on two cores.

    python bench/policy_comparison.py [--batch 60] [--schedule 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ctpipe import policy_comparison
from ctpipe.data import scenarios

DEFAULT_SEARCH = [{"family": "linear", "params": {"C": 1.0}}]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=60, help="days per batch (default: 60)")
    parser.add_argument(
        "--schedule", type=int, default=4, help="K of schedule:K, in batches (default: 4)"
    )
    parser.add_argument(
        "--initial-batches",
        type=int,
        default=4,
        help="batches the first champion trains on (default: 4)",
    )
    parser.add_argument(
        "--label-delay", type=int, default=1, help="batches until labels arrive (default: 1)"
    )
    parser.add_argument(
        "--search",
        help="JSON list of candidate spaces (default: one linear candidate; two families, e.g. "
        'adding {"family": "hist_gradient_boosting", "params": {"max_iter": 60}}, about doubles '
        "the time)",
    )
    parser.add_argument(
        "--bootstrap-samples", type=int, default=200, help="the gate's bootstrap (default: 200)"
    )
    parser.add_argument(
        "--gate-margin",
        type=float,
        help="the gate's margin (default: the shipped 0.01); with a few dozen test rows the "
        "bootstrap interval is wide, and a small margin refuses most challengers",
    )
    parser.add_argument(
        "--train-window",
        type=int,
        help="rows (days) each retraining uses (default: initial batches x batch)",
    )
    parser.add_argument(
        "--keep", help="work in this directory and keep it (default: a temporary one)"
    )
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="ctpipe-bench-policies-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = scenarios.write_seattle_weather(work / "seattle-weather.csv")
    stream = scenarios.seattle_weather()
    wet = stream.column(scenarios.SEATTLE_TARGET).to_numpy().mean()
    print(
        f"data: {stream.num_rows:,} days of Seattle weather ({data}); target "
        f"'{scenarios.SEATTLE_TARGET}' on {wet:.0%} of days"
    )
    config = work / "ctpipe.yaml"
    search = json.loads(args.search) if args.search else DEFAULT_SEARCH
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": "seattle-weather",
                "task": "classification",
                "target": scenarios.SEATTLE_TARGET,
                "timestamp": scenarios.TIME,
                "id_column": "request_id",
                "search": {"candidates": search},
                "gate": {
                    "thresholds": {"roc_auc": 0.6},
                    "bootstrap_samples": args.bootstrap_samples,
                    **({"margin": args.gate_margin} if args.gate_margin is not None else {}),
                },
            },
            sort_keys=False,
        )
    )
    schedule = f"schedule:{args.schedule}"
    policies = ["never", schedule, "auto"]
    batches = stream.num_rows // args.batch
    print(
        f"replay: {batches} batches of {args.batch} days, the first {args.initial_batches} train "
        f"the first champion; policies {', '.join(policies)}; {len(search)} candidate(s)",
        flush=True,
    )
    out = work / "out"
    command = [
        sys.executable, "-m", "ctpipe.cli", "simulate", "--data", str(data),
        "--target", scenarios.SEATTLE_TARGET, "--time", scenarios.TIME,
        "--batch", str(args.batch), "--label-delay", str(args.label_delay),
        "--initial-batches", str(args.initial_batches), "--policy", ",".join(policies),
        "--config", str(config), "--out", str(out), "--force",
    ]  # fmt: skip
    if args.train_window:
        command += ["--train-window", str(args.train_window)]
    # Each replay keeps its own registry under OUT/<policy>, whatever this shell points at.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, check=False)  # its progress goes to the terminal
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"ctpipe simulate failed (exit {result.returncode}): {' '.join(command)}")

    document = json.loads((out / policy_comparison.JSON_FILE).read_text())
    comparison = policy_comparison.build(
        [
            json.loads((out / r["folder"] / "summary.json").read_text())
            for r in document["policies"]
        ],
        metric=document["metric"],
        folders=[r["folder"] for r in document["policies"]],
    )
    print(f"\nbench: {len(policies)} replays in {seconds:.0f}s; the table again:\n")
    print(comparison.text())
    column = comparison.read.replace("_", " ")
    for other in ("never", schedule):
        ratio = comparison.ratio("auto", other)
        shown = f"{ratio:.3f}" if ratio is not None else "n/a (no metric)"
        print(f"ratio auto / {other} ({comparison.metric}, {column}): {shown}")
    rows = {r.policy: r for r in comparison.rows}
    if rows["never"].compute_seconds > 0:
        print(
            f"compute auto / never: {rows['auto'].compute_seconds / rows['never'].compute_seconds:.2f}"
            f" ({rows['auto'].retrains} retrains against 0)"
        )
    if args.keep:
        print(f"files: {out}/comparison.md, comparison.json, comparison.png")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print("(the replays were in a temporary folder, now removed; --keep DIR keeps them)")


if __name__ == "__main__":
    main()
