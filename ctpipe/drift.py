"""Data drift: a reference profile stored at training time against the current window.

The monitor (a CronJob) and the pipeline's drift step are fresh processes, so this module
imports numpy and pyarrow only: no pandas, no scipy, no evidently (the p-values come from
closed forms, see `ks_p_value` and `chi2_sf`). A check reads the current window, sorts each
numeric column once and derives every statistic from that sorted array and the profile's
pre-sorted reference values, without merging the two.

Per column (nulls, NaN and ±inf are left out of every statistic; their shares are reported):

  numeric      ks                two-sample Kolmogorov–Smirnov D, exact
               ks_p_value        asymptotic p-value (see `ks_p_value`)
               wasserstein_norm  Wasserstein-1 / reference standard deviation (population)
               psi               population stability index on reference-quantile bins
  categorical  chi2, chi2_p_value  chi-square test of homogeneity on the 2 x K table of
                                   reference and current counts (no continuity correction)
               jensen_shannon      Jensen–Shannon distance, natural log (scipy's default)
               psi                 population stability index over the categories

The verdict per column is either an effect size (default: numeric wasserstein_norm >= 0.1,
categorical jensen_shannon >= 0.1, evidently's defaults for large data) or a Holm step-down
correction of the KS / chi-square p-values across all columns at `alpha`. Raw per-column
p-values are never a verdict: at a million rows a 0.05σ shift has p < 1e-100, and checking
20 stable columns at p < 0.05 raises a false alarm in two windows out of three.
The dataset has drifted when the share of drifted columns is >= `share`: every column
weighs the same, because models carry no feature importances yet.

Calibrated thresholds (`thresholds="calibrated"`, the default, effect sizes only): a column
whose training data moves with the season differs from the whole training period in every
monitor window, so a fixed 0.1 flags it in every check. `calibrate` cuts the training rows
into consecutive monitor-window-long spans, scores each span against the whole reference
with the very statistic a check uses, and keeps median + 3 robust std (1.4826 MAD) of
those scores per column (NannyML's reference chunks, with a spread that a change inside
the training data does not inflate). A check then holds each column to the larger of the
fixed threshold and its calibrated one, so calibration only ever makes a verdict harder to
reach. Holm's p-values are a significance test, not a distance, and are never calibrated.

Where this differs from evidently 0.7 (`evidently.legacy.calculations.stattests`):

- chi-square: evidently's "chisquare" is a goodness-of-fit test that takes the reference
  shares as exact; here both windows are samples (the issue asks for the contingency
  table). The statistic is about n_ref / (n_ref + n_cur) of evidently's, so p-values are
  larger unless the reference is much bigger than the current window. Unlike
  `scipy.stats.chi2_contingency`'s default, no Yates correction is applied when K = 2.
- KS p-value: evidently calls `ks_2samp` with method "auto", which is exact below 10,000
  rows; here it is always asymptotic (see `ks_p_value` for the accuracy).
- numeric PSI bins: evidently uses Sturges equal-width bins over reference ∪ current (or one
  bin per value below 21 distinct reference values); here `psi_bins` reference-quantile bins,
  open at both ends, which is the textbook PSI and needs no pass over the data. The empty-bin
  epsilon is evidently's. Categorical PSI matches evidently's exactly.
- numeric columns with <= 5 distinct values: evidently silently switches them to
  Jensen–Shannon over the values; here a numeric column is always scored by Wasserstein.
  Declare such a column categorical to get evidently's behaviour.
- thresholds compare with >= (as evidently does); dataset drift is share >= `share`, as
  evidently's drift_share, whose default is 0.5 (ours 0.25).

Categories are compared by their text form (`str(value)`, whole floats as integers), so a
profile built from numpy arrays matches a check on Arrow data, and 3, 3.0 and "3" are one
category whichever way a prediction log stored them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ctpipe.errors import DataError

Kind = Literal["numeric", "categorical"]
Method = Literal["effect_size", "holm"]

NUMERIC: Kind = "numeric"
CATEGORICAL: Kind = "categorical"
KINDS: tuple[Kind, ...] = (NUMERIC, CATEGORICAL)
EFFECT_SIZE: Method = "effect_size"
HOLM: Method = "holm"
METHODS: tuple[Method, ...] = (EFFECT_SIZE, HOLM)

# Statistic keys in ColumnDrift.statistics.
KS = "ks"
KS_P_VALUE = "ks_p_value"
WASSERSTEIN_NORM = "wasserstein_norm"
CHI2 = "chi2"
CHI2_P_VALUE = "chi2_p_value"
JENSEN_SHANNON = "jensen_shannon"
PSI = "psi"

# Which statistic a verdict reads, per kind: the effect size, or the p-value Holm corrects.
EFFECT_STATISTIC: dict[str, str] = {NUMERIC: WASSERSTEIN_NORM, CATEGORICAL: JENSEN_SHANNON}
TEST_STATISTIC: dict[str, str] = {NUMERIC: KS_P_VALUE, CATEGORICAL: CHI2_P_VALUE}

DEFAULT_MAX_ROWS = 1_000_000
# evidently's floor under the reference standard deviation: a constant reference column
# (std 0) divides by this instead, so any change of more than ~1e-4 on average is drift.
WASSERSTEIN_MIN_SCALE = 0.001

PROFILE_FORMAT = "ctpipe.drift.profile"
PROFILE_VERSION = 2  # 2: a calibration in the header
READABLE_PROFILE_VERSIONS = (1, 2)
_HEADER_KEY = "header"

Thresholds = Literal["fixed", "calibrated"]
FIXED: Thresholds = "fixed"
CALIBRATED: Thresholds = "calibrated"
THRESHOLDS: tuple[Thresholds, ...] = (FIXED, CALIBRATED)

# Calibration: NannyML's reference chunks, median + 3 robust std (1.4826 MAD). Fewer than 3
# windows give no usable spread. More than 50 windows add little to a median and MAD but cost time on a
# million-row reference, so an evenly spaced 50 are scored (they still span every season).
CALIBRATION_SIGMAS = 3.0
MIN_CALIBRATION_WINDOWS = 3
MAX_CALIBRATION_WINDOWS = 50

Float64Array = npt.NDArray[np.float64]

_ARROW_NUMERIC = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_decimal,
)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DriftSettings:
    """How a check turns statistics into verdicts.

    method: "effect_size" compares numeric wasserstein_norm with `numeric_threshold` and
    categorical jensen_shannon with `categorical_threshold`; "holm" corrects the KS and
    chi-square p-values of all columns together and flags those it rejects at `alpha`.
    share: the dataset has drifted when at least this fraction of its columns has.
    psi_bins: reference-quantile bins for numeric PSI (reported, never a verdict).
    thresholds: "calibrated" holds each column to the larger of its kind's threshold and
    the threshold the profile calibrated for it (see `calibrate`), where there is one;
    "fixed" uses the kind's threshold only. Method "holm" ignores it.
    """

    method: Method = EFFECT_SIZE
    numeric_threshold: float = 0.1
    categorical_threshold: float = 0.1
    alpha: float = 0.05
    share: float = 0.25
    psi_bins: int = 10
    thresholds: Thresholds = CALIBRATED

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"drift method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.thresholds not in THRESHOLDS:
            raise ValueError(
                f"drift thresholds must be one of {', '.join(THRESHOLDS)}, got {self.thresholds!r}"
            )
        for name in ("numeric_threshold", "categorical_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"drift {name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"drift alpha must be between 0 and 1, got {self.alpha}")
        if not 0 < self.share <= 1:
            raise ValueError(f"drift share must be in (0, 1], got {self.share}")
        if (
            isinstance(self.psi_bins, bool)
            or not isinstance(self.psi_bins, int)
            or self.psi_bins < 2
        ):
            raise ValueError(f"drift psi_bins must be an integer >= 2, got {self.psi_bins!r}")

    def threshold_for(self, kind: str) -> float:
        """The fixed threshold a column of this kind is held to (see `column_threshold`)."""
        if self.method == HOLM:
            return self.alpha
        return self.numeric_threshold if kind == NUMERIC else self.categorical_threshold

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftSettings:
        return cls(**data)

    def column_threshold(
        self, name: str, kind: str, calibration: Calibration | None
    ) -> tuple[float, Thresholds]:
        """The threshold a column is held to and where it came from."""
        fixed = self.threshold_for(kind)
        if self.method != EFFECT_SIZE or self.thresholds != CALIBRATED or calibration is None:
            return fixed, FIXED
        learned = calibration.thresholds.get(name)
        if learned is None or learned <= fixed:
            return fixed, FIXED
        return learned, CALIBRATED


# ---------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class NumericReference:
    """A numeric column of the training slice.

    `values` are its finite values sorted (float64), or, when it had more than the
    profile's max_rows, an evenly spaced quantile sketch of max_rows points: the sorted
    values at ranks floor((i + 1/2) * rows / max_rows). The sketch's empirical CDF is within
    1 / (2 * max_rows) of the full one, so KS D moves by at most that much.
    `mean` and `std` are of all finite values, not of the sketch.
    """

    values: Float64Array
    rows: int  # finite values
    missing: int  # nulls, NaN, ±inf
    mean: float
    std: float
    kind: Kind = NUMERIC

    @property
    def sketched(self) -> bool:
        return len(self.values) < self.rows


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical column of the training slice: each category's count (text form)."""

    categories: tuple[str, ...]
    counts: npt.NDArray[np.int64]
    missing: int  # nulls (and NaN in a float column)
    kind: Kind = CATEGORICAL

    @property
    def rows(self) -> int:
        return int(self.counts.sum())


