"""What the monitor remembers between runs, and how two monitors agree on one submission.

Under `<state_dir>/monitor/<model_name>/`:
    state.json              generation, the last submitted run, when
    claims/g000042.json     written with create-if-absent before submitting generation 42
    decisions/<time>.json   one record per monitor run

Submitting is claim-then-submit. Creating a claim file is atomic on a local disk (O_EXCL)
and on S3 (a conditional put with If-None-Match), so of two monitors racing for the same
generation exactly one wins and submits; the other records a skip. A claim whose holder
died before recording its run is taken over after `policy.claim_ttl`.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ctpipe import storage
from ctpipe.errors import DataError


@dataclass(frozen=True)
class LastRun:
    run_id: str
    run_name: str
    backend: str
    reason: str
    submitted_at: str  # ISO 8601
    generation: int

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.submitted_at)


@dataclass(frozen=True)
class State:
    generation: int = 0
    last_run: LastRun | None = None
    drift_since: str | None = (
        None  # ISO 8601: start of the first window that showed the current drift
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        raw = json.loads(text)
        last = raw.get("last_run")
        return cls(
            int(raw.get("generation", 0)), LastRun(**last) if last else None, raw.get("drift_since")
        )


class MonitorStore:
    def __init__(self, state_dir: str, model_name: str) -> None:
        self.root = storage.join(state_dir, "monitor", model_name)

    @property
    def state_uri(self) -> str:
        return storage.join(self.root, "state.json")

    def claim_uri(self, generation: int) -> str:
        return storage.join(self.root, "claims", f"g{generation:06d}.json")

    def load(self) -> State:
        if not storage.list_files(self.state_uri):
            return State()
        try:
            return State.from_json(storage.read_bytes(self.state_uri).decode())
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.state_uri}: unreadable monitor state ({exc})") from exc

    def save(self, state: State) -> None:
        storage.write_bytes(self.state_uri, state.to_json().encode())

    def claim(
        self, state: State, now: datetime, ttl_seconds: float, attempts: int = 5
    ) -> int | None:
        """Claim the next generation; None when another monitor holds a live claim."""
        generation = state.generation + 1
        for _ in range(attempts):
            body = json.dumps(
                {"claimed_at": now.isoformat(), "owner": f"{socket.gethostname()}:{os.getpid()}"}
            )
            if storage.write_bytes(self.claim_uri(generation), body.encode(), exclusive=True):
                return generation
            held = json.loads(storage.read_bytes(self.claim_uri(generation)).decode())
            age = (now - datetime.fromisoformat(held["claimed_at"])).total_seconds()
            if age < ttl_seconds:
                return None
            generation += 1  # an abandoned claim: its holder never recorded a run
        return None

    def record(self, decision: dict[str, Any], now: datetime) -> str:
        uri = storage.join(self.root, "decisions", now.strftime("%Y%m%dT%H%M%S%fZ") + ".json")
        storage.write_bytes(uri, json.dumps(decision, indent=2, default=str).encode())
        return uri


def utcnow() -> datetime:
    return datetime.now(UTC)
