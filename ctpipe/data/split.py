"""Time-aware split: train on the past, validate on the recent past, test on the newest rows.

Cuts fall between distinct timestamps, so rows that share a timestamp always land in the
same slice and nothing from the test period leaks into training.

The test slice is always the newest `split.test_fraction` of the labelled rows. The
training window (`train.window`, see ctpipe.training.windows) picks which rows before it
the challenger learns from: validation is the newest part of that window, train the rest.
The same window, ending at the newest labelled row, is what a final refit learns from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe.config import Config
from ctpipe.errors import DataError

if TYPE_CHECKING:
    from ctpipe.training.windows import WindowSpec

SLICES = ("train", "validation", "test")
WINDOW = "window"  # the rows a final refit learns from: the window over every labelled row


@dataclass(frozen=True)
class SliceInfo:
    name: str
    rows: int
    start: str | None
    end: str | None


@dataclass(frozen=True)
class SplitResult:
    slices: tuple[SliceInfo, ...]
    dropped_unlabelled: int
    window: str = "expanding"  # train.window as applied (auto: the backtest's choice)
    learn: SliceInfo | None = None  # the final refit's rows
    left_out: int = 0  # labelled rows before the window, in no slice
    backtest: str = ""  # how an auto window was chosen (one line)
    final_window: str = ""  # the final refit's window, when it differs

    def slice(self, name: str) -> SliceInfo:
        return next(s for s in self.slices if s.name == name)

    def describe(self) -> str:
        parts = ", ".join(f"{s.name} {s.rows:,}" for s in self.slices)
        test = self.slice("test")
        dropped = (
            f"; {self.dropped_unlabelled:,} unlabelled rows left out"
            if self.dropped_unlabelled
            else ""
        )
        window = f"; window {self.window}"
        if self.final_window and self.final_window != self.window:
            window += f" (final refit: {self.final_window})"
        if self.left_out:
            window += f" ({self.left_out:,} older labelled rows left out)"
        chosen = f"; {self.backtest}" if self.backtest else ""
        return f"split {parts} (test from {test.start}){window}{dropped}{chosen}"

    def metadata(self, name: str) -> dict[str, Any]:
        s = self.learn if name == WINDOW and self.learn else self.slice(name)
        return {"slice": name, "rows": s.rows, "start": s.start, "end": s.end}


def labelled_in_order(table: pa.Table, config: Config) -> tuple[pa.Table, int]:
    """The labelled rows sorted by time, and how many unlabelled rows were left out."""
    labelled = table.filter(pc.is_valid(table.column(config.target)))
    if pa.types.is_floating(labelled.column(config.target).type):
        labelled = labelled.filter(pc.invert(pc.is_nan(labelled.column(config.target))))
    return labelled.sort_by([(config.timestamp, "ascending")]), table.num_rows - labelled.num_rows


def times_of(ordered: pa.Table, config: Config) -> np.ndarray:
    """Timestamps as int64 microseconds (the cut points work on these)."""
    return np.asarray(ordered.column(config.timestamp).cast(pa.int64()).to_numpy())


def first_test_row(times: np.ndarray, config: Config) -> int:
    """First row of the test slice: the newest split.test_fraction of the rows."""
    n = len(times)
    return cut(times, n - round(n * config.split.test_fraction))


def split(
    table: pa.Table,
    config: Config,
    window: WindowSpec | None = None,
    final_window: WindowSpec | None = None,
) -> tuple[dict[str, pa.Table], SplitResult]:
    """Sort by time and cut into train / validation / test slices, plus the final refit's
    rows under WINDOW. `window`: train.window resolved (an auto window is the backtest's
    choice); default: config.train.window, which must not be auto then. `final_window`:
    the final refit's window, ending at the newest row (default: `window`)."""
    from ctpipe import options
    from ctpipe.training import windows

    spec = window or options.parse_window(config.train.window)
    final = final_window or spec
    ordered, dropped = labelled_in_order(table, config)
    times = times_of(ordered, config)
    n = len(times)
    test_cut = first_test_row(times, config)
    first = windows.start(times, test_cut, spec)
    # Validation is its fraction of the rows from the window's start on (with an expanding
    # window: of every labelled row, as it always was).
    validation_cut = max(
        first, cut(times, test_cut - round((n - first) * config.split.validation_fraction))
    )
    bounds = {
        "train": (first, validation_cut),
        "validation": (validation_cut, test_cut),
        "test": (test_cut, n),
        WINDOW: (windows.start(times, n, final), n),
    }
    slices = {name: ordered.slice(lo, hi - lo) for name, (lo, hi) in bounds.items()}
    infos = tuple(_info(name, slices[name], config.timestamp) for name in SLICES)
    short = [s for s in infos if s.rows < config.split.min_rows]
    if short:
        detail = ", ".join(f"{s.name} has {s.rows}" for s in short)
        raise DataError(
            f"not enough labelled rows to split {n:,} rows in time order: {detail}; each slice needs at least "
            f"split.min_rows={config.split.min_rows} (more data, or other split fractions"
            + (f", or a longer train.window than {spec}" if first else "")
            + ")"
        )
    if config.task == "classification":
        classes = pc.unique(slices["train"].column(config.target)).drop_null()
        if len(classes) < 2:
            raise DataError(
                f"column {config.target!r}: the training slice holds only one class ({classes.to_pylist()}); "
                "a classifier needs at least two"
            )
    learn = _info(WINDOW, slices[WINDOW], config.timestamp)
    return slices, SplitResult(infos, dropped, str(spec), learn, first, final_window=str(final))


def cut(times: np.ndarray, index: int) -> int:
    """Move a cut back to the first row of its timestamp, so equal times stay together."""
    index = min(max(index, 0), len(times))
    if index == len(times) or index == 0:
        return index
    return int(np.searchsorted(times, times[index], side="left"))


def _info(name: str, part: pa.Table, timestamp: str) -> SliceInfo:
    if part.num_rows == 0:
        return SliceInfo(name, 0, None, None)
    times = part.column(timestamp)
    return SliceInfo(
        name, part.num_rows, pc.min(times).as_py().isoformat(), pc.max(times).as_py().isoformat()
    )