ColumnReference = NumericReference | CategoricalReference


@dataclass(frozen=True)
class Calibration:
    """Per-column thresholds learned from the training data's own variation between
    consecutive monitor windows; see `calibrate`.

    thresholds: median + `sigmas` robust std (1.4826 MAD) of the column's effect size over
    the training windows,
    for each column scored in at least MIN_CALIBRATION_WINDOWS of them. Empty, with
    `reason` saying why, when the training data gave too few windows.
    windows: the training windows scored; available: those with at least min_rows rows
    (more than MAX_CALIBRATION_WINDOWS are thinned evenly to that many).
    """

    window_seconds: float
    min_rows: int
    windows: int
    available: int
    thresholds: dict[str, float] = field(default_factory=dict)
    sigmas: float = CALIBRATION_SIGMAS
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            window_seconds=float(data["window_seconds"]),
            min_rows=int(data["min_rows"]),
            windows=int(data["windows"]),
            available=int(data["available"]),
            thresholds={str(k): float(v) for k, v in (data.get("thresholds") or {}).items()},
            sigmas=float(data.get("sigmas", CALIBRATION_SIGMAS)),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """What a drift check needs of the training data, built once and stored with the model.

    Save with `to_bytes()` (an .npz: a JSON header plus one array per column, no pickle)
    and load with `ReferenceProfile.from_bytes()`, which also reads version-1 profiles
    (written before calibration: they have none).
    """

    columns: dict[str, ColumnReference]
    rows: int  # rows of the training slice, nulls included
    max_rows: int = DEFAULT_MAX_ROWS
    metadata: dict[str, str] = field(default_factory=dict)  # lineage, e.g. an MLflow run id
    calibration: Calibration | None = None  # None: never calibrated (no timestamps, v1)

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    @property
    def kinds(self) -> dict[str, Kind]:
        return {name: ref.kind for name, ref in self.columns.items()}

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "rows": self.rows,
            "max_rows": self.max_rows,
            "metadata": dict(self.metadata),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "columns": [],
        }
        arrays: dict[str, np.ndarray] = {}
        for i, (name, ref) in enumerate(self.columns.items()):
            entry: dict[str, Any] = {"name": name, "kind": ref.kind, "missing": ref.missing}
            if isinstance(ref, NumericReference):
                entry.update(rows=ref.rows, mean=ref.mean, std=ref.std)
                arrays[f"c{i}"] = np.ascontiguousarray(ref.values, dtype=np.float64)
            else:
                entry["categories"] = list(ref.categories)
                arrays[f"c{i}"] = np.ascontiguousarray(ref.counts, dtype=np.int64)
            header["columns"].append(entry)
        arrays[_HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz[_HEADER_KEY].tobytes().decode())
                if header.get("format") != PROFILE_FORMAT:
                    raise DataError("not a ctpipe drift profile (wrong format tag)")
                if header.get("version") not in READABLE_PROFILE_VERSIONS:
                    raise DataError(
                        f"drift profile version {header.get('version')} is not supported "
                        f"(this ctpipe reads versions "
                        f"{', '.join(map(str, READABLE_PROFILE_VERSIONS))})"
                    )
                raw = header.get("calibration")
                if raw is not None and not isinstance(raw, dict):
                    raise DataError("drift profile: the calibration is not a mapping")
                calibration = None if raw is None else Calibration.from_dict(raw)
                columns: dict[str, ColumnReference] = {}
                for i, entry in enumerate(header["columns"]):
                    array = npz[f"c{i}"]
                    if entry["kind"] not in KINDS:
                        raise DataError(
                            f"drift profile: column {entry['name']!r} has kind {entry['kind']!r}"
                        )
                    if entry["kind"] == NUMERIC:
                        columns[entry["name"]] = NumericReference(
                            values=array.astype(np.float64, copy=False),
                            rows=int(entry["rows"]),
                            missing=int(entry["missing"]),
                            mean=float(entry["mean"]),
                            std=float(entry["std"]),
                        )
                    else:
                        columns[entry["name"]] = CategoricalReference(
                            categories=tuple(entry["categories"]),
                            counts=array.astype(np.int64, copy=False),
                            missing=int(entry["missing"]),
                        )
        except DataError:
            raise
        except (ValueError, KeyError, OSError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read the drift profile: {exc}") from exc
        return cls(
            columns=columns,
            rows=int(header["rows"]),
            max_rows=int(header["max_rows"]),
            metadata=dict(header.get("metadata") or {}),
            calibration=calibration,
        )


def build_profile(
    columns: Mapping[str, Any],
    kinds: Mapping[str, Kind],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    metadata: Mapping[str, str] | None = None,
) -> ReferenceProfile:
    """Profile the training slice: `columns` maps names to arrays (numpy, Arrow, lists),
    `kinds` names the columns to profile, in order, as "numeric" or "categorical".

    Numeric columns longer than `max_rows` (finite values) keep a quantile sketch of
    `max_rows` points; see NumericReference.
    """
    if max_rows < 2:
        raise ValueError(f"max_rows must be at least 2, got {max_rows}")
    if not kinds:
        raise DataError("no columns to profile: `kinds` is empty")
    absent = [name for name in kinds if name not in columns]
    if absent:
        raise DataError(f"column(s) {', '.join(map(repr, absent))} to profile are not in the data")
    refs: dict[str, ColumnReference] = {}
    lengths: set[int] = set()
    for name, kind in kinds.items():
        values = columns[name]
        lengths.add(len(values))
        if kind == NUMERIC:
            finite, total = _sorted_finite(name, values)
            if not len(finite):
                raise DataError(f"column {name!r}: no finite values in the reference data")
            refs[name] = NumericReference(
                values=_sketch(finite, max_rows),
                rows=len(finite),
                missing=total - len(finite),
                mean=float(finite.mean()),
                std=float(finite.std()),
            )
        elif kind == CATEGORICAL:
            counts, total = _category_counts(name, values)
            if not counts:
                raise DataError(f"column {name!r}: every value is null in the reference data")
            categories = tuple(sorted(counts))
            refs[name] = CategoricalReference(
                categories=categories,
                counts=np.array([counts[c] for c in categories], dtype=np.int64),
                missing=total - sum(counts.values()),
            )
        else:
            raise DataError(f"column {name!r}: kind must be numeric or categorical, got {kind!r}")
    if len(lengths) > 1:
        raise DataError(f"columns to profile have different lengths: {sorted(lengths)}")
    return ReferenceProfile(
        columns=refs, rows=lengths.pop(), max_rows=max_rows, metadata=dict(metadata or {})
    )


def build_profile_from_table(
    table: pa.Table,
    numeric: Iterable[str],
    categorical: Iterable[str],
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    metadata: Mapping[str, str] | None = None,
) -> ReferenceProfile:
    """`build_profile` on an Arrow table, e.g. with Schema.numeric_features and
    Schema.categorical_features."""
    kinds: dict[str, Kind] = {name: NUMERIC for name in numeric}
    for name in categorical:
        if name in kinds:
            raise DataError(f"column {name!r} is listed as both numeric and categorical")
        kinds[name] = CATEGORICAL
    absent = [name for name in kinds if name not in table.column_names]
    if absent:
        raise DataError(f"column(s) {', '.join(map(repr, absent))} to profile are not in the data")
    data = {name: table.column(name) for name in kinds}
    return build_profile(data, kinds, max_rows=max_rows, metadata=metadata)


def _sketch(sorted_values: Float64Array, max_rows: int) -> Float64Array:
    n = len(sorted_values)
    if n <= max_rows:
        return sorted_values
    ranks = ((2 * np.arange(max_rows, dtype=np.int64) + 1) * n) // (2 * max_rows)
    return np.ascontiguousarray(sorted_values[ranks])


# ---------------------------------------------------------------------------- calibration


MAD_TO_STD = 1.4826  # the median absolute deviation of a normal sample, in its std


def robust_limit(scores: Any, sigmas: float = CALIBRATION_SIGMAS) -> float:
    """median + sigmas x 1.4826 x MAD of `scores`."""
    values = np.asarray(scores, dtype=float)
    median = float(np.median(values))
    return median + sigmas * MAD_TO_STD * float(np.median(np.abs(values - median)))


def calibrate(
    profile: ReferenceProfile,
    data: pa.Table | Mapping[str, Any],
    times: Any,
    window_seconds: float,
    *,
    min_rows: int = 1,
    max_windows: int = MAX_CALIBRATION_WINDOWS,
    sigmas: float = CALIBRATION_SIGMAS,
) -> Calibration:
    """Per-column thresholds from how the training data varies between monitor windows.

    `data` holds the rows the profile was built from (an Arrow table or a mapping of
    arrays), `times` their timestamps (an Arrow timestamp, date or numeric column, numpy
    datetime64, or seconds), in any order. The rows are cut into consecutive spans of
    `window_seconds`, counted back from the newest row as the monitor's window is; the
    oldest span is left out when the data covers less than half of it, and so is every
    span with fewer than `min_rows` rows. Each span is scored against the whole profile
    with the statistic a check reads (wasserstein_norm, jensen_shannon), and a column's
    threshold is the median + `sigmas` robust standard deviations (1.4826 x the median
    absolute deviation) of its scores. Robust, because training data that spans a change
    has a few windows far from the rest: mean + 3 std would take them for the column's
    natural variation and never see that change again, while a season, spread over many
    windows, still widens the threshold.

    The scores are as noisy as the training windows are small: a production window with
    many more rows than a training one is held to a threshold a little higher than its
    own noise needs. Returns a Calibration without thresholds, saying why, when fewer than
    MIN_CALIBRATION_WINDOWS spans are usable.
    """
    if not window_seconds > 0:
        raise ValueError(f"calibration window must be > 0 seconds, got {window_seconds}")
    if max_windows < MIN_CALIBRATION_WINDOWS:
        raise ValueError(f"max_windows must be at least {MIN_CALIBRATION_WINDOWS}")
    rows = data.num_rows if isinstance(data, pa.Table) else len(data[profile.names[0]])
    seconds = _seconds(times)
    if len(seconds) != rows:
        raise DataError(f"{len(seconds)} timestamps for {rows} rows to calibrate on")
    window_text = _duration_text(window_seconds)

    def without(reason: str, available: int = 0) -> Calibration:
        return Calibration(
            window_seconds=window_seconds,
            min_rows=min_rows,
            windows=0,
            available=available,
            sigmas=sigmas,
            reason=reason,
        )

    dated = np.isfinite(seconds)
    if not dated.any():
        return without("the training data has no timestamps")
    newest = float(seconds[dated].max())
    span = np.full(rows, -1, dtype=np.int64)
    span[dated] = np.floor((newest - seconds[dated]) / window_seconds).astype(np.int64)
    sizes = np.bincount(span[dated])
    oldest = len(sizes) - 1
    covered = newest - oldest * window_seconds - float(seconds[dated].min())
    if oldest > 0 and covered < window_seconds / 2:
        # A sliver of a window is scored as if it were one, and its few days of a seasonal
        # series sit further from the whole than any full window does.
        sizes[oldest] = 0
    usable = np.flatnonzero(sizes >= max(min_rows, 1))
    if len(usable) < MIN_CALIBRATION_WINDOWS:
        return without(
            f"only {len(usable)} training window(s) of {window_text} with >= {min_rows} rows "
            f"(calibration needs {MIN_CALIBRATION_WINDOWS})",
            len(usable),
        )
    picked = usable
    if len(usable) > max_windows:
        picked = usable[np.round(np.linspace(0, len(usable) - 1, max_windows)).astype(np.int64)]
    # One stable argsort groups the rows by window; each column is then gathered once and
    # cut at the window bounds.
    slot = np.full(len(sizes), -1, dtype=np.int64)
    slot[picked] = np.arange(len(picked))
    row_slot = np.where(span >= 0, slot[np.maximum(span, 0)], -1)
    chosen = np.flatnonzero(row_slot >= 0)
    order = chosen[np.argsort(row_slot[chosen], kind="stable")]
    bounds = np.cumsum(sizes[picked])[:-1]

    thresholds: dict[str, float] = {}
    for name, ref in profile.columns.items():
        values = data.column(name) if isinstance(data, pa.Table) else data[name]
        scores = (
            _numeric_window_scores(name, ref, values, order, bounds)
            if isinstance(ref, NumericReference)
            else _categorical_window_scores(name, ref, values, order, bounds)
        )
        if len(scores) >= MIN_CALIBRATION_WINDOWS:
            thresholds[name] = robust_limit(scores, sigmas)
    if not thresholds:
        return without(
            f"no column has values in {MIN_CALIBRATION_WINDOWS} training windows of {window_text}",
            len(usable),
        )
    return Calibration(
        window_seconds=window_seconds,
        min_rows=min_rows,
        windows=len(picked),
        available=len(usable),
        thresholds=thresholds,
        sigmas=sigmas,
    )


def _numeric_window_scores(
    name: str,
    ref: NumericReference,
    values: Any,
    order: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
) -> list[float]:
    distance = _QuantileDistance(ref.values)
    scale = max(ref.std, WASSERSTEIN_MIN_SCALE)
    scores = []
    for part in np.split(_row_floats(name, values)[order], bounds):
        finite = np.sort(part[np.isfinite(part)])
        if len(finite):
            scores.append(distance(finite) / scale / _outside(len(finite), ref.rows))
    return scores


def _outside(window_rows: int, reference_rows: int) -> float:
    """1 - the window's share of the reference it is scored against. The window is part of
    that reference, so its CDF gap is exactly (1 - share) of its gap to the other rows
    (for Wasserstein-1; about that for Jensen-Shannon); dividing by it scores the window
    as a window from outside the training data, which is what the monitor sees, would be.
    Without it a profile of a few windows learns thresholds below its own noise."""
    share = window_rows / reference_rows if reference_rows else 0.0
    return max(1.0 - share, 0.05)


def _categorical_window_scores(
    name: str,
    ref: CategoricalReference,
    values: Any,
    order: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
) -> list[float]:
    codes, width = _row_codes(name, values, ref.categories)
    reference = np.zeros(width)
    reference[: len(ref.counts)] = ref.counts
    scores = []
    for part in np.split(codes[order], bounds):
        seen = part[part >= 0]
        if len(seen):
            counts = np.bincount(seen, minlength=width).astype(np.float64)
            scores.append(jensen_shannon(reference, counts) / _outside(len(seen), ref.rows))
    return scores


class _QuantileDistance:
    """Wasserstein-1 of many small sorted samples against one large sorted reference.

    `wasserstein` walks every reference value, so scoring 50 windows of a million-row
    reference would cost 50 passes over it per column. Here each of the sample's quantile
    steps integrates |Q_ref - b_j| over its stretch in closed form from the reference's
    prefix sums: O(m log n) per sample of m values, the same number up to rounding.
    """

    def __init__(self, reference: Float64Array) -> None:
        # Centred so the prefix sums stay small and their differences keep their digits.
        self.center = float(reference[len(reference) // 2])
        self.values = reference - self.center
        self.prefix = np.concatenate(([0.0], np.cumsum(self.values)))

    def _area(self, t: Float64Array) -> Float64Array:
        """The integral of Q_ref over [0, t / n] times n, Q_ref stepping at the integers."""
        i = np.minimum(t.astype(np.int64), len(self.values) - 1)
        return self.prefix[i] + self.values[i] * (t - i)

    def __call__(self, sample: Float64Array) -> float:
        n1, n2 = len(self.values), len(sample)
        b = sample - self.center
        # The sample's step j spans [j n1 / n2, (j + 1) n1 / n2] in reference ranks, and
        # inside it Q_ref < b_j up to the rank where the reference first reaches b_j.
        edges = np.arange(n2 + 1, dtype=np.int64) * n1 / n2
        low, high = edges[:-1], edges[1:]
        cross = np.clip(np.searchsorted(self.values, b, side="left").astype(np.float64), low, high)
        at_edges, at_cross = self._area(edges), self._area(cross)
        below = b * (cross - low) - (at_cross - at_edges[:-1])
        above = (at_edges[1:] - at_cross) - b * (high - cross)
        return float(np.sum(below + above)) / n1


def _seconds(times: Any) -> Float64Array:
    """Timestamps as float seconds (NaN where null): Arrow timestamps, dates or numbers,
    numpy datetime64, or numbers taken as seconds."""
    if isinstance(times, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc  # training-time only: the monitor never calibrates

        kind = times.type
        if pa.types.is_timestamp(kind):
            per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
            raw = pc.cast(pc.cast(times, pa.int64()), pa.float64())
            return _row_floats("timestamp", raw) / per_second
        if pa.types.is_date32(kind):
            return (
                _row_floats("timestamp", pc.cast(pc.cast(times, pa.int32()), pa.float64()))
                * 86400.0
            )
        if pa.types.is_date64(kind):
            return _row_floats("timestamp", pc.cast(pc.cast(times, pa.int64()), pa.float64())) / 1e3
        return _row_floats("timestamp", times)
    array = np.asarray(times)
    if array.dtype.kind == "M":
        micros = array.astype("datetime64[us]")
        out = micros.astype(np.int64).astype(np.float64) / 1e6
        out[np.isnat(micros)] = np.nan
        return out
    return _row_floats("timestamp", array)


def _row_floats(name: str, values: Any) -> Float64Array:
    """One float64 per row, NaN where null, so rows stay aligned with their timestamps."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc

        if not any(test(values.type) for test in _ARROW_NUMERIC):
            raise DataError(
                f"column {name!r} is numeric in the drift profile but has type {values.type}"
            )
        filled = pc.fill_null(pc.cast(values, pa.float64()), float("nan"))
        return np.array(_arrow_floats(name, filled)[0], dtype=np.float64)
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"column {name!r} is numeric in the drift profile but holds non-numbers"
        ) from None


def _row_codes(
    name: str, values: Any, categories: Sequence[str]
) -> tuple[npt.NDArray[np.int64], int]:
    """Each row's category as an index into `categories` (-1 where null); categories the
    profile lacks get indices after them. Returns the codes and the number of indices."""
    index = {c: i for i, c in enumerate(categories)}

    def lookup(keys: Iterable[Any]) -> npt.NDArray[np.int64]:
        # One extra slot, -1, for rows whose key slot holds nothing (nulls).
        out = [
            -1 if (text := _category_text(k)) is None else index.setdefault(text, len(index))
            for k in keys
        ]
        return np.array([*out, -1], dtype=np.int64)

    if isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc

        parts = []
        for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
            if not len(chunk):
                continue
            encoded = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
            table = lookup(encoded.dictionary.to_pylist())
            indices = encoded.indices
            raw = _row_floats(name, indices)
            raw[np.isnan(raw)] = len(table) - 1
            parts.append(table[raw.astype(np.int64)])
        codes = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return codes, len(index)
    array = np.asarray(values)
    if array.dtype.kind in "biufUS":
        keys, inverse = np.unique(array, return_inverse=True)
        return lookup(keys.tolist())[inverse.reshape(-1)], len(index)
    keys_of: dict[Any, int] = {}
    inverse_list = [keys_of.setdefault(v, len(keys_of)) for v in array.tolist()]
    table = lookup(list(keys_of))
    return table[np.array(inverse_list, dtype=np.int64)], len(index)


def _duration_text(seconds: float) -> str:
    for unit, size in (("w", 604800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


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


# ---------------------------------------------------------------------------- report


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
    threshold_source: Thresholds = FIXED


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
    method: Method
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


def check(
    profile: ReferenceProfile,
    current: pa.Table | Mapping[str, Any],
    settings: DriftSettings | None = None,
) -> DriftReport:
    """Compare the current window (an Arrow table or a mapping of arrays) with the profile.

    With effect sizes and `settings.thresholds` "calibrated", a column is held to the
    larger of its kind's threshold and the profile's calibrated one for it, if any; the
    calibration was made for windows of the monitor's length (see `calibrate`).

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
    thresholds = [settings.column_threshold(m[0], m[1], calibration) for m in measured]
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


# ---------------------------------------------------------------------------- statistics


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


_KS_BLOCK = 64  # every 64th value of each sample is a point of the coarse grid


def ks_statistic(a: Float64Array, b: Float64Array) -> float:
    """sup |F_a - F_b| of two sorted samples, bit for bit as scipy.stats.ks_2samp.

    Between two neighbouring grid points x < y, a value v has #a(<= x) <= #a(<= v) <=
    #a(< y), and so for b: that bounds the gap inside. Only intervals whose bound reaches
    the largest gap seen at a grid point are evaluated value by value. When that is a large
    share of the data (near-identical samples: the gap is flat), one linear merge of the
    two samples is cheaper.
    """
    n1, n2 = len(a), len(b)
    grid = np.concatenate((a[_KS_BLOCK - 1 :: _KS_BLOCK], b[_KS_BLOCK - 1 :: _KS_BLOCK]))
    grid.sort()
    # Counts at the grid points, framed by -inf (nothing below) and +inf (everything).
    a_le = _framed(np.searchsorted(a, grid, side="right"), n1)
    b_le = _framed(np.searchsorted(b, grid, side="right"), n2)
    a_lt = _framed(np.searchsorted(a, grid, side="left"), n1)
    b_lt = _framed(np.searchsorted(b, grid, side="left"), n2)
    # The gap F_a - F_b scaled by n1 * n2 is an exact integer.
    gap = np.abs(a_le * n2 - b_le * n1)
    best = int(gap.max())
    bound = np.maximum(a_lt[1:] * n2 - b_le[:-1] * n1, b_lt[1:] * n1 - a_le[:-1] * n2)
    # >= rather than >: ks_2samp's float D can differ in the last bit between points of
    # equal exact gap, and it takes the largest.
    open_ = np.flatnonzero(bound > best) if best == 0 else np.flatnonzero(bound >= best)
    a_from, a_to = a_le[open_], a_lt[open_ + 1]
    b_from, b_to = b_le[open_], b_lt[open_ + 1]
    if int((a_to - a_from).sum() + (b_to - b_from).sum()) > (n1 + n2) // 4:
        return _ks_by_merge(a, b)
    values = np.concatenate((a[_ranges(a_from, a_to)], b[_ranges(b_from, b_to)]))
    at_a = np.concatenate((a_le, np.searchsorted(a, values, side="right")))
    at_b = np.concatenate((b_le, np.searchsorted(b, values, side="right")))
    gap = np.abs(at_a * n2 - at_b * n1)
    top = gap == gap.max()
    # scipy's float expression at every point of maximal gap.
    return float(np.max(np.abs(at_a[top] / n1 - at_b[top] / n2)))


def _ks_by_merge(a: Float64Array, b: Float64Array) -> float:
    """ks_statistic by one linear merge of the two sorted samples (timsort on their
    concatenation), evaluating the CDF gap at every value."""
    n1, n2 = len(a), len(b)
    total = n1 + n2
    both = np.concatenate((a, b))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    # With c_k values of b among the first k + 1 merged ones,
    #   F_a - F_b = (k + 1 - c_k) / n1 - c_k / n2 = -(n1 + n2) / (n1 n2) * t_k,
    #   t_k = c_k - (k + 1) * n2 / (n1 + n2)   (exact t_k are multiples of 1 / total).
    index = np.int32 if total < 2**31 else np.int64  # int32: a cumsum five times faster
    cum_b = np.cumsum(order >= n1, dtype=index)
    del order
    t = np.arange(1, total + 1, dtype=np.float64)
    t *= n2 / total
    np.subtract(cum_b, t, out=t)
    np.abs(t, out=t)
    # Inside a run of equal values no CDF is evaluated: only at its last member.
    t[:-1][np.diff(merged) == 0] = -1.0
    top = np.flatnonzero(t >= t.max() - 0.5 / total)
    c_k = cum_b[top].astype(np.float64)
    return float(np.max(np.abs((top + 1 - c_k) / n1 - c_k / n2)))


def _framed(counts: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.int64]:
    return np.concatenate(([0], counts, [n])).astype(np.int64, copy=False)


def _ranges(starts: npt.NDArray[np.int64], stops: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The concatenation of arange(start, stop) for each pair."""
    lengths = np.maximum(stops - starts, 0)
    total = int(lengths.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def wasserstein(a: Float64Array, b: Float64Array) -> float:
    """Wasserstein-1 distance of two sorted samples: the area between their quantile
    functions, as scipy.stats.wasserstein_distance(a, b)."""
    n1, n2 = len(a), len(b)
    if n1 == n2:
        diff = a - b
        np.abs(diff, out=diff)
        return float(diff.sum()) / n1
    if n2 > n1:
        a, b, n1, n2 = b, a, n2, n1
    # Quantile step i of a covers u in (i/n1, (i+1)/n1]; b's step is no shorter, so b's
    # quantile there is b[low] and, if one of b's steps ends inside, b[low + 1] after it.
    # Lengths in units of 1 / (n1 n2), so they are exact integers.
    i_n2 = np.arange(0, n1 * n2, n2, dtype=np.int64)
    low = i_n2 // n1
    first = (low + 1) * n1 - i_n2
    del i_n2
    np.minimum(first, n2, out=first)
    high = low + (first < n2)
    area = np.abs(a - b[low])
    area *= first
    second = np.abs(a - b[high])
    second *= n2 - first
    area += second
    return float(area.sum()) / (float(n1) * float(n2))


def _numeric_psi(ref: Float64Array, cur: Float64Array, bins: int) -> float:
    n1 = len(ref)
    edges = np.unique(_quantiles(ref, np.arange(1, bins) / bins))
    # Bins (-inf, e1], (e1, e2], ..., (e_last, inf): values beyond the reference count too.
    ref_counts = np.diff(np.searchsorted(ref, edges, side="right"), prepend=0, append=n1)
    cur_counts = np.diff(np.searchsorted(cur, edges, side="right"), prepend=0, append=len(cur))
    return psi(ref_counts / n1, cur_counts / len(cur))


def _quantiles(ordered: Float64Array, q: Float64Array) -> Float64Array:
    """np.quantile(values, q) (method "linear") of sorted values, bit for bit, without
    np.quantile's partition pass over the data."""
    n = len(ordered)
    virtual = (n - 1) * q
    low = np.floor(virtual)
    gamma = virtual - low
    below = low.astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    a, b = ordered[below], ordered[above]
    step = b - a
    return np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)


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


def chi_square(ref_counts: Float64Array, cur_counts: Float64Array) -> float:
    """Pearson's chi-square on the 2 x K table [ref_counts; cur_counts], as
    scipy.stats.chi2_contingency(table, correction=False).statistic."""
    n1, n2 = ref_counts.sum(), cur_counts.sum()
    totals = ref_counts + cur_counts
    keep = totals > 0
    totals, ref_counts, cur_counts = totals[keep], ref_counts[keep], cur_counts[keep]
    expected_ref = totals * (n1 / (n1 + n2))
    expected_cur = totals * (n2 / (n1 + n2))
    return float(
        np.sum((ref_counts - expected_ref) ** 2 / expected_ref)
        + np.sum((cur_counts - expected_cur) ** 2 / expected_cur)
    )


def jensen_shannon(p: Float64Array, q: Float64Array) -> float:
    """Jensen–Shannon distance (natural log) of two count or share vectors, as
    scipy.spatial.distance.jensenshannon(p, q)."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    return math.sqrt(max(float(left.sum() + right.sum()) / 2, 0.0))


def psi(ref_shares: Float64Array, cur_shares: Float64Array) -> float:
    """Population stability index sum((r - c) * ln(r / c)).

    Empty bins get evidently's epsilon: the smallest non-zero share / 1e6 when that share
    is <= 1e-4, else 1e-4 (per side).
    """
    r, c = _fill_empty(ref_shares), _fill_empty(cur_shares)
    return float(np.sum((r - c) * np.log(r / c)))


def _fill_empty(shares: Float64Array) -> Float64Array:
    nonzero = shares[shares > 0]
    if len(nonzero) == len(shares):
        return shares
    smallest = float(nonzero.min())
    return np.where(shares == 0, smallest / 1e6 if smallest <= 1e-4 else 1e-4, shares)


def holm(p_values: Sequence[float] | Float64Array) -> Float64Array:
    """Holm step-down adjusted p-values.

    Sorted ascending, hypothesis i (1-based) is rejected while p_(j) <= alpha / (m - j + 1)
    for every j <= i; equivalently, adjusted p_(i) = max over j <= i of min(1, (m-j+1) p_(j))
    is <= alpha. Controls the chance of any false alarm at alpha, for any dependence.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


# ---------------------------------------------------------------------------- p-values
# Closed forms in numpy rather than scipy.special: importing scipy.special costs a fresh
# process about 0.3 s (it pulls in scipy's array-API layer, numpy.testing and numpy.f2py),
# more than a whole 10k-row check. tests/unit/test_drift.py holds them to scipy.special.

_SERIES = np.arange(1, 12, dtype=np.float64)


def kolmogorov_sf(z: float) -> float:
    """P(K > z) for the Kolmogorov distribution, as scipy.special.kolmogorov(z)."""
    if z <= 0:
        return 1.0
    if z < 1.18:
        # Jacobi theta form: converges in a few terms where the alternating series is slow.
        w = math.pi**2 / (8 * z * z)
        cdf = math.sqrt(2 * math.pi) / z * float(np.sum(np.exp(-((2 * _SERIES - 1) ** 2) * w)))
        return min(1.0, max(0.0, 1.0 - cdf))
    terms = np.exp(-2.0 * _SERIES**2 * z * z)
    return min(1.0, max(0.0, 2.0 * float(np.sum(terms[0::2]) - np.sum(terms[1::2]))))


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided asymptotic p-value of the two-sample KS statistic d.

    scipy.stats.ks_2samp(method="asymp") uses the one-sample distribution at
    n = round(n1 n2 / (n1 + n2)). This is the Kolmogorov limit with Vrbik's (2018) small-n
    correction, P(sqrt(n) D > z) ~ K(z + 1/(6 sqrt n) + (z - 1)/(4n)). Against scipy it is
    within 0.003 absolute for any n >= 10, and relative to p within 1% for p >= 1e-6 once
    n >= 2500 (3% at n = 500). Below 1e-6, where no threshold lives, only the exponent is
    meaningful: log10 p agrees within 2% for n >= 2500 (10% at n = 500).
    """
    if d <= 0:
        return 1.0
    n = float(max(1, round(n1 * n2 / (n1 + n2))))  # scipy's n, but never 0 (n1 = n2 = 1)
    z = math.sqrt(n) * d
    return kolmogorov_sf(z + 1 / (6 * math.sqrt(n)) + (z - 1) / (4 * n))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof), as scipy.special.chdtrc(dof, x).

    The regularised upper incomplete gamma Q(dof/2, x/2) has a finite sum for integer and
    half-integer shapes; its terms are positive, so the sum is summed in log space safely.
    """
    if dof <= 0 or x <= 0:
        return 1.0
    h = 0.5 * x
    k = dof // 2
    if dof % 2 == 0:
        # Q(k, h) = exp(-h) * sum_{i<k} h^i / i!
        i = np.arange(k, dtype=np.float64)
        log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1.0, k)))))
        log_terms = i * math.log(h) - log_factorial - h
        return min(1.0, float(np.sum(np.exp(log_terms))))
    # Q(k + 1/2, h) = erfc(sqrt h) + exp(-h) * sum_{i=1..k} h^(i - 1/2) / Gamma(i + 1/2)
    tail = math.erfc(math.sqrt(h))
    if k == 0:
        return tail
    i = np.arange(1, k + 1, dtype=np.float64)
    log_gamma = math.lgamma(0.5) + np.cumsum(np.log(i - 0.5))
    log_terms = (i - 0.5) * math.log(h) - log_gamma - h
    return min(1.0, tail + float(np.sum(np.exp(log_terms))))


