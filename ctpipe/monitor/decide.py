"""From fired triggers to an action, with reasons: cooldown, new data, one run at a time,
back off after failed runs, and stop (blocked) after too many of them.

    blocked   a reason to submit nothing at all (too many failed runs in a row, or any
              other block the runner passes in); a manual request still submits
    none      nothing fired
    skip      something fired, but an active run, the cooldown (or, after a failed run,
              the retry backoff) or too few new rows hold the run back
    submit

A monitor run that cannot judge (bad input, a service down) records `error` instead,
with the message; nothing is submitted then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ctpipe.config import RetrainPolicy, parse_duration
from ctpipe.monitor.triggers import MANUAL, TriggerResult

NONE = "none"  # nothing fired
SUBMIT = "submit"
SKIP = "skip"  # something fired, but the policy holds the run back
BLOCKED = "blocked"  # the monitor submits nothing until someone acts (or asks: --manual)
ACTIONS = (NONE, SUBMIT, SKIP, BLOCKED)
# Not a decision `decide` returns: the record of a monitor run that stopped on an error.
ERROR = "error"
BLOCKED_PREFIX = "blocked: "


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: tuple[str, ...]
    fired: tuple[str, ...]

    @property
    def run_reason(self) -> str:
        """What a submitted run is named after: the triggers that fired."""
        return "+".join(self.fired) or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def blocked_by(self) -> tuple[str, ...]:
        """The reasons that block submissions (also on a manual submit that overrode them)."""
        return tuple(r for r in self.reasons if r.startswith(BLOCKED_PREFIX))


@dataclass(frozen=True)
class Failures:
    """Failed runs in a row, as the monitor's state remembers them."""

    count: int = 0
    last_error: str | None = None
    last_at: datetime | None = None  # when the latest failure was recorded


def retry_backoff_seconds(policy: RetrainPolicy, failures: int) -> float:
    """How long to wait after the `failures`-th failed run in a row: retry_backoff,
    doubling per failure, capped at max_retry_backoff. 0 without failures."""
    if failures < 1:
        return 0.0
    base = parse_duration(policy.retry_backoff)
    cap = parse_duration(policy.max_retry_backoff)
    return float(min(cap, base * 2 ** min(failures - 1, 62)))


def failure_block(policy: RetrainPolicy, failures: Failures) -> str | None:
    """The block reason once `policy.max_failed_runs` runs failed in a row, else None."""
    if failures.count < policy.max_failed_runs:
        return None
    return (
        f"{BLOCKED_PREFIX}{failures.count} runs failed in a row, last error: "
        f"{failures.last_error or 'unknown'} (policy.max_failed_runs is {policy.max_failed_runs}; "
        "fix the cause, then run `ctpipe monitor --manual`: a run that ends resets the count)"
    )


def decide(
    triggers: list[TriggerResult],
    policy: RetrainPolicy,
    *,
    now: datetime,
    new_rows: int,
    last_run_at: datetime | None,
    active_run: str | None,
    failures: Failures | None = None,
    blocks: tuple[str, ...] = (),
    rollout: str | None = None,
) -> Decision:
    """Combine triggers with the policy.

    `blocks` are reasons, each starting with "blocked: ", to submit nothing (the runner
    may add its own); too many failed runs in a row add one more. While blocked the
    decision is BLOCKED whether or not anything fired, so the state shows on every visit.
    After a failed run the retry backoff takes the cooldown's place: the failed run
    trained nothing, so there is nothing to cool down from.

    A manual request skips blocks, the cooldown, the backoff and the new-rows minimum
    (someone asked on purpose), but never starts a second run beside one still active.
    """
    failures = failures or Failures()
    blocked = list(blocks)
    failed = failure_block(policy, failures)
    if failed:
        blocked.append(failed)
    fired = tuple(t.name for t in triggers if t.fired)
    reasons = [f"fired: {t.name}: {t.reason}" for t in triggers if t.fired]
    manual = MANUAL in fired
    if blocked and not manual:
        return Decision(BLOCKED, (*reasons, *blocked) if fired else (*blocked,), fired)
    if not fired:
        return Decision(NONE, ("no trigger fired",), ())
    if blocked:
        reasons += [
            *blocked,
            "manual request: submitting despite the block (someone asked on purpose)",
        ]
    if active_run:
        return Decision(
            SKIP, (*reasons, f"a run this monitor started is still active: {active_run}"), fired
        )
    if rollout and not manual:
        return Decision(
            SKIP,
            (*reasons, f"a challenger is being rolled out: {rollout}; its verdict first"),
            fired,
        )
    if not manual:
        held = _held_back(
            policy, now=now, new_rows=new_rows, last_run_at=last_run_at, failures=failures
        )
        if held:
            return Decision(SKIP, (*reasons, held), fired)
    return Decision(SUBMIT, (*reasons, f"submitting a run: {'+'.join(fired)}"), fired)


def _held_back(
    policy: RetrainPolicy,
    *,
    now: datetime,
    new_rows: int,
    last_run_at: datetime | None,
    failures: Failures,
) -> str | None:
    """Why an automatic run waits: the backoff after failed runs (in the cooldown's
    place), or the cooldown, or too few new labelled rows. None: it may go."""
    if failures.count and failures.last_at is not None:
        wait = retry_backoff_seconds(policy, failures.count)
        waited = (now - failures.last_at).total_seconds()
        if waited < wait:
            return (
                f"backoff: {failures.count} run(s) failed in a row, the last one "
                f"{waited / 3600:.1f}h ago; retrying {wait / 3600:g}h after it "
                f"(policy.retry_backoff {policy.retry_backoff}, doubling per failure, at most "
                f"{policy.max_retry_backoff}); last error: {failures.last_error or 'unknown'}"
            )
    elif last_run_at is not None:
        cooldown = parse_duration(policy.cooldown)
        if (now - last_run_at).total_seconds() < cooldown:
            ago = (now - last_run_at).total_seconds() / 3600
            return f"cooldown: the last run was {ago:.1f}h ago, cooldown is {policy.cooldown}"
    if new_rows < policy.min_new_rows:
        return (
            f"only {new_rows:,} new labelled rows since the champion's data; "
            f"policy.min_new_rows is {policy.min_new_rows:,}"
        )
    return None
