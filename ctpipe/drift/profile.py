"""The reference profile: what a drift check needs of the training data, built once and
stored with the model, with the thresholds calibrated on it; and the training snapshot it
belongs to.

Written by `split` from the training slice and stored with the model by `register`
(MLflow artifacts under `reference/`):
    profile.npz      the drift engine's reference side: sorted values and category counts
    sample.parquet   a bounded, seeded sample of the training features, for the HTML report
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ctpipe.drift.stats import (
    WASSERSTEIN_MIN_SCALE,
    Float64Array,
    _category_counts,
    _QuantileDistance,
    _row_codes,
    _row_floats,
    _sorted_finite,
    jensen_shannon,
)
from ctpipe.errors import DataError

if TYPE_CHECKING:
    from ctpipe.config import Config
    from ctpipe.data.schema import Schema

Kind = Literal["numeric", "categorical"]

NUMERIC: Kind = "numeric"
CATEGORICAL: Kind = "categorical"
KINDS: tuple[Kind, ...] = (NUMERIC, CATEGORICAL)

DEFAULT_MAX_ROWS = 1_000_000

PROFILE_FORMAT = "ctpipe.drift.profile"
PROFILE_VERSION = 2  # 2: a calibration in the header
READABLE_PROFILE_VERSIONS = (1, 2)
_HEADER_KEY = "header"

# Calibration: NannyML's reference chunks, median + 3 robust std (1.4826 MAD). Fewer than 3
# windows give no usable spread. More than 50 windows add little to a median and MAD but cost time on a
# million-row reference, so an evenly spaced 50 are scored (they still span every season).
CALIBRATION_SIGMAS = 3.0
MIN_CALIBRATION_WINDOWS = 3
MAX_CALIBRATION_WINDOWS = 50


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


def _duration_text(seconds: float) -> str:
    for unit, size in (("w", 604800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------- training snapshot


ARTIFACT_DIR = "reference"
PROFILE_FILE = "profile.npz"
SAMPLE_FILE = "sample.parquet"
SAMPLE_ROWS = 5000


@dataclass(frozen=True)
class ReferenceFiles:
    profile: Path
    sample: Path


def sample(table: pa.Table, rows: int, seed: int = 0) -> pa.Table:
    """At most `rows` rows, the same ones for the same table and seed, in table order."""
    if table.num_rows <= rows:
        return table
    picked = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=rows, replace=False))
    return table.take(pa.array(picked))


def write(
    train: pa.Table,
    schema: Schema,
    profile_out: str,
    sample_out: str,
    rows: int = SAMPLE_ROWS,
    config: Config | None = None,
) -> int:
    """Profile the training features and keep a sample of them; returns the rows profiled.

    With `config`, and `config.timestamp` in `train`, the profile also carries per-column
    drift thresholds calibrated on windows of `config.monitor.window` with at least
    `config.monitor.min_rows` rows (see `calibrate`). It is made whatever
    `monitor.drift` says, because the monitor's config can change while this profile
    stays with the model; `monitor.drift` decides at check time whether it applies.
    The rows may come in any order: windows are cut by timestamp, not by position.
    """
    from ctpipe.data import tables

    features = train.select(schema.feature_names)
    profile = build_profile_from_table(
        features, schema.numeric_features, schema.categorical_features
    )
    if config is not None and config.timestamp in train.column_names:
        from ctpipe.config import parse_duration

        calibration = calibrate(
            profile,
            features,
            train.column(config.timestamp),
            parse_duration(config.monitor.window),
            min_rows=config.monitor.min_rows,
        )
        profile = dataclasses.replace(profile, calibration=calibration)
    Path(profile_out).write_bytes(profile.to_bytes())
    tables.write(sample(features, rows), sample_out)
    return features.num_rows


CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class ChampionSnapshot:
    """The champion that evaluate judged against, as the drift report receives it: its
    version and its training sample (None, with a note saying why, when there is none)."""

    version: str | None
    sample: Path | None
    note: str = ""
    fit: dict[str, Any] = dataclasses.field(default_factory=dict)  # what it learned from


def write_snapshot(
    out_dir: str | Path,
    version: str | None,
    sample_file: Path | None,
    note: str = "",
    fit: dict[str, Any] | None = None,
) -> None:
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sample_file is not None:
        shutil.copyfile(sample_file, out / SAMPLE_FILE)
    (out / CHAMPION_FILE).write_text(
        json.dumps(
            {"version": version, "sample": sample_file is not None, "note": note, "fit": fit or {}}
        )
    )


def read_snapshot(out_dir: str | Path) -> ChampionSnapshot:
    out = Path(out_dir)
    record = json.loads((out / CHAMPION_FILE).read_text())
    sample = out / SAMPLE_FILE if record.get("sample") else None
    return ChampionSnapshot(
        record.get("version"), sample, record.get("note", ""), record.get("fit") or {}
    )
