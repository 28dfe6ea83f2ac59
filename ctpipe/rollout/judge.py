"""The rollout's rules: from live evidence to wait, advance, promote or roll back.

Pure: the controller reads the evidence and acts on the verdict.

    harm first     the interval of (challenger - champion) lies below 0, or the canary's
                   error rate or p95 latency breaks its limit: roll back
    clears         the interval's lower end stays above -margin (the gate's test of
                   "not worse beyond the margin"): shadow -> canary, canary -> promoted
    otherwise      wait for more labelled traffic, up to deploy.rollout.timeout
A canary is never promoted on labels alone: its error rate and latency must have been
measured on enough requests (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctpipe.config import Config, parse_duration
from ctpipe.rollout.evidence import LiveComparison
from ctpipe.rollout.health import Health
from ctpipe.rollout.state import CANARY, PROMOTED, ROLLED_BACK, SHADOW, Rollout

WAIT = "wait"


@dataclass(frozen=True)
class Verdict:
    action: str  # WAIT, CANARY (advance), PROMOTED or ROLLED_BACK
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons)}


def canary_percent(config: Config) -> int:
    """The canary's share; 0 or 100 means no canary phase."""
    percent = config.deploy.canary_traffic_percent
    return percent if 0 < percent < 100 else 0


def first_phase(config: Config) -> str:
    if config.deploy.rollout.shadow or not canary_percent(config):
        return SHADOW
    return CANARY


def judge(
    config: Config,
    rollout: Rollout,
    comparison: LiveComparison,
    health: dict[str, Health] | None,
    now: datetime,
) -> Verdict:
    settings = config.deploy.rollout
    margin = config.gate.margin if settings.margin is None else settings.margin
    reasons = [comparison.describe()]
    guard = _guardrails(config, rollout, health) if rollout.phase == CANARY else None
    if guard is not None:
        reasons.extend(guard.reasons)
        if guard.action == ROLLED_BACK:
            return Verdict(ROLLED_BACK, tuple(reasons))
    if comparison.judged:
        assert comparison.low is not None and comparison.high is not None
        if comparison.high < 0:
            reasons.append(
                f"harm: the whole interval is below 0 (high {comparison.high:+.4f}): the "
                "challenger is worse than the champion on live traffic"
            )
            return Verdict(ROLLED_BACK, tuple(reasons))
        if comparison.low >= -margin:
            reasons.append(
                f"clears the margin: low {comparison.low:+.4f} >= -margin {-margin:+.4f}"
            )
            if rollout.phase == SHADOW and canary_percent(config):
                return Verdict(CANARY, tuple(reasons))
            if guard is None or guard.action != WAIT:
                return Verdict(PROMOTED, tuple(reasons))
        else:
            reasons.append(
                f"not yet: low {comparison.low:+.4f} < -margin {-margin:+.4f}, high "
                f"{comparison.high:+.4f} >= 0"
            )
    else:
        reasons.append(f"waiting for {settings.min_labelled} labelled rows per side")
    timeout = parse_duration(settings.timeout)
    waited = (now - rollout.started).total_seconds()
    if waited >= timeout:
        reasons.append(
            f"timeout: no verdict {settings.timeout} after the rollout began; the champion stays"
        )
        return Verdict(ROLLED_BACK, tuple(reasons))
    return Verdict(WAIT, tuple(reasons))


def _guardrails(config: Config, rollout: Rollout, health: dict[str, Health] | None) -> Verdict:
    """ROLLED_BACK on a broken limit, WAIT while not measured, PROMOTED (allowed) when
    measured and within limits."""
    settings = config.deploy.rollout
    if health is None:
        return Verdict(
            WAIT,
            (
                "guardrails not measured: no live metrics source (set deploy.rollout.prometheus "
                "in a cluster, or give the monitor --predictor-metrics)",
            ),
        )
    canary = health.get(rollout.challenger)
    if canary is None or canary.requests < settings.min_requests:
        seen = canary.requests if canary else 0
        return Verdict(
            WAIT, (f"guardrails: {seen} canary requests of {settings.min_requests} needed",)
        )
    if canary.error_rate > settings.max_error_rate:
        return Verdict(
            ROLLED_BACK,
            (
                f"error rate: the canary failed {canary.errors} of {canary.requests} requests "
                f"({canary.error_rate:.1%} > {settings.max_error_rate:.1%})",
            ),
        )
    champion = health.get(rollout.champion)
    if canary.p95_seconds is not None and champion is not None and champion.p95_seconds:
        ratio = canary.p95_seconds / champion.p95_seconds
        if ratio > settings.max_latency_ratio:
            return Verdict(
                ROLLED_BACK,
                (
                    f"latency: canary p95 {canary.p95_seconds * 1000:.1f} ms is {ratio:.2f}x the "
                    f"champion's {champion.p95_seconds * 1000:.1f} ms (limit {settings.max_latency_ratio}x)",
                ),
            )
    return Verdict(
        PROMOTED,
        (
            f"guardrails hold: canary error rate {canary.error_rate:.1%} on {canary.requests} requests"
            + (
                f", p95 {canary.p95_seconds * 1000:.1f} ms"
                if canary.p95_seconds is not None
                else ""
            ),
        ),
    )
