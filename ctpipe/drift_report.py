"""The evidently data-drift report: an HTML page for people, built off the decision path.

The only module that imports evidently (its import alone takes seconds). Both sides are
bounded samples, and the report uses the same statistics and thresholds as ctpipe's
own drift engine (normalised Wasserstein for numbers, Jensen-Shannon for categories),
so what people read matches what the monitor decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctpipe.config import DriftRule

NO_REFERENCE_HTML = "<html><body><h2>No drift report</h2><p>{reason}</p></body></html>"


def html(
    reference: Any,
    current: Any,
    numeric: list[str],
    categorical: list[str],
    rule: DriftRule,
    max_rows: int = 5000,
    seed: int = 0,
    *,
    column_thresholds: Mapping[str, float] | None = None,
) -> str:
    """An evidently DataDriftPreset report comparing two pandas DataFrames.

    `column_thresholds` overrides the rule's threshold per column: pass the thresholds a
    drift check used (`{c.name: c.threshold for c in report.columns}`) so that calibrated
    ones show here too; without them the page uses the rule's fixed thresholds.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [
        c for c in [*numeric, *categorical] if c in current.columns and c in reference.columns
    ]
    numeric = [c for c in numeric if c in columns]
    categorical = [c for c in categorical if c in columns]
    reference = _bounded(reference[columns], max_rows, seed)
    current = _bounded(current[columns], max_rows, seed)
    for name in categorical:  # evidently wants one type per categorical column
        reference[name] = reference[name].astype("string")
        current[name] = current[name].astype("string")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    per_column = {
        name: float(value) for name, value in (column_thresholds or {}).items() if name in columns
    }
    preset = DataDriftPreset(
        num_method="wasserstein",
        num_threshold=rule.numeric_threshold,
        cat_method="jensenshannon",
        cat_threshold=rule.categorical_threshold,
        per_column_threshold=per_column or None,
        drift_share=rule.share,
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
