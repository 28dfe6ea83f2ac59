"""Which labelled rows a retrain learns from (`train.window`) and how much each counts
(`train.half_life`). Pure functions over time-ordered timestamps.

    expanding       every labelled row
    sliding 5000    the newest 5,000 rows
    sliding 25%     the newest quarter of the rows
    sliding 90d     the rows within 90 days of the newest one
    auto            the best of `train.auto_windows` in a rolling-origin backtest
                    (ctpipe.training.backtest)

A window always ends at the newest row it may use: before the test slice for the fit the
gate judges, at the newest labelled row for the final refit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ctpipe.config import parse_duration

EXPANDING = "expanding"
SLIDING = "sliding"
AUTO = "auto"

_ROWS = re.compile(r"^\d+$")
_SHARE = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
MICROSECONDS = 1_000_000


@dataclass(frozen=True)
class Span:
    """A length back from the newest row: a row count, a share of the rows, or seconds."""

    rows: int | None = None
    share: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class WindowSpec:
    kind: str  # expanding | sliding | auto
    span: Span | None = None  # for sliding
    text: str = EXPANDING

    def __str__(self) -> str:
        return self.text


def parse_span(text: str | int, *, allow_share: bool = True) -> Span:
    """'5000' -> rows, '25%' -> share, '90d' -> seconds."""
    raw = str(text).strip()
    if _ROWS.match(raw):
        rows = int(raw)
        if rows < 1:
            raise ValueError(f"expected at least 1 row, got {raw!r}")
        return Span(rows=rows)
    share = _SHARE.match(raw)
    if share:
        if not allow_share:
            raise ValueError(f"expected rows (5000) or a duration (30d), got {raw!r}")
        value = float(share.group(1)) / 100
        if not 0 < value <= 1:
            raise ValueError(f"expected a share in (0%, 100%], got {raw!r}")
        return Span(share=value)
    try:
        seconds = parse_duration(raw)
    except ValueError:
        shapes = "rows (5000), a share (25%) or a duration (90d)"
        if not allow_share:
            shapes = "rows (5000) or a duration (30d)"
        raise ValueError(f"expected {shapes}, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {raw!r}")
    return Span(seconds=seconds)


def parse(text: str) -> WindowSpec:
    """'expanding', 'auto' or 'sliding <rows | share% | duration>'."""
    raw = " ".join(str(text).split())
    if raw in (EXPANDING, AUTO):
        return WindowSpec(raw, None, raw)
    head, _, rest = raw.partition(" ")
    if head == SLIDING and rest:
        return WindowSpec(SLIDING, parse_span(rest), raw)
    raise ValueError(
        f"expected expanding, auto, or sliding followed by rows (5000), a share (25%) or "
        f"a duration (90d), got {text!r}"
    )


def start(times: np.ndarray, end: int, spec: WindowSpec) -> int:
    """First row of the window that ends just before row `end` of `times` (sorted
    microseconds). Rows that share a timestamp stay together: the start moves back to the
    first row of its timestamp."""
    if spec.kind == AUTO:
        raise ValueError("an auto window must be resolved by a backtest first")
    end = min(max(end, 0), len(times))
    if spec.kind == EXPANDING or spec.span is None or end == 0:
        return 0
    span = spec.span
    if span.rows is not None:
        first = max(0, end - span.rows)
    elif span.share is not None:
        first = end - max(1, round(end * span.share))
    else:
        assert span.seconds is not None
        newest = times[end - 1]
        first = int(np.searchsorted(times[:end], newest - span.seconds * MICROSECONDS, "left"))
    return int(np.searchsorted(times, times[first], side="left")) if first > 0 else 0


def decay_weights(times: np.ndarray, half_life: Span) -> np.ndarray:
    """Sample weights that halve every `half_life` back from the newest row (rows in time
    order; `times` in microseconds), scaled to a mean of 1 so that regularisation
    strengths mean the same with and without them."""
    n = len(times)
    if n == 0:
        return np.zeros(0)
    if half_life.rows is not None:
        age = np.arange(n - 1, -1, -1, dtype=float) / half_life.rows
    else:
        assert half_life.seconds is not None
        age = (times.max() - times).astype(float) / (half_life.seconds * MICROSECONDS)
    weights = np.power(0.5, age)
    return weights / weights.mean()
