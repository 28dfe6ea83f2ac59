"""Compare retraining policies replayed on the same stream (`ctpipe simulate --policy a,b,c`).

Pure functions over `Simulation.summary()` dicts: parse the policy list, build one table
(Markdown, JSON, terminal text) and one plot. The replays themselves are `simulate.run`.

Two overall figures per policy:
    pooled         the metric over every replayed prediction at once;
    mean per batch the mean of the per-batch metric (the timeline's `metric`).
For ROC AUC read the mean per batch: each batch is scored by one model version, and the
scores of different versions are not calibrated to each other, so pooling ranks one
version's scores against another's. For accuracy and RMSE the two differ only in how
batches are weighted; the pooled figure counts each prediction once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ctpipe import evaluation
from ctpipe.errors import ConfigError
from ctpipe.simulate import ReplayStrategy

MARKDOWN_FILE = "comparison.md"
JSON_FILE = "comparison.json"
PLOT_FILE = "comparison.png"
POOLED = "pooled"
MEAN_PER_BATCH = "mean_per_batch"
LOWER_IS_BETTER = frozenset({"rmse"})
START_FORMAT = "%Y-%m-%d %H:%M"  # BatchRecord.start


def parse_policies(text: str) -> list[str]:
    """The policies of a comma-separated `--policy` value, in canonical form.

    Raises ConfigError (naming --policy) for an empty item, an unknown policy, or one
    listed twice (`schedule:4` and `schedule:04` are the same policy).
    """
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"--policy: empty item in {text!r}; separate policies with one comma")
    seen: dict[ReplayStrategy, str] = {}
    for item in items:
        policy = ReplayStrategy.parse(item)
        if policy in seen:
            earlier = f" (as {seen[policy]!r})" if seen[policy] != item else ""
            raise ConfigError(
                f"--policy: {item!r} is listed twice in {text!r}{earlier}; list each policy once"
            )
        seen[policy] = item
    return [str(p) for p in seen]


def slug(policy: str) -> str:
    """The folder name of a policy's replay: `schedule:4` -> `schedule-4`."""
    return policy.replace(":", "-")


@dataclass(frozen=True)
class Row:
    policy: str
    folder: str
    pooled: float | None
    mean_per_batch: float | None
    scored_batches: int
    batches: int
    retrains: int
    promotions: int
    failed_runs: int
    compute_seconds: float
    pipeline_seconds: float


@dataclass(frozen=True)
class Point:
    start: str
    metric: float | None
    retrained: bool
    promoted: bool
    failed: bool = False  # the retrain's run failed (summaries that record it)


