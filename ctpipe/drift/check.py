"""Drift verdicts: each column's statistics against its reference, and the dataset's.

The verdict per column is either an effect size (default: numeric wasserstein_norm >= 0.1,
categorical jensen_shannon >= 0.1, evidently's defaults for large data) or a Holm step-down
correction of the KS / chi-square p-values across all columns at `alpha`. Raw per-column
p-values are never a verdict: at a million rows a 0.05σ shift has p < 1e-100, and checking
20 stable columns at p < 0.05 raises a false alarm in two windows out of three.
The dataset has drifted when the share of drifted columns is >= `share`: every column
weighs the same, because models carry no feature importances yet.

Calibrated thresholds (`thresholds="calibrated"`, the default, effect sizes only): a column
whose training data moves with the season differs from the whole training period in every
monitor window, so a fixed 0.1 flags it in every check. `profile.calibrate` cuts the training rows
into consecutive monitor-window-long spans, scores each span against the whole reference
with the very statistic a check uses, and keeps median + 3 robust std (1.4826 MAD) of
those scores per column (NannyML's reference chunks, with a spread that a change inside
the training data does not inflate). A check then holds each column to the larger of the
fixed threshold and its calibrated one, so calibration only ever makes a verdict harder to
reach. Holm's p-values are a significance test, not a distance, and are never calibrated.

Thresholds compare with >= (as evidently does); dataset drift is share >= `share`, as
evidently's drift_share, whose default is 0.5 (ours 0.25).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ctpipe.config import DriftMethod, DriftSettings, DriftThresholds
from ctpipe.drift.profile import (
    CATEGORICAL,
    NUMERIC,
    Calibration,
    CategoricalReference,
    Kind,
    NumericReference,
    ReferenceProfile,
)
from ctpipe.drift.stats import (
    CHI2,
    CHI2_P_VALUE,
    JENSEN_SHANNON,
    KS,
    KS_P_VALUE,
    PSI,
    WASSERSTEIN_MIN_SCALE,
    WASSERSTEIN_NORM,
    Float64Array,
    _category_counts,
    _numeric_psi,
    _sorted_finite,
    chi2_sf,
    chi_square,
    holm,
    jensen_shannon,
    ks_p_value,
    ks_statistic,
    psi,
    wasserstein,
)
from ctpipe.errors import DataError

EFFECT_SIZE: DriftMethod = "effect_size"
HOLM: DriftMethod = "holm"
FIXED: DriftThresholds = "fixed"
CALIBRATED: DriftThresholds = "calibrated"

# Which statistic a verdict reads, per kind: the effect size, or the p-value Holm corrects.
EFFECT_STATISTIC: dict[str, str] = {NUMERIC: WASSERSTEIN_NORM, CATEGORICAL: JENSEN_SHANNON}
TEST_STATISTIC: dict[str, str] = {NUMERIC: KS_P_VALUE, CATEGORICAL: CHI2_P_VALUE}


# ---------------------------------------------------------------------------- thresholds


def threshold_for(settings: DriftSettings, kind: str) -> float:
    """The fixed threshold a column of this kind is held to (see `column_threshold`)."""
    if settings.method == HOLM:
        return settings.alpha
    return settings.numeric_threshold if kind == NUMERIC else settings.categorical_threshold


def column_threshold(
    settings: DriftSettings, name: str, kind: str, calibration: Calibration | None
) -> tuple[float, DriftThresholds]:
    """The threshold a column is held to and where it came from."""
    fixed = threshold_for(settings, kind)
    if settings.method != EFFECT_SIZE or settings.thresholds != CALIBRATED or calibration is None:
        return fixed, FIXED
    learned = calibration.thresholds.get(name)
    if learned is None or learned <= fixed:
        return fixed, FIXED
    return learned, CALIBRATED


# ---------------------------------------------------------------------------- a column's statistics


def numeric_statistics(
    reference: NumericReference, current_sorted: Float64Array, psi_bins: int = 10
) -> dict[str, float]:
    """KS, its p-value, normalised Wasserstein-1 and PSI from two sorted finite samples.

    Everything comes from the two sorted arrays without merging them: Wasserstein as the
    area between the quantile functions, KS by bounding the CDF gap on a coarse grid and
    evaluating exactly only where the bound could beat the best value found.
    """
    ref = reference.values
    ks = ks_statistic(ref, current_sorted)
    return {
        KS: ks,
        KS_P_VALUE: ks_p_value(ks, reference.rows, len(current_sorted)),
        WASSERSTEIN_NORM: wasserstein(ref, current_sorted)
        / max(reference.std, WASSERSTEIN_MIN_SCALE),
        PSI: _numeric_psi(ref, current_sorted, psi_bins),
    }


def categorical_statistics(
    reference: CategoricalReference, current: Mapping[str, int]
) -> dict[str, float]:
    """Chi-square (2 x K), its p-value, Jensen–Shannon distance and PSI over categories
    seen in either window."""
    index = {c: i for i, c in enumerate(reference.categories)}
    known = len(index)
    for c in current:  # categories the reference never saw get their own cells
        index.setdefault(c, len(index))
    ref = np.zeros(len(index))
    ref[:known] = reference.counts
    cur = np.zeros(len(index))
    for c, count in current.items():
        cur[index[c]] = count
    chi2 = chi_square(ref, cur)
    return {
        CHI2: chi2,
        CHI2_P_VALUE: chi2_sf(chi2, len(index) - 1),
        JENSEN_SHANNON: jensen_shannon(ref, cur),
        PSI: psi(ref / ref.sum(), cur / cur.sum()),
    }


# ---------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class ColumnDrift:
    """One column's statistics and verdict.

    score is what the verdict reads: the effect size (drifted when score >= threshold) or,
    with method "holm", the Holm-adjusted p-value (drifted when score <= threshold = alpha).
    threshold_source: "calibrated" when the column's calibrated threshold was above the
    fixed one and so was used (records written before calibration load as "fixed").
    reference_rows and current_rows count the values the statistics used (nulls excluded).
    """

    name: str
    kind: Kind
    statistics: dict[str, float]
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    null_share_reference: float
    null_share_current: float
    threshold_source: DriftThresholds = FIXED


@dataclass(frozen=True)
class DriftReport:
    """Every column's verdict and the dataset's; `to_dict()` is JSON-able.

    calibrated_windows: the training windows the profile's calibrated thresholds came
    from, when they applied (0: fixed thresholds only). calibration_note: why calibrated
    thresholds were asked for and not applied (e.g. too few training windows).
    """

    columns: tuple[ColumnDrift, ...]
    drift_share: float  # drifted columns / columns
    drifted: bool  # drift_share >= settings.share
    method: DriftMethod
    settings: DriftSettings
    current_rows: int  # rows in the current window, nulls included
    calibrated_windows: int = 0
    calibration_note: str = ""

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "drift_share": self.drift_share,
            "drifted": self.drifted,
            "method": self.method,
            "settings": self.settings.to_dict(),
            "current_rows": self.current_rows,
            "calibrated_windows": self.calibrated_windows,
            "calibration_note": self.calibration_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        settings = dict(data["settings"])
        # A record without the key predates calibration: its thresholds were fixed.
        settings.setdefault("thresholds", FIXED)
        return cls(
            columns=tuple(ColumnDrift(**c) for c in data["columns"]),
            drift_share=float(data["drift_share"]),
            drifted=bool(data["drifted"]),
            method=data["method"],
            settings=DriftSettings.from_dict(settings),
            current_rows=int(data["current_rows"]),
            calibrated_windows=int(data.get("calibrated_windows", 0)),
            calibration_note=str(data.get("calibration_note", "")),
        )

    def _rule(self) -> str:
        s = self.settings
        if self.method == HOLM:
            return f"Holm-corrected KS / chi-square p <= {s.alpha:g}"
        rule = (
            f"Wasserstein/std >= {s.numeric_threshold:g}, "
            f"Jensen-Shannon >= {s.categorical_threshold:g}"
        )
        if self.calibrated_windows:
            raised = sum(c.threshold_source == CALIBRATED for c in self.columns)
            rule += (
                f", or a column's own threshold where higher (thresholds calibrated on "
                f"{self.calibrated_windows} training windows, {raised} above the fixed ones)"
            )
        elif self.calibration_note:
            rule += f" (fixed: {self.calibration_note})"
        return rule

    def summary(self) -> str:
        """One line: the verdict, the count, the rule and the drifted columns."""
        verdict = "data drift detected" if self.drifted else "no data drift"
        count = len(self.drifted_columns)
        line = (
            f"{verdict}: {count} of {len(self.columns)} columns drifted "
            f"({self.drift_share:.0%}, dataset drift at >= {self.settings.share:.0%}; "
            f"{self._rule()}; {self.current_rows:,} current rows)"
        )
        if count:
            line += ": " + ", ".join(self.drifted_columns)
        return line

    def markdown(self) -> str:
        score = "Holm p" if self.method == HOLM else "effect size"
        lines = [
            f"**{self.summary()}**",
            "",
            f"| column | kind | {score} | threshold | threshold from | drifted | KS / chi2 | "
            "p-value | W1/std / JS | PSI | nulls ref → cur |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.columns:
            st = c.statistics
            if c.kind == NUMERIC:
                test, p, effect = st[KS], st[KS_P_VALUE], st[WASSERSTEIN_NORM]
            else:
                test, p, effect = st[CHI2], st[CHI2_P_VALUE], st[JENSEN_SHANNON]
            lines.append(
                f"| {c.name} | {c.kind} | {c.score:.4g} | {c.threshold:.4g} | "
                f"{c.threshold_source} | {'**yes**' if c.drifted else 'no'} | {test:.4g} | {p:.3g} | {effect:.4g} | "
                f"{st[PSI]:.4g} | {c.null_share_reference:.3f} → {c.null_share_current:.3f} |"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------- check


def compare(
    profile: ReferenceProfile,
    current: pa.Table | Mapping[str, Any],
    settings: DriftSettings | None = None,
) -> DriftReport:
    """Compare the current window (an Arrow table or a mapping of arrays) with the profile.

    With effect sizes and `settings.thresholds` "calibrated", a column is held to the
    larger of its kind's threshold and the profile's calibrated one for it, if any; the
    calibration was made for windows of the monitor's length (see `profile.calibrate`).

    Raises DataError when the window is empty, lacks a profiled column, or has no values
    at all in one.
    """
    settings = settings or DriftSettings()
    names = profile.names
    available = current.column_names if isinstance(current, pa.Table) else current
    absent = [name for name in names if name not in available]
    if absent:
        raise DataError(
            f"column(s) {', '.join(map(repr, absent))} of the drift profile are not in the "
            "current data"
        )
    if isinstance(current, pa.Table):
        rows = current.num_rows
    else:
        lengths = {len(current[name]) for name in names}
        if len(lengths) > 1:
            raise DataError(f"current columns have different lengths: {sorted(lengths)}")
        rows = lengths.pop()
    if rows == 0:
        raise DataError("the current window has no rows")

    measured: list[tuple[str, Kind, dict[str, float], int, int, float, float]] = []
    for name, ref in profile.columns.items():
        values = current.column(name) if isinstance(current, pa.Table) else current[name]
        if isinstance(ref, NumericReference):
            finite, total = _sorted_finite(name, values)
            if not len(finite):
                raise DataError(
                    f"column {name!r}: every value in the current window is null or not finite"
                )
            stats = numeric_statistics(ref, finite, settings.psi_bins)
            used = len(finite)
        else:
            counts, total = _category_counts(name, values)
            if not counts:
                raise DataError(f"column {name!r}: every value in the current window is null")
            stats = categorical_statistics(ref, counts)
            used = sum(counts.values())
        measured.append(
            (
                name,
                ref.kind,
                stats,
                ref.rows,
                used,
                ref.missing / (ref.rows + ref.missing),
                (total - used) / total,
            )
        )

    calibration = profile.calibration
    thresholds = [column_threshold(settings, m[0], m[1], calibration) for m in measured]
    if settings.method == HOLM:
        scores = holm(np.array([m[2][TEST_STATISTIC[m[1]]] for m in measured]))
        drifted = [bool(s <= settings.alpha) for s in scores]
    else:
        scores = np.array([m[2][EFFECT_STATISTIC[m[1]]] for m in measured])
        drifted = [bool(s >= t) for s, (t, _) in zip(scores, thresholds, strict=True)]

    columns = tuple(
        ColumnDrift(
            name=name,
            kind=kind,
            statistics=stats,
            score=float(score),
            threshold=threshold,
            drifted=flag,
            reference_rows=ref_rows,
            current_rows=cur_rows,
            null_share_reference=null_ref,
            null_share_current=null_cur,
            threshold_source=source,
        )
        for (name, kind, stats, ref_rows, cur_rows, null_ref, null_cur), score, flag, (
            threshold,
            source,
        ) in zip(measured, scores, drifted, thresholds, strict=True)
    )
    windows, note = 0, ""
    if settings.method == EFFECT_SIZE and settings.thresholds == CALIBRATED:
        if calibration is not None and calibration.thresholds:
            windows = calibration.windows
        elif calibration is not None:
            note = calibration.reason
        else:
            note = "the reference profile has no calibration"
    share = sum(drifted) / len(columns)
    return DriftReport(
        columns=columns,
        drift_share=share,
        drifted=share >= settings.share,
        method=settings.method,
        settings=settings,
        current_rows=rows,
        calibrated_windows=windows,
        calibration_note=note,
    )


def unseen(profile: ReferenceProfile, current: pa.Table, min_share: float = 0.01) -> dict[str, str]:
    """What the profiled data never had, per column of the current window: categories it
    never saw (together at least `min_share` of the column's values, so one stray value
    is not a new world), or values in a column that was constant (or empty) in it. Unlike
    drift, which is a matter of degree and of noise at small windows, these are facts: a
    model trained on that data cannot have learned them."""
    found: dict[str, str] = {}
    for name, ref in profile.columns.items():
        if name not in current.column_names:
            continue
        values = current.column(name)
        if isinstance(ref, NumericReference):
            finite, _ = _sorted_finite(name, values)
            if len(finite) < 2 or finite[0] == finite[-1]:
                continue
            if ref.rows == 0:
                found[name] = "came alive: empty in training"
            elif ref.values[0] == ref.values[-1]:
                found[name] = f"came alive: constant {ref.values[0]:g} in training"
            continue
        counts, _ = _category_counts(name, values)
        known = set(ref.categories)
        new = {c: n for c, n in counts.items() if c not in known}
        share = sum(new.values()) / max(1, sum(counts.values()))
        if new and share >= min_share:
            listed = ", ".join(repr(c) for c in sorted(new, key=lambda c: -new[c])[:3])
            more = f" and {len(new) - 3} more" if len(new) > 3 else ""
            found[name] = (
                f"new categor{'y' if len(new) == 1 else 'ies'} {listed}{more} "
                f"({share:.0%} of values)"
            )
    return found


# ---------------------------------------------------------------------------- input


def read_window(path: str | Path, profile: ReferenceProfile) -> pa.Table:
    """Read the profile's columns of a Parquet file, text categories dictionary-encoded.

    Dictionary-encoded because Parquet stores them so: reading skips building a million
    strings and counting becomes a bincount.
    """
    from ctpipe.data import tables

    try:
        schema = tables.read_schema(path)
        absent = [c for c in profile.names if c not in schema.names]
        if absent:
            raise DataError(
                f"{path}: column(s) {', '.join(map(repr, absent))} of the drift profile "
                "are not in the current data"
            )
        text = [
            name
            for name, kind in profile.kinds.items()
            if kind == CATEGORICAL
            and (
                pa.types.is_string(schema.field(name).type)
                or pa.types.is_large_string(schema.field(name).type)
            )
        ]
        return tables.read(path, columns=profile.names, read_dictionary=text or None)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read the current window as Parquet ({exc})") from exc
