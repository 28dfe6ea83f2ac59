"""The evidently data-drift page: an HTML page for people, built off the decision path.

The only module that imports evidently (its import alone takes seconds), and only inside
`page`. The pipeline's drift_report step, the monitor and `ctpipe simulate` all build the
champion's page here; each decides where it goes. Both sides are bounded samples, and the
page uses the same statistics and thresholds as the drift check (normalised Wasserstein
for numbers, Jensen-Shannon for categories), so what people read matches what the monitor
decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctpipe.drift.profile import CATEGORICAL, NUMERIC, sample

if TYPE_CHECKING:
    import pyarrow as pa

    from ctpipe.config import DriftSettings

NO_REFERENCE_HTML = "<html><body><h2>No drift report</h2><p>{reason}</p></body></html>"


def page(
    sample_file: str | Path,
    current: pa.Table,
    kinds: Mapping[str, str],
    settings: DriftSettings,
    rows: int,
    seed: int = 0,
    *,
    column_thresholds: Mapping[str, float] | None = None,
) -> str:
    """An evidently DataDriftPreset page: the champion's training sample (`sample_file`,
    the Parquet file profile.write keeps) against `current`, at most `rows` rows a side.

    `kinds` maps the columns to compare to "numeric" or "categorical" (a schema's
    features, a profile's or a drift check's columns); columns either side lacks are left
    out. `column_thresholds` overrides the settings' threshold per column: pass the
    thresholds a drift check used (`{c.name: c.threshold for c in report.columns}`) so
    that calibrated ones show here too; without them the page uses the settings' fixed
    thresholds.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from ctpipe.data import tables

    reference = tables.read(str(sample_file)).to_pandas()
    current = sample(current, rows, seed).to_pandas()
    numeric = [name for name, kind in kinds.items() if kind == NUMERIC]
    categorical = [name for name, kind in kinds.items() if kind == CATEGORICAL]
    columns = [
        c for c in [*numeric, *categorical] if c in current.columns and c in reference.columns
    ]
    numeric = [c for c in numeric if c in columns]
    categorical = [c for c in categorical if c in columns]
    reference = _bounded(reference[columns], rows, seed)
    current = _bounded(current[columns], rows, seed)
    for name in categorical:  # evidently wants one type per categorical column
        reference[name] = reference[name].astype("string")
        current[name] = current[name].astype("string")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    per_column = {
        name: float(value) for name, value in (column_thresholds or {}).items() if name in columns
    }
    preset = DataDriftPreset(
        num_method="wasserstein",
        num_threshold=settings.numeric_threshold,
        cat_method="jensenshannon",
        cat_threshold=settings.categorical_threshold,
        per_column_threshold=per_column or None,
        drift_share=settings.share,
    )
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return str(snapshot.get_html_str(as_iframe=False))


def placeholder(reason: str) -> str:
    from html import escape

    return NO_REFERENCE_HTML.format(reason=escape(reason))


def _bounded(frame: Any, rows: int, seed: int) -> Any:
    if len(frame) <= rows:
        return frame.copy()
    return frame.sample(n=rows, random_state=seed).sort_index()
