"""Time-aware split: train on the past, validate on the recent past, test on the newest rows.

Cuts fall between distinct timestamps, so rows that share a timestamp always land in the
same slice and nothing from the test period leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe.config import Config
from ctpipe.errors import DataError

SLICES = ("train", "validation", "test")


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
        return f"split {parts} (test from {test.start}){dropped}"

    def metadata(self, name: str) -> dict[str, Any]:
        s = self.slice(name)
        return {"slice": name, "rows": s.rows, "start": s.start, "end": s.end}


def split(table: pa.Table, config: Config) -> tuple[dict[str, pa.Table], SplitResult]:
    """Sort by time and cut into train / validation / test slices."""
    labelled = table.filter(pc.is_valid(table.column(config.target)))
    if pa.types.is_floating(labelled.column(config.target).type):
        labelled = labelled.filter(pc.invert(pc.is_nan(labelled.column(config.target))))
    dropped = table.num_rows - labelled.num_rows
    ordered = labelled.sort_by([(config.timestamp, "ascending")])
    times = ordered.column(config.timestamp).cast(pa.int64()).to_numpy()
    n = len(times)
    test_cut = _cut(times, n - round(n * config.split.test_fraction))
    validation_cut = _cut(times, test_cut - round(n * config.split.validation_fraction))
    bounds = {
        "train": (0, validation_cut),
        "validation": (validation_cut, test_cut),
        "test": (test_cut, n),
    }
    slices = {name: ordered.slice(lo, hi - lo) for name, (lo, hi) in bounds.items()}
    infos = tuple(_info(name, part, config.timestamp) for name, part in slices.items())
    short = [s for s in infos if s.rows < config.split.min_rows]
    if short:
        detail = ", ".join(f"{s.name} has {s.rows}" for s in short)
        raise DataError(
            f"not enough labelled rows to split {n:,} rows in time order: {detail}; each slice needs at least "
            f"split.min_rows={config.split.min_rows} (more data, or other split fractions)"
        )
    if config.task == "classification":
        classes = pc.unique(slices["train"].column(config.target)).drop_null()
        if len(classes) < 2:
            raise DataError(
                f"column {config.target!r}: the training slice holds only one class ({classes.to_pylist()}); "
                "a classifier needs at least two"
            )
    return slices, SplitResult(infos, dropped)


def _cut(times: np.ndarray, index: int) -> int:
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
