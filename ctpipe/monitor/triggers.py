"""The retraining triggers, each a pure function of what the monitor measured.

schedule       the champion is older than a maximum age
data_drift     the drift engine's dataset verdict on the current window
performance    a metric on recently labelled predictions fell below a floor, or below
               the champion's own test metric by a margin with a bootstrap interval that
               excludes the champion's test value (confidently worse)
concept_drift  Page-Hinkley on the champion's per-prediction error stream, from its
               data's end or the last run that ran to the end, whichever is later
manual         someone asked

Weighting (`weigh`): when labels arrive in time (enough labelled predictions of the
champion, the newest within `label_horizon` of now), performance knows more than data
drift does: data drift alone (performance holding) triggers a run only when at least
`large_drift_share` of the columns drifted. Otherwise it is outranked: not fired, with
`outranked: true` in its statistics and the reason in the decision record. When labels are
late or too few (or `label_horizon` is null), data drift triggers on its own, as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ctpipe.config import parse_duration

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


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of a metric on the labelled window."""

    low: float
    high: float
    confidence: float
    resamples: int


def describe_metric(metric: str, value: float, interval: Interval | None) -> str:
    """'roc_auc 0.8400 [0.8200, 0.8600]' (the interval when there is one)."""
    if interval is None:
        return f"{metric} {value:.4f}"
    return f"{metric} {value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


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
    interval: Interval | None = None,
) -> TriggerResult:
    """The floor is point-based. The champion-relative rule fires when the whole interval
    lies past `champion_value -/+ margin`: confidently worse by more than the margin, not
    merely worse. A metric such as ROC AUC moves with the mix of cases even under a fixed
    labelling rule (seasons), and a window of a few hundred labels is noisy; only a drop
    beyond both is evidence the champion has aged. Without an interval it is point-based."""
    if value is None or labelled < min_labelled:
        return TriggerResult(
            PERFORMANCE, False, f"{labelled:,} labelled predictions; need {min_labelled:,}"
        )
    stats: dict[str, Any] = {
        "metric": metric,
        "value": value,
        "low": interval.low if interval else None,
        "high": interval.high if interval else None,
        "confidence": interval.confidence if interval else None,
        "resamples": interval.resamples if interval else None,
        "labelled": labelled,
    }
    worse = (lambda a, b: a < b) if higher_is_better else (lambda a, b: a > b)
    shown = describe_metric(metric, value, interval)
    if interval is not None:
        shown += f" ({interval.confidence:.0%} CI)"
    reasons, notes = [], []
    if floor is not None:
        stats["floor"] = floor
        if worse(value, floor):
            reasons.append(f"{metric} {value:.4f} is past the absolute limit {floor}")
    if champion_value is not None and margin is not None:
        limit = champion_value - margin if higher_is_better else champion_value + margin
        past = bool(worse(value, limit))
        # The interval's better end must be past the limit too.
        better_end = (
            None if interval is None else (interval.high if higher_is_better else interval.low)
        )
        confident = past and (better_end is None or bool(worse(better_end, limit)))
        stats.update(
            {
                "champion_test_value": champion_value,
                "margin": margin,
                "limit": limit,
                "past_margin": past,
                "confidently_worse": confident,
            }
        )
        off_by = abs(value - champion_value)
        if confident:
            reasons.append(
                f"{shown} is {off_by:.4f} off the champion's test {champion_value:.4f} (margin {margin})"
                + ("" if interval is None else f", and the whole interval is past {limit:.4f}")
            )
        elif past:
            notes.append(
                f"{off_by:.4f} off the champion's test {champion_value:.4f} (past the margin "
                f"{margin}), but the interval reaches {better_end:.4f}: not confidently past "
                f"{limit:.4f}"
            )
    if reasons:
        return TriggerResult(
            PERFORMANCE,
            True,
            "; ".join(reasons) + f" on {labelled:,} labelled predictions",
            statistics=stats,
        )
    versus = f" vs champion test {champion_value:.4f}" if champion_value is not None else ""
    return TriggerResult(
        PERFORMANCE,
        False,
        "; ".join([f"{shown}{versus} on {labelled:,} labelled predictions", *notes]),
        statistics=stats,
    )


