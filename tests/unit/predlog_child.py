"""A predictor's prediction log writer under load, in a process of its own (not a test).

    python predlog_child.py ROOT JOURNAL_DIR MODE [ROWS]

Appends batches of 10 rows every 10 ms and prints `<rows acknowledged> <monotonic time>`
after each append returned: what the predictor had answered by then. MODE:

  ok      the sink works (a file every 2 s, so some rows are in the log and some only
          in the journal when the process is killed)
  hang    the sink never answers (an object store that hangs)
  enospc  the local sink's disk is full: every write fails after half its bytes; ROWS rows
          are appended, then the process waits for SIGTERM and closes the writer as the
          predictor does, printing the exit message on stderr
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from datetime import UTC, datetime

from ctpipe.errors import DataError
from ctpipe.predlog import PredictionBatch, PredictionLogWriter
from ctpipe.predlog import files as logfiles

MODEL = "child"


def full_disk(fd: int, data: bytes) -> None:
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def hang(uri: str, data: bytes) -> bool:
    time.sleep(3600)
    return False


def batch(first: int, rows: int = 10) -> PredictionBatch:
    ids = [f"r{n:07d}" for n in range(first, first + rows)]
    return PredictionBatch(
        ids, datetime.now(UTC), "1", [1] * rows, [0.5] * rows, {"x": [float(first)] * rows}
    )


def main() -> int:
    root, journal, mode = sys.argv[1:4]
    if mode == "hang":
        logfiles.write_new = hang
    if mode == "enospc":
        logfiles._write_all = full_disk
    writer = PredictionLogWriter(
        root, MODEL, journal_dir=journal, max_seconds={"ok": 2.0, "hang": 300.0}.get(mode, 0.5)
    )
    if mode == "enospc":
        rows = int(sys.argv[4])
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            for first in range(0, rows, 10):
                writer.append(batch(first, min(10, rows - first)))
            print(f"{rows} {time.monotonic()}", flush=True)
            time.sleep(3600)
        finally:
            try:
                writer.close()
            except DataError as exc:
                print(f"exit: {exc}", file=sys.stderr, flush=True)
                os._exit(1)
    acknowledged = 0
    while True:
        writer.append(batch(acknowledged))
        acknowledged += 10
        print(f"{acknowledged} {time.monotonic()}", flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
