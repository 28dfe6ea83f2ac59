"""A deterministic synthetic tabular stream, with optional drift.

Used when no data is configured, by the demo, the tests and the benchmarks. The same
seed always gives the same rows, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

CATEGORY_LEVELS: dict[str, tuple[str, ...]] = {
    "region": ("north", "south", "east", "west"),
    "channel": ("web", "app", "store", "partner"),
    "device": ("ios", "android", "desktop"),
}
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Drift:
    """A change in the stream, starting at a fraction `at` of its length.

    `width` 0 makes it abrupt; otherwise it ramps in over that fraction of the stream.
    `covariate` shifts the first half of the numeric features (in standard deviations) and
    tilts the category mix; `concept` (0..1) moves the labelling rule towards a new one.
    """

    at: float
    width: float = 0.0
    covariate: float = 0.0
    concept: float = 0.0


def categorical_names(count: int) -> list[str]:
    named = list(CATEGORY_LEVELS)
    return named[:count] + [f"cat_{i}" for i in range(len(named), count)]


def _levels(name: str) -> tuple[str, ...]:
    return CATEGORY_LEVELS.get(name, tuple(f"{name}_v{i}" for i in range(6)))


def generate(
    rows: int,
    seed: int = 7,
    *,
    task: str = "classification",
    numeric: int = 8,
    categorical: int = 3,
    start: datetime = DEFAULT_START,
    days: float = 180.0,
    drifts: tuple[Drift, ...] = (),
    label_noise: float = 0.0,
    label_noise_until: float = 1.0,
    missing_rate: float = 0.01,
    world: int | None = None,
) -> pa.Table:
    """Rows in time order: request_id, event_time, num_*, categoricals, label.

    `label_noise` flips (or, for regression, scrambles) that share of labels among the
    rows before `label_noise_until` (a fraction of the stream): a way to make training
    data worse while the newest rows stay clean. `world` fixes the labelling rule and
    category mix independently of `seed`, which then only draws the rows.
    """
    rng = np.random.default_rng(seed)
    # The labelling rule and category mix depend on `world` (default: the seed), never on
    # the row count: fresh rows of one world come from another seed with the same world.
    rule = np.random.default_rng([seed if world is None else world, 1])
    beta_old = rule.normal(0, 1, numeric) / np.sqrt(max(numeric, 1)) * 1.6
    beta_new = rule.normal(0, 1, numeric) / np.sqrt(max(numeric, 1)) * 1.6
    cat_names = categorical_names(categorical)
    cat_effects = {name: rule.normal(0, 0.6, len(_levels(name))) for name in cat_names}
    cat_probs = {name: rule.dirichlet(np.full(len(_levels(name)), 4.0)) for name in cat_names}

    position = np.linspace(0.0, 1.0, rows)
    weights = [_ramp(position, d) for d in drifts]
    covariate = sum((w * d.covariate for w, d in zip(weights, drifts, strict=True)), np.zeros(rows))
    concept = np.clip(
        sum((w * d.concept for w, d in zip(weights, drifts, strict=True)), np.zeros(rows)), 0, 1
    )

    x = rng.normal(0.0, 1.0, (rows, numeric))
    x[:, : max(1, numeric // 2)] += covariate[:, None]
    logit = (1 - concept) * (x @ beta_old) + concept * (x @ beta_new)
    if numeric >= 2:
        logit += 0.5 * np.sin(2 * x[:, 0]) * (1 - concept) + 0.5 * (x[:, 1] ** 2 - 1) * concept

    columns: dict[str, pa.Array] = {}
    tilt = np.clip(np.abs(covariate) / 3.0, 0, 1)
    for name in cat_names:
        levels = _levels(name)
        base = cat_probs[name]
        # Under covariate drift the mix moves towards the rarest level.
        target = np.eye(len(levels))[int(np.argmin(base))]
        mix = (1 - tilt)[:, None] * base + tilt[:, None] * target
        codes = (
            (rng.random(rows)[:, None] > np.cumsum(mix, axis=1))
            .sum(axis=1)
            .clip(0, len(levels) - 1)
        )
        logit += cat_effects[name][codes] * (1 - concept) - cat_effects[name][codes] * concept
        columns[name] = pa.array(levels, pa.string()).take(pa.array(codes))

    span = days * 86400.0
    jitter = rng.uniform(0, span / max(rows, 1), rows)
    offsets = np.sort(position * span + jitter)
    stamps = np.datetime64(start.replace(tzinfo=None), "s") + (offsets * 1e6).astype(
        "timedelta64[us]"
    )

    noisy = (rng.random(rows) < label_noise) & (position < label_noise_until)
    if task == "classification":
        label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        label = np.where(noisy, 1 - label, label)
        label_array = pa.array(label)
    else:
        value = 10 * logit + 50 + rng.normal(0, 2.0, rows)
        value = np.where(noisy, rng.permutation(value), value)
        label_array = pa.array(np.round(value, 4))

    table: dict[str, pa.Array] = {
        "request_id": pa.array([f"r{seed:03d}-{i:07d}" for i in range(rows)]),
        "event_time": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
    }
    for j in range(numeric):
        values = np.round(x[:, j], 6)
        mask = rng.random(rows) < (missing_rate if j in (1, 2) else 0.0)
        table[f"num_{j}"] = pa.array(values, mask=mask)
    table.update(columns)
    table["label"] = label_array
    return pa.Table.from_pydict(table)


def _ramp(position: np.ndarray, drift: Drift) -> np.ndarray:
    if drift.width <= 0:
        return (position >= drift.at).astype(float)
    return np.clip((position - drift.at) / drift.width, 0.0, 1.0)


def write(table: pa.Table, path: str) -> None:
    """Write a table as CSV, Parquet or JSON Lines, chosen by the file extension."""
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, target)
    elif target.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pq.write_table(table, target)
    elif target.suffix in (".jsonl", ".ndjson"):
        import json

        with target.open("w") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row, default=_json_default) + "\n")
    else:
        raise ValueError(f"{path}: unknown extension; use .csv, .parquet or .jsonl")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
