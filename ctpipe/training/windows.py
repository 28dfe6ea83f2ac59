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

import numpy as np

from ctpipe.options import AUTO, EXPANDING, Span, WindowSpec

MICROSECONDS = 1_000_000


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
