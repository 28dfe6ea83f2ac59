"""The evidently data-drift page: an HTML page for people, built off the decision path.

The only module that imports evidently (its import alone takes seconds), and only inside
`page` and `profile_page`. The pipeline's drift_report step, the monitor and `ctpipe
simulate` all build the champion's page here; each decides where it goes. Both sides are
bounded samples, and the page uses the same statistics and thresholds as the drift check
(normalised Wasserstein for numbers, Jensen-Shannon for categories), so what people read
matches what the monitor decided.

Every page opens with a header of its own (`PageContext`): which model and version the
data was compared against, both windows (what they are, their rows and time ranges) and
the verdict ctpipe's own drift check reached, which is what decides, not evidently's.
A first run, with no champion yet, gets `profile_page`: the data's own summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctpipe.drift.profile import CATEGORICAL, NUMERIC, sample

if TYPE_CHECKING:
    import pyarrow as pa

    from ctpipe.config import DriftSettings
    from ctpipe.drift.check import DriftReport

NO_REFERENCE_HTML = "<html><body><h2>No drift report</h2><p>{reason}</p></body></html>"
FIRST_RUN_NOTE = "first run: no champion to compare against; this is the data's own profile"
NOT_CHECKED = "not checked (ctpipe's drift check did not run for this page)"


@dataclass(frozen=True)
class Window:
    """One side of a page: what it is, its rows and, where known, its time range.

    rows: the rows in the whole window (the page may compare a sample of them);
    None when not known. start/end: its first and last timestamps.
    """

    name: str
    rows: int | None = None
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(cls, name: str, table: pa.Table, time_column: str | None = None) -> Window:
        """A window's rows, and its time range from `time_column` when the table has it."""
        start, end = time_range(table, time_column)
        return cls(name, table.num_rows, start, end)

    @classmethod
    def fitted(cls, name: str, fit: Mapping[str, Any], rows: int | None = None) -> Window:
        """The rows a model learned from, as its fit record says (rows, start, end)."""
        return cls(
            name,
            int(fit.get("rows") or 0) or rows,
            _moment(fit.get("start")),
            _moment(fit.get("end")),
        )

    def span(self) -> str:
        if self.start is None or self.end is None:
            return "time range not recorded"
        return f"{_when(self.start)} to {_when(self.end)}"


@dataclass(frozen=True)
class PageContext:
    """What a page's header says: the model, the champion version compared against (None
    on a first run), the two windows and ctpipe's own drift verdict (None: not checked).
    `note` is one more line at the top, e.g. why there is no comparison."""

    model: str
    version: str | None
    reference: Window
    current: Window
    verdict: DriftReport | None = None
    note: str = ""


def time_range(table: pa.Table, column: str | None) -> tuple[datetime | None, datetime | None]:
    """The first and last timestamp of `column`, or (None, None) when there is none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not column or column not in table.column_names or table.num_rows == 0:
        return None, None
    values = table.column(column)
    if not (pa.types.is_timestamp(values.type) or pa.types.is_date(values.type)):
        return None, None
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or high is None:
        return None, None
    return _datetime(low), _datetime(high)


def sample_rows(sample_file: str | Path) -> int:
    """The rows of a training sample (the Parquet file profile.write keeps), from its footer."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(str(sample_file)).metadata.num_rows)


def page(
    sample_file: str | Path,
    current: pa.Table,
    kinds: Mapping[str, str],
    settings: DriftSettings,
    rows: int,
    seed: int = 0,
    *,
    column_thresholds: Mapping[str, float] | None = None,
    context: PageContext | None = None,
) -> str:
    """An evidently DataDriftPreset page: the champion's training sample (`sample_file`,
    the Parquet file profile.write keeps) against `current`, at most `rows` rows a side,
    under a header saying what is compared (`context`).

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
    current_frame = sample(current, rows, seed).to_pandas()
    numeric, categorical = _columns(kinds, current_frame, reference)
    columns = [*numeric, *categorical]
    reference = _bounded(reference[columns], rows, seed)
    current_frame = _bounded(current_frame[columns], rows, seed)
    for name in categorical:  # evidently wants one type per categorical column
        reference[name] = reference[name].astype("string")
        current_frame[name] = current_frame[name].astype("string")
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
        Dataset.from_pandas(current_frame, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    context = context or PageContext(
        "unknown model", None, Window("reference sample"), Window("current data", current.num_rows)
    )
    title = f"ctpipe drift report: {context.model}" + (
        f" v{context.version}" if context.version is not None else ""
    )
    return _with_header(
        str(snapshot.get_html_str(as_iframe=False)),
        title,
        context,
        compared=(len(reference), len(current_frame)),
        columns=columns,
    )


def profile_page(
    current: pa.Table,
    kinds: Mapping[str, str],
    rows: int,
    seed: int = 0,
    *,
    context: PageContext,
) -> str:
    """The data's own profile (evidently's DataSummaryPreset: per-column statistics of at
    most `rows` rows of `current`), for a first run, which has no champion to compare
    with; the header says so (FIRST_RUN_NOTE, unless `context.note` says otherwise)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    frame = sample(current, rows, seed).to_pandas()
    numeric, categorical = _columns(kinds, frame, frame)
    columns = [*numeric, *categorical]
    frame = _bounded(frame[columns], rows, seed)
    for name in categorical:
        frame[name] = frame[name].astype("string")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataSummaryPreset()]).run(
        Dataset.from_pandas(frame, data_definition=definition), None
    )
    if not context.note:
        context = PageContext(
            context.model,
            context.version,
            context.reference,
            context.current,
            context.verdict,
            FIRST_RUN_NOTE,
        )
    return _with_header(
        str(snapshot.get_html_str(as_iframe=False)),
        f"ctpipe data profile: {context.model} (first run)",
        context,
        compared=(None, len(frame)),
        columns=columns,
    )


