"""The rollout's memory: where a challenger is on its way to champion, and every step taken.

Under `<state_dir>/monitor/<model_name>/` (beside the monitor's own state):
    rollout.json            the current (or last) rollout: phase, versions, clocks
    rollout/<time>.json     one decision record per step the controller judged

A rollout moves `shadow -> canary -> promoted | rolled_back`. The phases `promoted` and
`rolled_back` are final: the next challenger starts a new rollout.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ctpipe import storage
from ctpipe.errors import DataError

SHADOW = "shadow"
CANARY = "canary"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
PHASES = (SHADOW, CANARY, PROMOTED, ROLLED_BACK)
FINAL = (PROMOTED, ROLLED_BACK)


@dataclass(frozen=True)
class Rollout:
    """One challenger's way to champion (or back)."""

    model: str
    champion: str  # the version serving when it began: what a rollback restores
    challenger: str
    phase: str
    started_at: str  # ISO 8601, the monitor's clock (data time in a replay)
    phase_since: str
    traffic_percent: int = 0  # the challenger's share of live traffic
    history: tuple[dict[str, Any], ...] = ()  # {phase, at, why} per transition
    # Counters of the live metrics when the canary began (see ctpipe.rollout.health).
    baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.phase in FINAL

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)

    @property
    def since(self) -> datetime:
        return datetime.fromisoformat(self.phase_since)

    def moved(
        self, phase: str, now: datetime, why: str, traffic_percent: int, **changes: Any
    ) -> Rollout:
        step = {"phase": phase, "at": now.isoformat(), "why": why}
        return dataclasses.replace(
            self,
            phase=phase,
            phase_since=now.isoformat(),
            traffic_percent=traffic_percent,
            history=(*self.history, step),
            **changes,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["history"] = tuple(raw.get("history", ()))
        if raw.get("phase") not in PHASES:
            raise ValueError(f"unknown phase {raw.get('phase')!r}")
        return cls(**raw)


class RolloutStore:
    def __init__(self, state_dir: str, model_name: str) -> None:
        self.root = storage.join(state_dir, "monitor", model_name)

    @property
    def uri(self) -> str:
        return storage.join(self.root, "rollout.json")

    @property
    def records(self) -> str:
        return storage.join(self.root, "rollout")

    def load(self) -> Rollout | None:
        if not storage.list_files(self.uri):
            return None
        try:
            return Rollout.from_json(storage.read_bytes(self.uri).decode())
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.uri}: unreadable rollout state ({exc})") from exc

    def save(self, rollout: Rollout) -> None:
        storage.write_bytes(self.uri, rollout.to_json().encode())

    def record(self, decision: dict[str, Any], now: datetime) -> str:
        return storage.write_record(self.records, decision, now)

    def history(self) -> list[dict[str, Any]]:
        """Every decision record, oldest first."""
        return [
            json.loads(storage.read_bytes(uri))
            for uri in storage.list_files(self.records, (".json",))
        ]