@dataclass(frozen=True)
class LabelTimeliness:
    """Whether the champion's labels arrive in time for performance to be the judge."""

    in_time: bool
    reason: str
    labelled: int
    min_labelled: int
    newest_label_at: str | None  # the newest labelled prediction (its prediction time)
    label_age_seconds: float | None
    label_horizon: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_timeliness(
    newest_labelled_at: datetime | None,
    now: datetime,
    labelled: int,
    *,
    min_labelled: int,
    horizon: str | None,
    measured: bool = True,
) -> LabelTimeliness:
    """Labels are in time when there are at least `min_labelled` labelled predictions of
    the champion (in the window performance judges, `measured`: the metric could be
    computed) and the newest is within `horizon` of `now`. A null horizon: never."""
    newest = newest_labelled_at.isoformat() if newest_labelled_at else None
    age = (now - newest_labelled_at).total_seconds() if newest_labelled_at else None

    def result(in_time: bool, reason: str) -> LabelTimeliness:
        return LabelTimeliness(in_time, reason, labelled, min_labelled, newest, age, horizon)

    if horizon is None:
        return result(False, "label_horizon is null: labels never outrank data drift")
    if newest_labelled_at is None or age is None:
        return result(False, "labels are late: no labelled predictions of the champion yet")
    old = f"the newest labelled prediction is {_days(age)} old (label_horizon {horizon})"
    if age > parse_duration(horizon):
        return result(False, f"labels are late: {old}")
    if labelled < min_labelled:
        return result(False, f"labels are too few: {labelled:,} labelled; need {min_labelled:,}")
    if not measured:
        return result(False, "labels are too few: the metric cannot be computed on them")
    return result(True, f"labels are in time: {old}, {labelled:,} labelled")


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def weigh(
    data: TriggerResult,
    performance_result: TriggerResult,
    labels: LabelTimeliness,
    *,
    large_share: float,
    performance_judged: bool = True,
) -> tuple[TriggerResult, dict[str, Any]]:
    """Data drift weighed against performance: (the data_drift result, possibly
    outranked, and the weighting explanation for the decision record).

    `performance_judged`: the performance trigger has a rule (a floor, or a margin and the
    champion's test value); a performance trigger with none cannot outrank anything."""
    share = data.statistics.get("drift_share")
    in_time = labels.in_time and performance_judged
    weighting: dict[str, Any] = {
        "labels_in_time": labels.in_time,
        "labels": labels.reason,
        "newest_label_at": labels.newest_label_at,
        "label_age_seconds": labels.label_age_seconds,
        "label_horizon": labels.label_horizon,
        "labelled": labels.labelled,
        "min_labelled": labels.min_labelled,
        "drift_share": share,
        "large_drift_share": large_share,
        "outranked": False,
        "outranked_by": None,
        "decided_by": None,
    }
    if not performance_judged:
        weighting["labels"] = (
            "performance has no floor and no margin (with a champion test value): it judges nothing"
        )
    if not data.enabled or not data.fired:
        weighting["explanation"] = (
            "data drift did not fire: nothing to weigh"
            if data.enabled
            else "data drift is switched off: nothing to weigh"
        )
        if performance_result.fired:
            weighting["decided_by"] = PERFORMANCE
        return data, weighting
    held = _holding(performance_result)
    stats = {**data.statistics, "labels_in_time": labels.in_time, "outranked": False}
    if performance_result.fired:
        weighting["decided_by"] = PERFORMANCE
        weighting["explanation"] = (
            "performance fired and outranks data drift, which agrees: both stand"
        )
        return _with(data, stats, data.reason), weighting
    if not in_time:
        weighting["decided_by"] = DATA_DRIFT
        why = weighting["labels"]
        weighting["explanation"] = f"{why}: data drift triggers on its own"
        return _with(
            data, stats, f"{data.reason}; {why}: data drift triggers on its own"
        ), weighting
    assert share is not None
    if share >= large_share:
        weighting["decided_by"] = DATA_DRIFT
        reason = (
            f"large drift: {share:.0%} of columns >= {large_share:.0%} triggers although labels "
            f"are in time and performance holds ({held})"
        )
        weighting["explanation"] = reason
        return _with(data, stats, f"{data.reason}; {reason}"), weighting
    reason = (
        f"data drift {share:.0%} of columns, but labels are in time and performance holds "
        f"({held}): drift alone triggers at >= {large_share:.0%}"
    )
    weighting.update(
        {
            "outranked": True,
            "outranked_by": PERFORMANCE,
            "decided_by": PERFORMANCE,
            "explanation": f"performance outranks data drift: {reason}",
        }
    )
    stats["outranked"] = True
    return TriggerResult(DATA_DRIFT, False, reason, statistics=stats), weighting


def _with(result: TriggerResult, stats: dict[str, Any], reason: str) -> TriggerResult:
    return TriggerResult(result.name, result.fired, reason, result.enabled, stats)


def _holding(result: TriggerResult) -> str:
    """'roc_auc 0.8400 [0.8200, 0.8600] vs champion test 0.8500' from its statistics."""
    stats = result.statistics
    if stats.get("value") is None:
        return result.reason
    low, high = stats.get("low"), stats.get("high")
    interval = (
        Interval(low, high, stats.get("confidence") or 0.0, stats.get("resamples") or 0)
        if low is not None and high is not None
        else None
    )
    text = describe_metric(stats["metric"], stats["value"], interval)
    if stats.get("champion_test_value") is not None:
        text += f" vs champion test {stats['champion_test_value']:.4f}"
    if stats.get("floor") is not None:
        text += f", floor {stats['floor']}"
    return text


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
