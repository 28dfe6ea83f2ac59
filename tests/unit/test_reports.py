"""Reports for people say what they show: the evidently page's title and header (model,
version, windows, rows, ctpipe's verdict), the first run's profile page, and the timeline
and policy comparison plots (dates on the x axis, a legend entry per marker kind)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctpipe.config import DriftSettings
from ctpipe.drift import build_profile_from_table, compare
from ctpipe.drift import report as pages
from ctpipe.simulate import BatchRecord, Simulation

KINDS = {"x": "numeric", "colour": "categorical"}
START = datetime(2024, 3, 1, 8, 0)


def _table(rows: int, shift: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "x": rng.normal(shift, 1.0, rows),
            "colour": rng.choice(["red", "blue"], rows),
            "event_time": pa.array(
                [START + timedelta(minutes=i) for i in range(rows)], pa.timestamp("us")
            ),
        }
    )


def _title(html: str) -> str:
    titles = re.findall(r"<title>(.*?)</title>", html)
    return titles[0]


@pytest.fixture(scope="module")
def drift_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("page")
    reference = _table(300, 0.0, 1)
    pq.write_table(reference.select(["x", "colour"]), folder / "sample.parquet")
    current = _table(200, 3.0, 2)
    verdict = compare(
        build_profile_from_table(reference, ["x"], ["colour"]),
        current,
        DriftSettings(),
    )
    context = pages.PageContext(
        "churn <model> & co",
        "7",
        pages.Window("champion v7's training sample", pages.sample_rows(folder / "sample.parquet")),
        pages.Window.of("the monitor's window", current, "event_time"),
        verdict=verdict,
    )
    return pages.page(
        folder / "sample.parquet", current, KINDS, DriftSettings(), 150, context=context
    )


def test_the_drift_page_has_a_title_and_a_header_saying_what_it_compares(
    drift_page: str,
) -> None:
    assert _title(drift_page) == "ctpipe drift report: churn &lt;model&gt; &amp; co v7"
    assert drift_page.index("<title>ctpipe") < drift_page.index("</head>")
    body = drift_page.index("<body")
    header = drift_page[body : drift_page.index("</div>", body)]
    assert 'id="ctpipe-header"' in header
    assert "churn &lt;model&gt; &amp; co" in header and "<model>" not in header  # escaped
    assert "v7 (the champion compared against)" in header
    # both windows, their rows (and how many the page compares) and the current one's dates
    assert "champion v7&#x27;s training sample; 300 rows; 150 of them on this page" in header
    assert "the monitor&#x27;s window; 200 rows; 150 of them on this page" in header
    assert "2024-03-01 08:00 to 2024-03-01 11:19" in header
    assert "time range not recorded" in header  # the sample keeps no timestamps
    # ctpipe's own verdict: the shifted numeric column drifted
    assert "DRIFT: " in header and "drifted: x" in header and "of 2 columns" in header


def test_a_page_without_a_drift_check_says_not_checked(tmp_path: Path) -> None:
    reference = _table(50, 0.0, 1)
    pq.write_table(reference.select(["x", "colour"]), tmp_path / "sample.parquet")
    context = pages.PageContext(
        "m", "2", pages.Window("sample", 50), pages.Window.of("new data", reference, None)
    )
    html = pages.page(
        tmp_path / "sample.parquet", reference, KINDS, DriftSettings(), 100, context=context
    )
    assert escape(pages.NOT_CHECKED) in html
    assert "new data; 50 rows; all of them on this page; time range not recorded" in html


def test_verdict_text_names_the_drifted_columns() -> None:
    reference = _table(300, 0.0, 1)
    settings = DriftSettings()
    profile = build_profile_from_table(reference, ["x"], ["colour"])
    assert pages.verdict_text(compare(profile, reference, settings)).startswith(
        "no drift: 0 of 2 columns drifted (0%"
    )
    assert pages.verdict_text(None) == pages.NOT_CHECKED


def test_the_first_run_page_is_the_data_s_own_profile() -> None:
    data = _table(120, 0.0, 3)
    context = pages.PageContext(
        "churn",
        None,
        pages.Window("none: no champion yet"),
        pages.Window.of("the new data this run trains on", data, "event_time"),
        note=pages.FIRST_RUN_NOTE,
    )
    html = pages.profile_page(data, KINDS, 100, context=context)
    assert _title(html) == "ctpipe data profile: churn (first run)"
    assert "No drift report" not in html  # not the placeholder
    assert "first run: no champion to compare against; this is the data&#x27;s own profile" in html
    assert "none yet (no champion)" in html
    assert "120 rows; 100 of them on this page; 2024-03-01 08:00 to 2024-03-01 09:59" in html
    assert "DataSummaryPreset" in html or "Dataset" in html  # evidently's summary
    assert "colour" in html and len(html) > 100_000


def _simulation(tmp_path: Path) -> Simulation:

    actions = ["none", "submit", "skip", "submit", "blocked", "submit", "none"]
    batches = []
    for i, action in enumerate(actions):
        batches.append(
            BatchRecord(
                batch=4 + i,
                start=(START + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M"),
                rows=100,
                drift_share=0.1 * i,
                fired=["data_drift"] if action != "none" else [],
                action=action,
                champion="1",
                champion_after="2" if i == 1 else "1",
                metric=0.8 - 0.01 * i,
                run=f"run-{i}" if action == "submit" else None,
                blessed={1: True, 3: False, 5: None}.get(i),
                failed=i == 5,
            )
        )
    return Simulation(
        tmp_path,
        "auto",
        "roc_auc",
        batches=batches,
        retrains=3,
        promotions=1,
        failed_runs=1,
        title="ctpipe demo",
    )


def test_the_timeline_has_dates_a_legend_per_marker_and_the_caller_s_title(
    tmp_path: Path,
) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from ctpipe import simulate

    sim = _simulation(tmp_path)
    fig = simulate.figure(sim)
    try:
        top, bottom = fig.axes
        assert top.get_title().startswith("ctpipe demo\n")
        labels = {t.get_text() for axis in (top, bottom) for t in axis.get_legend().get_texts()}
        expected = {label for _, _, label in simulate.RUN_MARKS.values()}
        expected |= {label for _, _, label in simulate.HELD_MARKS.values()}
        assert expected <= labels
        assert {"prequential roc_auc", "drift share", "dataset drift threshold"} <= labels
        assert isinstance(bottom.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
        low, high = bottom.get_xlim()
        assert mdates.num2date(low).year == 2024 and mdates.num2date(high).year == 2024
    finally:
        plt.close(fig)
    simulate.plot(sim, tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 0


def test_the_policy_comparison_has_a_legend_entry_per_marker_kind(tmp_path: Path) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from ctpipe import policy_comparison

    summary = _simulation(tmp_path).summary()
    comparison = policy_comparison.build([summary], metric="roc_auc")
    fig = policy_comparison.figure(comparison, "ctpipe simulate: data.csv, policies compared")
    try:
        [axis] = fig.axes
        assert axis.get_title().startswith("ctpipe simulate: data.csv, policies compared")
        labels = {t.get_text() for t in axis.get_legend().get_texts()}
        assert {"retrain promoted", "retrain refused by the gate", "retrain run failed"} <= labels
        assert isinstance(axis.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    finally:
        plt.close(fig)


def test_a_reference_window_is_dated_by_the_champions_fit_record() -> None:
    from ctpipe.drift import report

    fit = {"rows": 1200, "start": "2026-03-01T00:00:00", "end": "2026-03-31T12:00:00+00:00"}
    window = report.Window.fitted("champion v3's training data", fit, rows=500)
    assert window.rows == 1200 and window.start is not None and window.end is not None
    assert window.start.tzinfo is not None and "2026-03-01" in window.span()
    unrecorded = report.Window.fitted("champion v1's training data", {}, rows=500)
    assert unrecorded.rows == 500 and unrecorded.span() == "time range not recorded"
