"""The drift engine agrees with evidently 0.7 when both run the same tests and thresholds.

Where they differ by design (see ctpipe/drift/stats.py) the test says how: evidently's
"chisquare" is a goodness-of-fit test against the reference shares, ours the 2 x K
contingency test, so only clear verdicts and the relation between the statistics are
compared; numeric PSI bins differ, so only categorical PSI is compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from ctpipe import drift
from ctpipe.drift import DriftReport, DriftSettings

evidently = pytest.importorskip("evidently")
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

NUMERIC = ["n_stable", "n_lognormal", "n_shift", "n_scale", "n_tiny"]
CATEGORICAL = ["c_stable", "c_wide", "c_mix", "c_new"]
DRIFTED = {"n_shift", "n_scale", "c_mix", "c_new"}
# The reference is the bigger training slice: that is the usual shape, and it keeps
# evidently's goodness-of-fit chi-square close to the contingency one.
REFERENCE_ROWS, CURRENT_ROWS = 40_000, 5_000


def window(rows: int, seed: int, current: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "n_stable": rng.normal(0, 1, rows),
        "n_lognormal": rng.lognormal(2, 0.5, rows),
        "n_shift": rng.normal(0.5 if current else 0, 1, rows),
        "n_scale": rng.normal(10, 3 * (1.6 if current else 1), rows),
        "n_tiny": rng.normal(0.02 if current else 0, 1, rows),
    }
    data["n_stable"][rng.random(rows) < 0.02] = np.nan
    levels = np.array(["a", "b", "c", "d"])
    data["c_stable"] = rng.choice(levels, rows, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    data["c_stable"][rng.random(rows) < 0.05] = None
    data["c_wide"] = rng.choice([f"w{i}" for i in range(12)], rows)
    mix = [0.2, 0.25, 0.25, 0.3] if current else [0.4, 0.3, 0.2, 0.1]
    data["c_mix"] = rng.choice(levels, rows, p=mix)
    new_levels = np.array(["a", "b", "c", "new"])
    data["c_new"] = rng.choice(
        new_levels, rows, p=[0.5, 0.3, 0.1, 0.1] if current else [0.55, 0.33, 0.12, 0.0]
    )
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def windows() -> tuple[pd.DataFrame, pd.DataFrame]:
    return window(REFERENCE_ROWS, 1, current=False), window(CURRENT_ROWS, 2, current=True)


def ours(windows: tuple[pd.DataFrame, pd.DataFrame], **settings: Any) -> DriftReport:
    reference, current = (pa.Table.from_pandas(w, preserve_index=False) for w in windows)
    profile = drift.build_profile_from_table(reference, NUMERIC, CATEGORICAL)
    return drift.compare(profile, current, DriftSettings(**settings))


def theirs(
    windows: tuple[pd.DataFrame, pd.DataFrame], **preset: Any
) -> tuple[dict[str, tuple[float, bool]], dict[str, Any]]:
    """evidently's per-column (score, drifted) and its dataset-level count."""
    reference, current = windows
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset(**preset)], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    scores, count = {}, {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = float(metric["value"])
        elif config["type"].endswith("DriftedColumnsCount"):
            count = metric["value"]
    flags = {}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            flags[params["column"]] = test["status"] == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            count["dataset_drift"] = test["status"] == "FAIL"
    assert set(scores) == set(flags) == set(NUMERIC + CATEGORICAL)
    return {c: (scores[c], flags[c]) for c in scores}, count


def test_default_effect_size_verdicts_match_evidentlys_defaults(windows) -> None:
    # Above 1,000 rows evidently picks normed Wasserstein (numeric) and Jensen-Shannon
    # (categorical) at 0.1: our defaults, so whole verdicts can be compared.
    report = ours(windows)
    evidently_columns, count = theirs(windows, drift_share=0.25)
    for column in report.columns:
        score, drifted = evidently_columns[column.name]
        assert column.score == pytest.approx(score, rel=1e-9), column.name
        assert column.drifted == drifted, column.name
    assert set(report.drifted_columns) == DRIFTED
    assert report.drift_share == pytest.approx(count["share"])
    assert report.drifted == count["dataset_drift"]


def test_explicit_wasserstein_and_jensen_shannon_thresholds(windows) -> None:
    # Thresholds that split the stable columns: the tiny shift and the wide category
    # drift, the others do not, in both engines.
    report = ours(windows, numeric_threshold=0.032, categorical_threshold=0.014)
    evidently_columns, _ = theirs(
        windows,
        num_method="wasserstein",
        cat_method="jensenshannon",
        num_threshold=0.032,
        cat_threshold=0.014,
    )
    assert {c.name: c.drifted for c in report.columns} == {
        name: flag for name, (_, flag) in evidently_columns.items()
    }
    assert set(report.drifted_columns) == DRIFTED | {"n_tiny", "c_wide"}


def test_ks_p_values_and_decisions_match(windows) -> None:
    report = ours(windows)
    evidently_columns, _ = theirs(windows, num_method="ks", num_threshold=0.05)
    for name in NUMERIC:
        p_value, drifted = evidently_columns[name]
        ours_p = report.column(name).statistics["ks_p_value"]
        # Both asymptotic here (evidently's ks_2samp is exact only up to 10,000 rows).
        assert ours_p == pytest.approx(p_value, rel=0.035, abs=1e-12), name
        assert (ours_p <= 0.05) == drifted, name
    # Raw p <= 0.05 flags a stable column and the negligible shift: why it is no verdict.
    assert {n for n in NUMERIC if evidently_columns[n][1]} == {
        "n_shift",
        "n_scale",
        "n_lognormal",
        "n_tiny",
    }


# evidently's goodness-of-fit divides by a zero expected count for the new category.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_chi_square_decisions_match_and_statistics_relate_as_documented(windows) -> None:
    report = ours(windows)
    evidently_columns, _ = theirs(windows, cat_method="chisquare", cat_threshold=0.05)
    for name in CATEGORICAL:
        p_value, drifted = evidently_columns[name]
        column = report.column(name)
        assert (column.statistics["chi2_p_value"] < 0.05) == drifted, name
        assert drifted == (name in DRIFTED)
        if name not in DRIFTED:
            # Goodness of fit ~ contingency * (n_ref + n_cur) / n_ref under no drift.
            dof = len(set(windows[0][name].dropna()) | set(windows[1][name].dropna())) - 1
            goodness_of_fit = stats.chi2.isf(p_value, dof)
            scale = (column.reference_rows + column.current_rows) / column.reference_rows
            assert column.statistics["chi2"] * scale == pytest.approx(goodness_of_fit, rel=0.1)


def test_categorical_psi_matches_evidentlys(windows) -> None:
    report = ours(windows)
    evidently_columns, _ = theirs(windows, cat_method="psi", cat_threshold=0.1)
    for name in CATEGORICAL:
        psi, drifted = evidently_columns[name]
        assert report.column(name).statistics["psi"] == pytest.approx(psi, rel=1e-9), name
        assert (report.column(name).statistics["psi"] >= 0.1) == drifted, name