# ---------------------------------------------------------------------------- input


def _sorted_finite(name: str, values: Any) -> tuple[Float64Array, int]:
    """The column's finite values as a new sorted float64 array, and the column's length."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        floats, length = _arrow_floats(name, values)
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            try:
                array = array.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(
                    f"column {name!r} is numeric in the drift profile but holds {array.dtype} values"
                ) from None
        floats, length = array.astype(np.float64, copy=False), len(array)
    ordered = np.sort(floats)
    # np.sort puts -inf first and +inf, NaN last: the finite values are one slice.
    low = int(np.searchsorted(ordered, -np.inf, side="right"))
    high = int(np.searchsorted(ordered, np.inf, side="left"))
    return ordered[low:high], length


def _arrow_floats(name: str, values: pa.Array | pa.ChunkedArray) -> tuple[Float64Array, int]:
    """The non-null values as float64 (possibly a read-only view), and the length.

    Read from the Arrow buffers: Array.to_numpy() imports pandas and pyarrow.compute
    imports in 80 ms, together half a second of a fresh process.
    """
    if not any(test(values.type) for test in _ARROW_NUMERIC):
        raise DataError(
            f"column {name!r} is numeric in the drift profile but has type {values.type} "
            "in the current data"
        )
    parts = []
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        if not len(chunk):
            continue
        if pa.types.is_boolean(chunk.type):
            raw: np.ndarray = _bits(chunk.buffers()[1], chunk.offset, len(chunk))
        elif chunk.type in _NUMPY_TYPES:
            dtype = np.dtype(_NUMPY_TYPES[chunk.type])
            raw = np.frombuffer(
                chunk.buffers()[1],
                dtype=dtype,
                count=len(chunk),
                offset=dtype.itemsize * chunk.offset,
            )
        else:  # decimals: rare enough to pay for pyarrow.compute
            import pyarrow.compute as pc

            return _arrow_floats(name, pc.cast(values, pa.float64()))
        valid = _valid(chunk)
        parts.append(raw if valid is None else raw[valid])
    if len(parts) == 1:
        return parts[0].astype(np.float64, copy=False), len(values)
    floats = np.concatenate(parts).astype(np.float64, copy=False) if parts else np.empty(0)
    return floats, len(values)


_NUMPY_TYPES: dict[pa.DataType, str] = {
    pa.float64(): "f8",
    pa.float32(): "f4",
    pa.float16(): "f2",
    pa.int8(): "i1",
    pa.int16(): "i2",
    pa.int32(): "i4",
    pa.int64(): "i8",
    pa.uint8(): "u1",
    pa.uint16(): "u2",
    pa.uint32(): "u4",
    pa.uint64(): "u8",
}


def _bits(buffer: pa.Buffer, offset: int, length: int) -> npt.NDArray[np.bool_]:
    """An Arrow bitmap (least significant bit first) as booleans."""
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
    return bits[offset : offset + length].view(np.bool_)


def _valid(array: pa.Array) -> npt.NDArray[np.bool_] | None:
    """Which slots of an array hold a value; None when all do."""
    if not array.null_count:
        return None
    return _bits(array.buffers()[0], array.offset, len(array))


def _category_counts(name: str, values: Any) -> tuple[dict[str, int], int]:
    """Counts per category (text form) without nulls or NaN, and the column's length."""
    counts: Counter[str] = Counter()
    pairs: Iterable[tuple[Any, int]]
    if isinstance(values, pa.Array | pa.ChunkedArray) and pa.types.is_dictionary(values.type):
        pairs = _dictionary_counts(values)
    elif isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc  # only here: it takes 80 ms to import

        table = pc.value_counts(values)
        pairs = zip(
            table.field("values").to_pylist(), table.field("counts").to_pylist(), strict=True
        )
    else:
        array = np.asarray(values)
        if array.dtype.kind in "biufUS":
            if array.dtype.kind == "f":
                array = array[~np.isnan(array)]
            keys, numbers = np.unique(array, return_counts=True)
            pairs = zip(keys.tolist(), numbers.tolist(), strict=True)
        else:
            pairs = Counter(array.tolist()).items()
    for key, count in pairs:
        text = _category_text(key)
        if text is not None:
            counts[text] += int(count)
    return dict(counts), len(values)


def _category_text(key: Any) -> str | None:
    """A category's text form; None for a null or NaN."""
    if key is None or (isinstance(key, float) and math.isnan(key)):
        return None
    if isinstance(key, float) and key.is_integer():
        key = int(key)  # 3.0 and 3 are one category: logs that went through JSON vary
    return str(key)


def _dictionary_counts(values: pa.Array | pa.ChunkedArray) -> list[tuple[Any, int]]:
    """(value, count) per dictionary entry: a bincount of the indices, chunk by chunk."""
    pairs: list[tuple[Any, int]] = []
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        indices = chunk.indices
        if not len(indices):
            continue
        width = indices.type.bit_width // 8
        dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(indices.type) else 'u'}{width}")
        codes = np.frombuffer(
            indices.buffers()[1], dtype=dtype, count=len(indices), offset=width * indices.offset
        )
        valid = _valid(indices)
        if valid is not None:
            codes = codes[valid]
        numbers = np.bincount(codes, minlength=len(chunk.dictionary))
        pairs.extend(zip(chunk.dictionary.to_pylist(), numbers.tolist(), strict=True))
    return pairs
