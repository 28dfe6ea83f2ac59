"""From fired triggers to an action, with reasons: cooldown, new data, one run at a time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ctpipe.config import Policy, parse_duration
from ctpipe.monitor.triggers import MANUAL, TriggerResult

NONE = "none"  # nothing fired
SUBMIT = "submit"
SKIP = "skip"  # something fired, but the policy holds the run back
ACTIONS = (NONE, SUBMIT, SKIP)


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


def decide(
    triggers: list[TriggerResult],
    policy: Policy,
    *,
    now: datetime,
    new_rows: int,
    last_run_at: datetime | None,
    active_run: str | None,
) -> Decision:
    """Combine triggers with the policy.

    A manual request skips the cooldown and the new-rows minimum (someone asked on
    purpose), but never starts a second run beside one still active.
    """
    fired = tuple(t.name for t in triggers if t.fired)
    if not fired:
        return Decision(NONE, ("no trigger fired",), ())
    reasons = [f"fired: {t.name}: {t.reason}" for t in triggers if t.fired]
    if active_run:
        return Decision(
            SKIP, (*reasons, f"a run this monitor started is still active: {active_run}"), fired
        )
    if MANUAL not in fired:
        cooldown = parse_duration(policy.cooldown)
        if last_run_at is not None and (now - last_run_at).total_seconds() < cooldown:
            ago = (now - last_run_at).total_seconds() / 3600
            return Decision(
                SKIP,
                (
                    *reasons,
                    f"cooldown: the last run was {ago:.1f}h ago, cooldown is {policy.cooldown}",
                ),
                fired,
            )
        if new_rows < policy.min_new_rows:
            return Decision(
                SKIP,
                (
                    *reasons,
                    f"only {new_rows:,} new labelled rows since the champion's data; "
                    f"policy.min_new_rows is {policy.min_new_rows:,}",
                ),
                fired,
            )
    return Decision(SUBMIT, (*reasons, f"submitting a run: {'+'.join(fired)}"), fired)
