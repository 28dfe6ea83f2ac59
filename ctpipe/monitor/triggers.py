"""The retraining triggers, each a pure function of what the monitor measured.

schedule       the champion is older than a maximum age
data_drift     the drift engine's dataset verdict on the current window
performance    a metric on recently labelled predictions fell below a floor, or below
               the champion's own test metric by a margin
concept_drift  Page-Hinkley on the champion's per-prediction error stream, from its
               data's end or the last run that ran to the end, whichever is later
manual         someone asked
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCHEDULE = "schedule"
DATA_DRIFT = "data_drift"
PERFORMANCE = "performance"
CONCEPT_DRIFT = "concept_drift"
MANUAL = "manual"
ALL = (SCHEDULE, DATA_DRIFT, PERFORMANCE, CONCEPT_DRIFT, MANUAL)


@dataclass(frozen=True)
class TriggerResult:
    name: str
    fired: bool
    reason: str
    enabled: bool = True
    statistics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def off(name: str) -> TriggerResult:
    return TriggerResult(name, False, "switched off in the config", enabled=False)


def schedule(
    champion_age_seconds: float, max_age_seconds: float | None, *, since_run: bool = False
) -> TriggerResult:
    """`since_run`: the age counts from the last run that ended (a refused challenger
    leaves the champion old, and its age alone would fire at every check)."""
    if max_age_seconds is None:
        return off(SCHEDULE)
    days, limit = champion_age_seconds / 86400, max_age_seconds / 86400
    stats = {"champion_age_seconds": champion_age_seconds, "max_age_seconds": max_age_seconds}
    subject = "the last run that ended" if since_run else "champion"
    reason = f"{subject} is {days:.1f} days old (max {limit:g})"
    return TriggerResult(SCHEDULE, champion_age_seconds > max_age_seconds, reason, statistics=stats)


def data_drift(
    drift_share: float | None,
    drifted: bool,
    drifted_columns: list[str],
    rows: int,
    min_rows: int,
    share: float,
) -> TriggerResult:
    """`drift_share` is None when the window was too small to judge."""
    if drift_share is None:
        return TriggerResult(
            DATA_DRIFT, False, f"only {rows:,} predictions in the window; need {min_rows:,}"
        )
    stats = {"drift_share": drift_share, "drifted_columns": drifted_columns, "rows": rows}
    shown = ", ".join(drifted_columns[:6]) + ("…" if len(drifted_columns) > 6 else "")
    if drifted:
        reason = f"{drift_share:.0%} of columns drifted (threshold {share:.0%}): {shown}"
        return TriggerResult(DATA_DRIFT, True, reason, statistics=stats)
    detail = f": {shown}" if drifted_columns else ""
    return TriggerResult(
        DATA_DRIFT,
        False,
        f"{drift_share:.0%} of columns drifted (threshold {share:.0%}){detail}",
        statistics=stats,
    )


def performance(
    metric: str,
    value: float | None,
    labelled: int,
    *,
    higher_is_better: bool,
    min_labelled: int,
    floor: float | None,
    champion_value: float | None,
    margin: float | None,
) -> TriggerResult:
    if value is None or labelled < min_labelled:
        return TriggerResult(
            PERFORMANCE, False, f"{labelled:,} labelled predictions; need {min_labelled:,}"
        )
    stats: dict[str, Any] = {"metric": metric, "value": value, "labelled": labelled}
    worse = (lambda a, b: a < b) if higher_is_better else (lambda a, b: a > b)
    reasons = []
    if floor is not None:
        stats["floor"] = floor
        if worse(value, floor):
            reasons.append(f"{metric} {value:.4f} is past the absolute limit {floor}")
    if champion_value is not None and margin is not None:
        limit = champion_value - margin if higher_is_better else champion_value + margin
        stats.update({"champion_test_value": champion_value, "margin": margin, "limit": limit})
        if worse(value, limit):
            reasons.append(
                f"{metric} {value:.4f} is {abs(value - champion_value):.4f} off the champion's test {champion_value:.4f} (margin {margin})"
            )
    if reasons:
        return TriggerResult(
            PERFORMANCE,
            True,
            "; ".join(reasons) + f" on {labelled:,} labelled predictions",
            statistics=stats,
        )
    return TriggerResult(
        PERFORMANCE,
        False,
        f"{metric} {value:.4f} on {labelled:,} labelled predictions",
        statistics=stats,
    )


@dataclass(frozen=True)
class PageHinkleyResult:
    alarm_at: int | None  # index of the first alarm in the stream
    statistic: float  # the largest PH value seen
    observations: int


def page_hinkley(
    errors: np.ndarray, delta: float = 0.05, threshold: float = 50.0, min_instances: int = 30
) -> PageHinkleyResult:
    """Page-Hinkley test for an increase in the mean of a stream (here: prediction errors).

    m_t = sum_{i<=t} (x_i - mean_i - delta);  PH_t = m_t - min_{s<=t} m_s;  alarm when
    PH_t > threshold after `min_instances` observations. mean_i is the running mean, so
    the test adapts to the error level the champion started with.
    """
    x = np.asarray(errors, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return PageHinkleyResult(None, 0.0, 0)
    running_mean = np.cumsum(x) / np.arange(1, len(x) + 1)
    m = np.cumsum(x - running_mean - delta)
    ph = m - np.minimum.accumulate(np.minimum(m, 0.0))
    ph[: min_instances - 1] = 0.0
    alarms = np.flatnonzero(ph > threshold)
    return PageHinkleyResult(int(alarms[0]) if len(alarms) else None, float(ph.max()), len(x))


def concept_drift(
    errors: np.ndarray, delta: float, threshold: float, since: str | None = None
) -> TriggerResult:
    """Page-Hinkley on `errors`: the champion's labelled predictions after `since` (the
    later of its data's end and the last run that ran to the end), so the test starts
    over after each run instead of alarming on the errors a refused retrain left behind."""
    result = page_hinkley(errors, delta, threshold)
    stats: dict[str, Any] = {
        "page_hinkley": result.statistic,
        "threshold": threshold,
        "observations": result.observations,
        "since": since,
    }
    after = f" since {since}" if since else ""
    if result.observations == 0:
        return TriggerResult(
            CONCEPT_DRIFT,
            False,
            f"no labelled predictions of the champion{after} yet",
            statistics=stats,
        )
    if result.alarm_at is not None:
        reason = (
            f"Page-Hinkley alarm after {result.alarm_at + 1:,} of {result.observations:,} labelled predictions{after} "
            f"(statistic {result.statistic:.1f} > {threshold:g})"
        )
        return TriggerResult(CONCEPT_DRIFT, True, reason, statistics=stats)
    reason = f"Page-Hinkley {result.statistic:.1f} <= {threshold:g} over {result.observations:,} labelled predictions{after}"
    return TriggerResult(CONCEPT_DRIFT, False, reason, statistics=stats)


def manual(requested: bool, note: str = "") -> TriggerResult:
    if requested:
        return TriggerResult(MANUAL, True, f"requested{': ' + note if note else ''}")
    return TriggerResult(MANUAL, False, "not requested")