def header(
    context: PageContext,
    compared: tuple[int | None, int | None] = (None, None),
    columns: list[str] | None = None,
) -> str:
    """The header block: model and version, both windows, ctpipe's verdict. Escaped."""
    version = (
        f"v{context.version} (the champion compared against)"
        if context.version is not None
        else "none yet (no champion)"
    )
    rows = [
        ("Model", context.model),
        ("Champion version", version),
        ("Reference window", _window(context.reference, compared[0])),
        ("Current window", _window(context.current, compared[1])),
        ("ctpipe drift verdict", verdict_text(context.verdict)),
    ]
    if columns is not None:
        rows.append(("Columns on this page", ", ".join(columns) or "none"))
    cells = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">'
        f"{escape(name)}</th><td>{escape(value)}</td></tr>"
        for name, value in rows
    )
    note = f'<p style="font-weight:bold">{escape(context.note)}</p>' if context.note else ""
    return (
        '<div id="ctpipe-header" style="font-family:sans-serif;padding:12px 16px;'
        'border-bottom:1px solid #ccc;background:#f7f7f7">'
        f'<h1 style="font-size:20px;margin:0 0 8px">{escape(_heading(context))}</h1>'
        f'{note}<table style="font-size:14px">{cells}</table></div>'
    )


def verdict_text(verdict: DriftReport | None) -> str:
    """ctpipe's own verdict in words: drifted or not, the share, and which columns."""
    if verdict is None:
        return NOT_CHECKED
    drifted = verdict.drifted_columns
    total = len(verdict.columns)
    text = (
        f"{'DRIFT' if verdict.drifted else 'no drift'}: {len(drifted)} of {total} columns "
        f"drifted ({verdict.drift_share:.0%}; dataset drift at {verdict.settings.share:.0%} "
        f"or more, method {verdict.method})"
    )
    return text + (f"; drifted: {', '.join(drifted)}" if drifted else "")


def placeholder(reason: str) -> str:
    return NO_REFERENCE_HTML.format(reason=escape(reason))


def _heading(context: PageContext) -> str:
    if context.version is None:
        return f"ctpipe data profile: {context.model}"
    return f"ctpipe drift report: {context.model} v{context.version}"


def _window(window: Window, compared: int | None) -> str:
    parts = [window.name]
    if window.rows is not None:
        parts.append(f"{window.rows:,} rows")
    if compared is not None and window.rows is None:
        parts.append(f"{compared:,} rows on this page")
    elif compared is not None and compared != window.rows:
        parts.append(f"{compared:,} of them on this page")
    elif compared is not None:
        parts.append("all of them on this page")
    parts.append(window.span())
    return "; ".join(parts)


def _with_header(
    html: str,
    title: str,
    context: PageContext,
    *,
    compared: tuple[int | None, int | None],
    columns: list[str],
) -> str:
    """evidently's page with our <title> in its head and our header first in its body."""
    block = header(context, compared, columns)
    head = f"<title>{escape(title)}</title>"
    at = html.find("<head>")
    html = (
        html[: at + len("<head>")] + head + html[at + len("<head>") :]
        if at >= 0
        else f"<head>{head}</head>" + html
    )
    body = html.find("<body")
    if body < 0:
        return html + block
    end = html.find(">", body) + 1
    return html[:end] + block + html[end:]


def _columns(kinds: Mapping[str, str], current: Any, reference: Any) -> tuple[list[str], list[str]]:
    def present(name: str) -> bool:
        return name in current.columns and name in reference.columns

    numeric = [name for name, kind in kinds.items() if kind == NUMERIC and present(name)]
    categorical = [name for name, kind in kinds.items() if kind == CATEGORICAL and present(name)]
    return numeric, categorical


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day)  # a date


def _moment(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the fit record's times are UTC
    return moment


def _when(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.strftime("%Y-%m-%d %H:%M")


def _bounded(frame: Any, rows: int, seed: int) -> Any:
    if len(frame) <= rows:
        return frame.copy()
    return frame.sample(n=rows, random_state=seed).sort_index()
