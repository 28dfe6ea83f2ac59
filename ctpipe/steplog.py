"""Progress lines from inside a pipeline step, and clean failures.

A step prints `[ctpipe:<step>] message` lines: readable in a pod's log, and what
`ctpipe run` picks out of kfp.local's output to show progress. A CtpipeError ends the
step with its message and a non-zero exit, instead of a traceback.
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ctpipe.errors import CtpipeError

MARK = "ctpipe"
ERROR = "ERROR"


def line(step: str, message: str) -> str:
    return f"[{MARK}:{step}] {message}"


@contextmanager
def step(name: str) -> Iterator[Callable[[str], None]]:
    """Run a step body; yields a function that prints one progress line."""

    skip_final_collection()

    def say(message: str) -> None:
        for text in message.splitlines() or [""]:
            print(line(name, text), flush=True)

    try:
        yield say
    except CtpipeError as exc:
        for text in str(exc).splitlines():
            print(line(name, f"{ERROR} {text}"), flush=True)
        sys.exit(exc.exit_code)


@functools.cache  # once per process
def skip_final_collection() -> None:
    """At exit, freeze the garbage collector's objects instead of collecting them.

    A step is a process of its own. The interpreter's last collection walks every object
    the step's libraries made: ~1 s after MLflow and SQLAlchemy, ~0.3 s after
    scikit-learn, paid again by every step. Freezing skips that walk only; atexit
    handlers (logging's flush among them) still run, and the steps close their files
    themselves.
    """
    atexit.register(gc.freeze)
