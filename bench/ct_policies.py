"""Does retraining pay? `ctpipe simulate --policy never,schedule:2,schedule:4,auto` on the
demo's synthetic stream and on real time-ordered data, with the target of issue 14.

Streams (`--streams`, default both):
    demo     the stream of `ctpipe demo` (`scenarios.demo_stream()`): 30 batches of 1,000
             rows, an abrupt change (features and labelling rule) at batch 9, a gradual
             one over batches 17-21 and a transient one over 24-25; the demo's two
             candidates
    seattle  Seattle's daily weather 2012-2015 (vega_datasets' seattle-weather.csv,
             `scenarios.seattle_weather()`): will it rain today; batches of 60 days; the
             change in it is the seasons; one linear candidate

Each policy replays the stream with the real monitor and the real pipeline (kfp.local),
labels one batch late, the first champion trained on 4 batches, the config's defaults
otherwise (train.window, thresholds calibrated, triggers weighted by labels, the
progressive rollout: a blessed challenger serves only after it wins in shadow and as the
canary, whose share each stream sizes to its batches). Printed
per stream: the comparison table, then the target, measured in this run:
    auto's mean per-batch metric >= the best of never, schedule:2, schedule:4 - 0.005
    auto's retrains <= half of schedule:2's
and the ratio auto / best baseline. No timing target; demo and seattle take about 6
and 5 minutes on two cores (the rollout holds retraining back while it runs).

    python bench/ct_policies.py [--streams demo,seattle] [--keep DIR]
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from ctpipe import policy_comparison
from ctpipe.data import scenarios, synthetic

POLICIES = ("never", "schedule:2", "schedule:4", "auto")
BASELINES = ("never", "schedule:2", "schedule:4")
TOLERANCE = 0.005


@dataclass(frozen=True)
class Stream:
    name: str
    load: Callable[[], pa.Table]
    target: str
    batch: int
    search: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)


STREAMS = {
    s.name: s
    for s in (
        Stream(
            "demo",
            scenarios.demo_stream,
            "label",
            1000,
            scenarios.DEMO_SEARCH,
            {
                "gate": {"thresholds": {"roc_auc": 0.6}, "bootstrap_samples": 300},
                # As `ctpipe demo`: abrupt concept drift, where the window matters; a
                # quarter of each batch as the canary.
                "train": {"window": "auto"},
                "deploy": {"canary_traffic_percent": 25},
            },
        ),
        Stream(
            "seattle",
            scenarios.seattle_weather,
            scenarios.SEATTLE_TARGET,
            60,
            [{"family": "linear", "params": {"C": 1.0}}],
            {
                "gate": {"thresholds": {"roc_auc": 0.6}, "bootstrap_samples": 200},
                # 60 rows a batch: half of them, so a canary can reach a verdict
                "deploy": {"canary_traffic_percent": 50},
            },
        ),
    )
}


@dataclass(frozen=True)
class Verdict:
    stream: str
    metric: str
    auto: float
    best: str
    best_value: float
    auto_retrains: int
    schedule2_retrains: int

    @property
    def metric_ok(self) -> bool:
        return self.auto >= self.best_value - TOLERANCE

    @property
    def retrains_ok(self) -> bool:
        return self.auto_retrains * 2 <= self.schedule2_retrains

    def lines(self) -> list[str]:
        yes = {True: "yes", False: "NO"}
        return [
            f"{self.stream}: auto {self.auto:.4f} vs best baseline {self.best} "
            f"{self.best_value:.4f} ({self.metric} mean per batch): difference "
            f"{self.auto - self.best_value:+.4f}, within {TOLERANCE}: {yes[self.metric_ok]}; "
            f"ratio auto / {self.best}: {self.auto / self.best_value:.4f}",
            f"{self.stream}: retrains auto {self.auto_retrains} vs schedule:2 "
            f"{self.schedule2_retrains}, at most half: {yes[self.retrains_ok]}",
        ]


def replay(stream: Stream, work: Path) -> tuple[policy_comparison.Comparison, float]:
    data = work / f"{stream.name}.parquet"
    synthetic.write(stream.load(), str(data))
    config = work / f"{stream.name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": f"bench-{stream.name}",
                "task": "classification",
                "target": stream.target,
                "timestamp": scenarios.TIME,
                "id_column": "request_id",
                "search": {"candidates": stream.search},
                **stream.config,
            },
            sort_keys=False,
        )
    )
    out = work / stream.name
    command = [
        sys.executable, "-m", "ctpipe.cli", "simulate", "--data", str(data),
        "--target", stream.target, "--time", scenarios.TIME,
        "--batch", str(stream.batch), "--label-delay", "1", "--initial-batches", "4",
        "--policy", ",".join(POLICIES), "--config", str(config), "--out", str(out), "--force",
    ]  # fmt: skip
    # Each replay keeps its own registry under OUT/<policy>, whatever this shell points at.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, check=False)  # progress goes to the terminal
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
    return comparison, seconds


def verdict(name: str, comparison: policy_comparison.Comparison) -> Verdict:
    rows = {r.policy: r for r in comparison.rows}
    scored = {p: rows[p].mean_per_batch for p in BASELINES}
    best = max((p for p in BASELINES if scored[p] is not None), key=lambda p: scored[p] or 0.0)
    auto = rows["auto"].mean_per_batch
    if auto is None or scored[best] is None:
        raise SystemExit(f"{name}: a replay scored no batch")
    return Verdict(
        name,
        comparison.metric,
        auto,
        best,
        float(scored[best] or 0.0),
        rows["auto"].retrains,
        rows["schedule:2"].retrains,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", default=",".join(STREAMS), help=f"comma-separated, of {', '.join(STREAMS)}"
    )
    parser.add_argument("--keep", help="work in this directory and keep it (default: temporary)")
    args = parser.parse_args()
    names = [n.strip() for n in args.streams.split(",") if n.strip()]
    unknown = [n for n in names if n not in STREAMS]
    if unknown or not names:
        parser.error(f"--streams: unknown {', '.join(unknown) or '(none given)'}")
    work = Path(args.keep or tempfile.mkdtemp(prefix="ctpipe-bench-ct-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    verdicts, tables = [], []
    for name in names:
        stream = STREAMS[name]
        print(
            f"\n=== {name}: policies {', '.join(POLICIES)}, batches of {stream.batch}", flush=True
        )
        comparison, seconds = replay(stream, work)
        tables.append(f"### {name}\n\n{comparison.markdown()}")
        print(f"\n{name}: {len(POLICIES)} replays in {seconds:.0f}s\n{comparison.text()}\n")
        verdicts.append(verdict(name, comparison))
    print("\n=== target: auto within 0.005 of the best baseline, at most half the retrains")
    for v in verdicts:
        for line in v.lines():
            print(line)
    (work / "ct_policies.md").write_text("\n".join(tables))
    if args.keep:
        print(f"files: {work}/ct_policies.md and one folder per stream")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
