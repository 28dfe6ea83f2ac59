"""What the monitor needs of whoever runs the pipeline: the `Submitter` protocol and its records.

The submitters themselves (kfp.local here, a Kubeflow Pipelines API server in a cluster)
live with the wiring, in ctpipe.pipelines.submit: the core never imports the pipeline. The
entry points (the CLI) hand one to the monitor.

A submitter also tells how a run it submitted ended (`outcome`), so that the monitor can
count failed runs, back off and stop: a local run ends inside `submit` and its RunRef
says so; a KFP run is asked about on the monitor's next visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ctpipe.config import Config
from ctpipe.errors import CtpipeError

ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "PAUSED", "CANCELING", "RUNTIME_STATE_UNSPECIFIED"}
)
# A canceled run counts as failed: it trained nothing, and someone stopped it for a reason.
FAILED_STATES = frozenset({"FAILED", "CANCELED"})
SUCCEEDED_STATES = frozenset({"SUCCEEDED", "SKIPPED"})
UNKNOWN = "UNKNOWN"  # a run this submitter cannot see (a local run of another process)


class SubmitError(CtpipeError):
    """The pipeline run could not be submitted."""


@dataclass(frozen=True)
class RunRef:
    run_id: str
    run_name: str
    backend: str
    url: str | None = None
    blessed: bool | None = None  # known at once for local runs
    champion_version: str | None = None
    failed: bool = False  # the run ran and failed (known at once for local runs)
    error: str | None = None  # why, when failed

    @property
    def finished(self) -> bool:
        """The run ended inside submit(): its outcome is known now."""
        return self.failed or self.blessed is not None


@dataclass(frozen=True)
class RunOutcome:
    """How a submitted run stands: the backend's state, upper case, and its error."""

    run_id: str
    state: str  # SUCCEEDED, FAILED, CANCELED, SKIPPED, RUNNING, ... or UNKNOWN
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def succeeded(self) -> bool:
        """Ran to the end; whether the gate blessed the challenger is another matter."""
        return self.state in SUCCEEDED_STATES


class Submitter(Protocol):
    backend: str

    def submit(self, config: Config, reason: str, run_name: str) -> RunRef:
        """Start a run. A run that cannot be submitted raises SubmitError; a run that
        ran and failed inside this call is returned with `failed=True`."""
        ...

    def outcome(self, run_id: str) -> RunOutcome: ...

    def is_active(self, run_id: str) -> bool: ...


def short_error(text: str | None, limit: int = 160) -> str:
    """The first non-empty line of an error, cut to `limit` characters."""
    line = next((s.strip() for s in (text or "").splitlines() if s.strip()), "")
    if not line:
        return "no error message"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
