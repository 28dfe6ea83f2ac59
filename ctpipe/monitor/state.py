"""What the monitor remembers between runs, and how two monitors agree on one submission.

Under `<state_dir>/monitor/<model_name>/`:
    state.json              generation, the last submitted run, when, how it ended, and
                            failed runs in a row (the policy backs off and then blocks)
    claims/g000042.json     written with create-if-absent before submitting generation 42
    decisions/<time>.json   one record per monitor run

Submitting is claim-then-submit. Creating a claim file is atomic on a local disk (O_EXCL)
and on S3 (a conditional put with If-None-Match), so of two monitors racing for the same
generation exactly one wins and submits; the other records a skip. A claim whose holder
died before recording its run is taken over after `policy.claim_ttl`. A holder whose
submission failed releases its claim at once, with the error in it: the next monitor
claims the next generation instead of waiting out the time-to-live.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ctpipe import storage
from ctpipe.errors import DataError

SUCCEEDED = "succeeded"  # ran to the end: the gate blessed or refused the challenger
FAILED = "failed"  # the run failed (or was canceled): nothing was learned from it


@dataclass(frozen=True)
class LastRun:
    run_id: str
    run_name: str
    backend: str
    reason: str
    submitted_at: str  # ISO 8601
    generation: int
    outcome: str | None = None  # SUCCEEDED | FAILED; None while unknown (a KFP run)
    error: str | None = None  # why it failed

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.submitted_at)

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    @property
    def succeeded(self) -> bool:
        return self.outcome == SUCCEEDED

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LastRun:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class State:
    generation: int = 0
    last_run: LastRun | None = None
    drift_since: str | None = (
        None  # ISO 8601: start of the first window that showed the current drift
    )
    failures: int = 0  # runs failed in a row; a run that ran to the end resets it
    last_error: str | None = None  # the error of the latest failed run
    last_failure_at: str | None = None  # ISO 8601: when the monitor learned of that failure
    # ISO 8601: submission time of the latest run that ran to the end (blessed or refused);
    # sequential detectors (Page-Hinkley) start over from here.
    last_success_at: str | None = None

    @property
    def failed_at(self) -> datetime | None:
        return datetime.fromisoformat(self.last_failure_at) if self.last_failure_at else None

    @property
    def succeeded_at(self) -> datetime | None:
        """When the latest run that ran to the end was submitted. State files written
        before outcomes were recorded count their last run: a failed local run was never
        recorded then, and a KFP run's outcome is learned on the next visit."""
        if self.last_success_at:
            return datetime.fromisoformat(self.last_success_at)
        if self.last_run is not None and self.last_run.outcome is None and not self.failures:
            return self.last_run.at
        return None

    def with_outcome(self, outcome: str, error: str | None, now: datetime) -> State:
        """This state once the last run's outcome is known (recorded at most once)."""
        if self.last_run is None or self.last_run.outcome is not None:
            return self
        run = dataclasses.replace(self.last_run, outcome=outcome, error=error)
        if outcome == FAILED:
            return dataclasses.replace(
                self,
                last_run=run,
                failures=self.failures + 1,
                last_error=error,
                last_failure_at=now.isoformat(),
            )
        return dataclasses.replace(self, last_run=run, failures=0, last_success_at=run.submitted_at)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        """Reads every state.json written so far: fields added later have defaults."""
        raw = json.loads(text)
        last = raw.get("last_run")
        return cls(
            int(raw.get("generation", 0)),
            LastRun.from_dict(last) if last else None,
            raw.get("drift_since"),
            int(raw.get("failures", 0)),
            raw.get("last_error"),
            raw.get("last_failure_at"),
            raw.get("last_success_at"),
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
            if age < ttl_seconds and not held.get("released_at"):
                return None
            # Released (its submission failed) or abandoned (its holder never recorded a
            # run): the next generation is free, and creating it is as atomic as ever.
            generation += 1
        return None

    def release(self, generation: int, now: datetime, error: str) -> str:
        """Give up a claim whose submission failed, keeping why in the claim file."""
        uri = self.claim_uri(generation)
        held = json.loads(storage.read_bytes(uri).decode())
        released = {**held, "released_at": now.isoformat(), "error": error}
        storage.write_bytes(uri, json.dumps(released).encode())
        return uri

    def record(self, decision: dict[str, Any], now: datetime) -> str:
        """Write one decision record, named after `now`. A visit judged as of the same time
        (a rerun with the same --now, after an error) gets the next free name: an earlier
        record is never overwritten."""
        return storage.write_record(storage.join(self.root, "decisions"), decision, now)


def utcnow() -> datetime:
    return datetime.now(UTC)
