"""Progress lines from inside a pipeline step, and clean failures.

A step prints `[ctpipe:<step>] message` lines: readable in a pod's log, and what
`ctpipe run` picks out of kfp.local's output to show progress. A CtpipeError ends the
step with its message and a non-zero exit, instead of a traceback.
"""

from __future__ import annotations

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

    def say(message: str) -> None:
        for text in message.splitlines() or [""]:
            print(line(name, text), flush=True)

    try:
        yield say
    except CtpipeError as exc:
        for text in str(exc).splitlines():
            print(line(name, f"{ERROR} {text}"), flush=True)
        sys.exit(exc.exit_code)