@dataclass
class Comparison:
    metric: str
    rows: list[Row]
    series: dict[str, list[Point]] = field(default_factory=dict)

    @property
    def read(self) -> str:
        """Which overall column to read: mean per batch for ROC AUC, else pooled."""
        return MEAN_PER_BATCH if self.metric in evaluation.RANKING_METRICS else POOLED

    @property
    def advice(self) -> str:
        if self.read == MEAN_PER_BATCH:
            return (
                f"Read 'mean per batch': ROC AUC scores of different model versions are not "
                f"calibrated to each other, so the pooled {self.metric} mixes their scales."
            )
        better = "lower" if self.metric in LOWER_IS_BETTER else "higher"
        return (
            f"Read 'pooled' ({better} is better): it counts each prediction once; "
            "'mean per batch' weighs every batch the same."
        )

    def best(self) -> list[str]:
        """The policies with the best figure in the column to read (several on a tie at
        4 decimals, as shown; none when no policy was scored)."""
        scored = {r.policy: getattr(r, self.read) for r in self.rows}
        values = {p: round(v, 4) for p, v in scored.items() if v is not None}
        if not values:
            return []
        pick = min if self.metric in LOWER_IS_BETTER else max
        top = pick(values.values())
        return [p for p, v in values.items() if v == top]

    def _verdict(self) -> str | None:
        best = self.best()
        if not best:
            return None
        if len(best) == len(self.rows) > 1:
            return "All policies tie on that column."
        if len(best) > 1:
            return f"Best by that column: {', '.join(best)} (tied)."
        return f"Best by that column: {best[0]}."

    def ratio(self, policy: str, baseline: str) -> float | None:
        """policy's figure / baseline's figure, in the column to read."""
        by_policy = {r.policy: getattr(r, self.read) for r in self.rows}
        top, bottom = by_policy.get(policy), by_policy.get(baseline)
        if top is None or bottom is None or bottom == 0:
            return None
        return float(top / bottom)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = [
            "policy",
            f"{self.metric} pooled",
            f"{self.metric} mean per batch",
            "retrains",
            "promotions",
            "failed runs",
            "compute s",
            "pipeline s",
        ]
        body = [
            [
                r.policy,
                _number(r.pooled),
                _number(r.mean_per_batch),
                str(r.retrains),
                str(r.promotions),
                str(r.failed_runs),
                f"{r.compute_seconds:.0f}",
                f"{r.pipeline_seconds:.0f}",
            ]
            for r in self.rows
        ]
        return header, body

    def markdown(self) -> str:
        header, body = self._cells()
        lines = [
            f"# Policy comparison: {self.metric}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(row) + " |" for row in body),
            "",
            self.advice,
        ]
        verdict = self._verdict()
        if verdict:
            lines.append(verdict)
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The table for a terminal: aligned columns, the advice under it."""
        header, body = self._cells()
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            )
            for row in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(self.advice)
        verdict = self._verdict()
        if verdict:
            lines.append(verdict)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "read": self.read,
            "advice": self.advice,
            "best": self.best(),
            "policies": [asdict(r) for r in self.rows],
            "series": {p: [asdict(x) for x in points] for p, points in self.series.items()},
        }


def metric_name(summary: Mapping[str, Any]) -> str:
    """The per-batch metric of a summary: roc_auc when the replay had it, else rmse or accuracy."""
    if summary.get("metric_name"):
        return str(summary["metric_name"])
    prequential = summary.get("prequential") or {}
    for name in ("roc_auc", "rmse", "accuracy"):
        if name in prequential:
            return name
    raise ValueError(f"policy {summary.get('policy')!r}: summary has no prequential metric")


def build(
    summaries: Sequence[Mapping[str, Any]],
    *,
    metric: str | None = None,
    folders: Sequence[str] | None = None,
) -> Comparison:
    """One comparison over replays of the same stream, in the order given.

    `metric` is the per-batch metric (`Simulation.metric_name`); without it, it is read
    off the first summary. `folders` are where each replay was written (default: the
    policy's slug).
    """
    if not summaries:
        raise ValueError("no summaries to compare")
    name = metric or metric_name(summaries[0])
    rows: list[Row] = []
    series: dict[str, list[Point]] = {}
    for index, summary in enumerate(summaries):
        policy = str(summary["policy"])
        timeline = list(summary.get("timeline") or [])
        scored = [
            float(b["metric"])
            for b in timeline
            if b.get("metric") is not None and math.isfinite(float(b["metric"]))
        ]
        seconds = summary.get("compute_seconds") or {}
        pooled = (summary.get("prequential") or {}).get(name)
        rows.append(
            Row(
                policy=policy,
                folder=folders[index] if folders is not None else slug(policy),
                pooled=float(pooled) if pooled is not None else None,
                mean_per_batch=sum(scored) / len(scored) if scored else None,
                scored_batches=len(scored),
                batches=int(summary.get("batches", len(timeline))),
                retrains=int(summary.get("retrains", 0)),
                promotions=int(summary.get("promotions", 0)),
                failed_runs=int(summary.get("failed_runs", 0)),
                compute_seconds=float(seconds.get("total", 0.0)),
                pipeline_seconds=float(seconds.get("pipeline", 0.0)),
            )
        )
        series[policy] = [
            Point(
                start=str(b["start"]),
                metric=float(b["metric"]) if b.get("metric") is not None else None,
                retrained=b.get("run") is not None,
                promoted=bool(b.get("blessed")),
                failed=bool(b.get("failed", False)),
            )
            for b in timeline
        ]
    return Comparison(name, rows, series)


def write(comparison: Comparison, out_dir: Path, title: str = "") -> list[Path]:
    """comparison.md, comparison.json and comparison.png (headed `title`) under out_dir;
    returns the paths."""
    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text(comparison.markdown())
    document = out_dir / JSON_FILE
    document.write_text(json.dumps(comparison.to_dict(), indent=2))
    picture = out_dir / PLOT_FILE
    plot(comparison, picture, title)
    return [markdown, document, picture]


def plot(comparison: Comparison, path: Path, title: str = "") -> None:
    """`figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(comparison, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(comparison: Comparison, title: str = "") -> Any:
    """The per-batch metric of every policy over the batch start dates: a matplotlib
    Figure (the caller closes it).

    A filled triangle marks a retrain whose challenger was promoted (the next batch is
    predicted by it), a hollow one a retrain the gate refused, a cross a failed run; each
    kind has a legend entry.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    fig, axis = plt.subplots(figsize=(10, 5))
    by_policy = {r.policy: r for r in comparison.rows}
    for index, (policy, points) in enumerate(comparison.series.items()):
        color = f"C{index % 10}"
        dates = np.array([_date(p.start) for p in points], dtype="datetime64[s]")
        values = [p.metric if p.metric is not None else math.nan for p in points]
        row = by_policy.get(policy)
        figure = getattr(row, comparison.read) if row is not None else None
        label = policy
        if row is not None:
            label += (
                f" ({comparison.read.replace('_', ' ')} {_number(figure)}, "
                f"{row.retrains} retrains, {row.promotions} promoted)"
            )
        axis.plot(dates, values, marker=".", color=color, label=label, linewidth=1.4)
        for at, (value, point) in enumerate(zip(values, points, strict=True)):
            if point.retrained and math.isfinite(value):
                axis.plot(
                    dates[at : at + 1],
                    [value],
                    marker="x" if point.failed else "^",
                    markersize=9,
                    color=color,
                    markerfacecolor=color if point.promoted else "none",
                    linestyle="none",
                )
    axis.set_ylabel(f"{comparison.metric} per batch")
    axis.set_xlabel("batch start")
    axis.set_title(
        f"{title or 'ctpipe simulate: policies compared on one stream'} ({comparison.metric})",
        fontsize=10,
    )
    axis.grid(alpha=0.3)
    # One legend entry per marker kind (in grey: each policy draws them in its colour).
    marks = [
        Line2D([], [], marker="^", color="grey", linestyle="none", label="retrain promoted"),
        Line2D(
            [],
            [],
            marker="^",
            color="grey",
            markerfacecolor="none",
            linestyle="none",
            label="retrain refused by the gate",
        ),
        Line2D([], [], marker="x", color="grey", linestyle="none", label="retrain run failed"),
    ]
    handles, _ = axis.get_legend_handles_labels()
    # Below the axes: the lines often cross the whole plot.
    axis.legend(
        handles=[*handles, *marks],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        fontsize=8,
        frameon=False,
        ncol=2,
    )
    locator = mdates.AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _date(start: str) -> datetime:
    try:
        return datetime.strptime(start, START_FORMAT)
    except ValueError:
        return datetime.fromisoformat(start)


def _number(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "-"
