"""The champion's training snapshot: what the monitor and the drift report compare against.

Written by `split` from the training slice and stored with the model by `register`
(MLflow artifacts under `reference/`):
    profile.npz      the drift engine's reference side: sorted values and category counts
    sample.parquet   a bounded, seeded sample of the training features, for the HTML report
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ctpipe.data import tables
from ctpipe.data.schema import Schema

if TYPE_CHECKING:
    from ctpipe.config import Config

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
    `config.monitor.min_rows` rows (see ctpipe.drift.calibrate). It is made whatever
    `monitor.drift` says, because the monitor's config can change while this profile
    stays with the model; `monitor.drift` decides at check time whether it applies.
    The rows may come in any order: windows are cut by timestamp, not by position.
    """
    from ctpipe import drift

    features = train.select(schema.feature_names)
    profile = drift.build_profile_from_table(
        features, schema.numeric_features, schema.categorical_features
    )
    if config is not None and config.timestamp in train.column_names:
        from ctpipe.config import parse_duration

        calibration = drift.calibrate(
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


def write_snapshot(
    out_dir: str | Path, version: str | None, sample_file: Path | None, note: str = ""
) -> None:
    import json
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sample_file is not None:
        shutil.copyfile(sample_file, out / SAMPLE_FILE)
    (out / CHAMPION_FILE).write_text(
        json.dumps({"version": version, "sample": sample_file is not None, "note": note})
    )


def read_snapshot(out_dir: str | Path) -> ChampionSnapshot:
    import json

    out = Path(out_dir)
    record = json.loads((out / CHAMPION_FILE).read_text())
    sample = out / SAMPLE_FILE if record.get("sample") else None
    return ChampionSnapshot(record.get("version"), sample, record.get("note", ""))
