"""`train.window: auto`: choose how far back a retrain looks by what worked lately.

Rolling origin over the newest labelled rows: for fold k = 1..train.backtest_folds, the
k-th newest block of rows (together the folds span the newest validation_fraction) is
predicted by the search's first candidate (the simplest, by convention), fitted on each
window in `train.auto_windows` ending where that block starts. The window with the best
mean score wins when it beats the one listed first by 1% (RELATIVE_MARGIN); otherwise
the one listed first stays. Bounded: folds x windows fits of one candidate.

It runs twice. On the rows before the test slice it chooses the window of the challenger
the gate judges (the gate's rows are never looked at). On every labelled row it chooses
the window of the final refit, which the gate does not judge: right after a change the
test slice holds most of the new world, and only this backtest can see it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ctpipe.config import Config
from ctpipe.errors import DataError

if TYPE_CHECKING:
    from ctpipe.data.schema import Schema


# Another window replaces the one listed first only when its mean is better by this share.
RELATIVE_MARGIN = 0.01


@dataclass(frozen=True)
class Fold:
    window: str
    fold: int  # 1: the newest block
    train_rows: int
    block_rows: int
    block_start: str
    score: float | None  # None: this window had too few rows (or one class) at this origin


@dataclass(frozen=True)
class Backtest:
    chosen: str
    metric: str
    candidate: str
    folds: tuple[Fold, ...]
    seconds: float
    note: str = ""

    def mean(self, window: str) -> float | None:
        scores = [f.score for f in self.folds if f.window == window]
        if not scores or any(s is None for s in scores):
            return None
        return sum(s for s in scores if s is not None) / len(scores)

    @property
    def windows(self) -> list[str]:
        return list(dict.fromkeys(f.window for f in self.folds))

    def summary(self) -> str:
        means = ", ".join(
            f"{w} {m:.4f}" if (m := self.mean(w)) is not None else f"{w} n/a" for w in self.windows
        )
        return (
            f"train.window auto: chose {self.chosen} (backtest mean {self.metric}: {means}; "
            f"{self.candidate}, {self.seconds:.1f}s){' ' + self.note if self.note else ''}"
        )

    def markdown(self, title: str = "Training window", rows: str = "before the test slice") -> str:
        folds = sorted({f.fold for f in self.folds})
        lines = [
            f"## {title}: {self.chosen}",
            "",
            f"Chosen by a rolling-origin backtest of `{self.candidate}` on the newest labelled "
            f"rows {rows} ({self.metric}; fold 1 is the newest block). {self.note}",
            "",
            "| window | " + " | ".join(f"fold {k}" for k in folds) + " | mean |",
            "|---|" + "---|" * (len(folds) + 1),
        ]
        for window in self.windows:
            cells = []
            for k in folds:
                fold = next(f for f in self.folds if f.window == window and f.fold == k)
                shown = "n/a" if fold.score is None else f"{fold.score:.4f}"
                cells.append(f"{shown} ({fold.train_rows:,} rows)")
            mean = self.mean(window)
            mark = " **(chosen)**" if window == self.chosen else ""
            lines.append(
                f"| {window}{mark} | "
                + " | ".join(cells)
                + f" | {'n/a' if mean is None else f'{mean:.4f}'} |"
            )
        return "\n".join(lines)


def choose(history: pa.Table, schema: Schema, config: Config, threads: int) -> Backtest:
    """`history`: the labelled rows before the test slice, in time order."""
    from ctpipe import options
    from ctpipe.data.split import cut, times_of
    from ctpipe.training import windows
    from ctpipe.training.search import expand

    started = time.perf_counter()
    candidate = expand(config)[0]
    metric = config.search_metric
    higher = config.higher_is_better(metric)
    specs = [options.parse_window(text) for text in config.train.auto_windows]
    times = times_of(history, config)
    n = len(times)
    # The folds together span the newest validation_fraction of the rows: after a change,
    # the newest blocks are the ones that tell windows apart.
    folds_wanted = config.train.backtest_folds
    block = max(config.split.min_rows, round(n * config.split.validation_fraction / folds_wanted))
    folds: list[Fold] = []
    for k in range(1, folds_wanted + 1):
        origin = cut(times, n - k * block)
        stop = cut(times, n - (k - 1) * block) if k > 1 else n
        if origin < config.split.min_rows or stop - origin < config.split.min_rows:
            break
        evaluated = history.slice(origin, stop - origin)
        when = evaluated.column(config.timestamp)[0].as_py().isoformat()
        for spec in specs:
            first = windows.start(times, origin, spec)
            rows = history.slice(first, origin - first)
            value = _fold_score(candidate, rows, evaluated, schema, config, metric, threads)
            folds.append(Fold(str(spec), k, rows.num_rows, evaluated.num_rows, when, value))
    seconds = time.perf_counter() - started
    default = str(specs[0])
    if not folds:
        return Backtest(
            default,
            metric,
            candidate.id,
            (),
            seconds,
            f"too few rows for one fold of {block:,} rows: {default} (listed first) is used",
        )
    result = Backtest(default, metric, candidate.id, tuple(folds), seconds)
    scored = [(w, m) for w in result.windows if (m := result.mean(w)) is not None]
    if not scored:
        return Backtest(
            default, metric, candidate.id, tuple(folds), seconds, "no window scored every fold"
        )
    sign = 1.0 if higher else -1.0
    best, value = max(scored, key=lambda wm: (sign * wm[1], -result.windows.index(wm[0])))
    baseline = result.mean(default)
    note = ""
    # Fewer rows are a risk that the evidence has to pay for: on a stable stream the
    # windows differ by noise, and the window listed first (the longest, by default) stays.
    if (
        best != default
        and baseline is not None
        and sign * (value - baseline) < RELATIVE_MARGIN * abs(baseline)
    ):
        note = (
            f"{best} scored {value:.4f} against {default}'s {baseline:.4f}, within "
            f"{RELATIVE_MARGIN:.0%}: {default} (listed first) stays"
        )
        best = default
    return Backtest(best, metric, candidate.id, tuple(folds), seconds, note)


def _fold_score(
    candidate: Any,
    rows: pa.Table,
    evaluated: pa.Table,
    schema: Schema,
    config: Config,
    metric: str,
    threads: int,
) -> float | None:
    import pyarrow.compute as pc

    from ctpipe.training import fit

    if rows.num_rows < config.split.min_rows:
        return None
    if config.task == "classification":
        for part in (rows, evaluated):
            if len(pc.unique(part.column(config.target)).drop_null()) < 2:
                return None
    try:
        model = fit.fit(candidate, rows, schema, config, threads).model
        value = fit.score(model, evaluated, schema, config, metric)
    except (ValueError, DataError):  # e.g. a class the fold's rows never saw
        return None
    return value if value == value else None
