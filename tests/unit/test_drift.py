"""The drift engine: each statistic against scipy, the profile, the verdicts, the edge cases."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import special, stats
from scipy.spatial import distance

from ctpipe import drift
from ctpipe.drift import DriftReport, DriftSettings, ReferenceProfile
from ctpipe.drift.stats import _ks_by_merge
from ctpipe.errors import DataError

# ------------------------------------------------------------------------ helpers


def numeric_stats(
    reference: np.ndarray, current: np.ndarray, **settings: object
) -> dict[str, float]:
    profile = drift.build_profile({"x": reference}, {"x": "numeric"})
    return drift.compare(profile, {"x": current}, DriftSettings(**settings)).column("x").statistics  # type: ignore[arg-type]


def categorical_stats(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    profile = drift.build_profile({"k": reference}, {"k": "categorical"})
    return drift.compare(profile, {"k": current}).column("k").statistics


def table_2xk(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    ref, cur = Counter(reference.tolist()), Counter(current.tolist())
    keys = sorted(set(ref) | set(cur))
    return np.array([[ref[k] for k in keys], [cur[k] for k in keys]])


SAMPLES = [
    # (n_ref, n_cur, mean shift, scale, decimals: None is continuous, else rounded -> ties)
    (1000, 1000, 0.0, 1.0, None),
    (2000, 700, 0.1, 1.2, None),
    (300, 2500, 0.5, 1.0, 1),
    (5000, 5000, 0.0, 1.0, 0),
    (40, 3000, 0.2, 0.7, 2),
    (1, 7, 0.0, 1.0, None),
]


def sample(seed: int, n_ref: int, n_cur: int, shift: float, scale: float, decimals: int | None):
    rng = np.random.default_rng(seed)
    ref, cur = rng.normal(0, 1, n_ref), rng.normal(shift, scale, n_cur)
    if decimals is not None:
        ref, cur = np.round(ref, decimals), np.round(cur, decimals)
    return ref, cur


# ------------------------------------------------------------------------ numeric statistics


@pytest.mark.parametrize("case", range(len(SAMPLES)))
def test_ks_statistic_is_scipys_bit_for_bit(case: int) -> None:
    ref, cur = sample(case, *SAMPLES[case])
    st = numeric_stats(ref, cur)
    assert st["ks"] == stats.ks_2samp(ref, cur, method="asymp").statistic


def test_ks_statistic_on_many_shapes_and_both_evaluation_paths() -> None:
    rng = np.random.default_rng(11)
    for trial in range(300):
        n1, n2 = int(rng.integers(1, 2000)), int(rng.integers(1, 2000))
        a = np.round(rng.normal(0, 1, n1), [None, 0, 1, 2][trial % 4] or 8)
        b = np.round(rng.normal(rng.choice([0, 0.05, 0.4]), 1, n2), [None, 0, 1, 2][trial % 4] or 8)
        if trial % 7 == 0:
            b = a.copy()  # a flat CDF gap: the path that merges the samples
        a.sort()
        b.sort()
        expected = stats.ks_2samp(a, b, method="asymp").statistic
        assert drift.ks_statistic(a, b) == expected
        assert _ks_by_merge(a, b) == expected


def test_ks_statistic_at_a_million_rows() -> None:
    rng = np.random.default_rng(5)
    a, b = np.sort(rng.normal(0, 1, 1_000_000)), np.sort(rng.normal(0.01, 1, 1_000_000))
    assert drift.ks_statistic(a, b) == stats.ks_2samp(a, b, method="asymp").statistic


@pytest.mark.parametrize("case", range(len(SAMPLES) - 1))
def test_ks_p_value_is_close_to_scipys_asymptotic_one(case: int) -> None:
    ref, cur = sample(case, *SAMPLES[case])
    ours = numeric_stats(ref, cur)["ks_p_value"]
    theirs = stats.ks_2samp(ref, cur, method="asymp").pvalue
    assert ours == pytest.approx(theirs, abs=0.003)
    n = len(ref) * len(cur) / (len(ref) + len(cur))
    if n >= 500 and theirs >= 1e-6:
        assert ours == pytest.approx(theirs, rel=0.035)


@pytest.mark.parametrize("n", [10, 100, 500, 2500, 10_000])
def test_ks_p_value_against_the_one_sample_distribution_scipy_uses(n: int) -> None:
    # ks_2samp(method="asymp") is kstwo.sf(D, round(n1 n2 / (n1 + n2))).
    d = np.linspace(0.05, 6.0, 150) / np.sqrt(n)
    d = d[d < 1]
    theirs = np.array([stats.kstwo.sf(x, n) for x in d])
    ours = np.array([drift.ks_p_value(float(x), 2 * n, 2 * n) for x in d])
    assert np.all(np.abs(ours - theirs) <= 0.003)
    if n >= 500:
        useful = theirs >= 1e-6
        tolerance = 0.035 if n < 2500 else 0.01
        assert np.all(np.abs(ours[useful] / theirs[useful] - 1) <= tolerance)


def test_kolmogorov_sf_matches_scipy_special() -> None:
    z = np.concatenate([np.linspace(0.001, 8, 2000), [1.1799, 1.18, 1.1801]])
    ours = np.array([drift.kolmogorov_sf(float(x)) for x in z])
    np.testing.assert_allclose(ours, special.kolmogorov(z), rtol=1e-12, atol=1e-15)
    assert drift.kolmogorov_sf(0.0) == 1.0


def test_ks_p_value_of_one_value_each_is_still_a_probability() -> None:
    # n1 n2 / (n1 + n2) = 0.5 rounds to 0, where scipy's kstwo returns nan.
    p = numeric_stats(np.array([1.0]), np.array([2.0]))["ks_p_value"]
    assert 0.0 < p < 1.0


@pytest.mark.parametrize("dof", [*range(1, 30), 99, 100, 999, 1000])
def test_chi2_sf_matches_scipy_special(dof: int) -> None:
    x = np.concatenate([np.linspace(0.01, 3 * dof + 60, 300), [float(dof)]])
    ours = np.array([drift.chi2_sf(float(v), dof) for v in x])
    np.testing.assert_allclose(ours, special.chdtrc(dof, x), rtol=1e-9, atol=1e-300)
    assert drift.chi2_sf(0.0, dof) == 1.0


@pytest.mark.parametrize("case", range(len(SAMPLES)))
def test_wasserstein_normalised_by_the_reference_std(case: int) -> None:
    ref, cur = sample(case, *SAMPLES[case])
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert numeric_stats(ref, cur)["wasserstein_norm"] == pytest.approx(expected, rel=1e-10)


def test_wasserstein_of_sorted_samples_unequal_sizes_and_ties() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        a = np.sort(np.round(rng.normal(0, 1, int(rng.integers(1, 3000))), 1))
        b = np.sort(np.round(rng.normal(0.3, 2, int(rng.integers(1, 3000))), 1))
        assert drift.wasserstein(a, b) == pytest.approx(
            stats.wasserstein_distance(a, b), rel=1e-10, abs=1e-14
        )


def reference_psi(ref: np.ndarray, cur: np.ndarray, bins: int) -> float:
    """PSI as written down: reference-quantile edges, right-closed bins open at both ends,
    evidently's epsilon for empty bins."""
    edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    shares = []
    for x in (ref, cur):
        counts = np.bincount(np.digitize(x, edges, right=True), minlength=len(edges) + 1)
        share = counts / len(x)
        smallest = share[share > 0].min()
        share[share == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
        shares.append(share)
    r, c = shares
    return float(np.sum((r - c) * np.log(r / c)))


@pytest.mark.parametrize("bins", [2, 10, 20])
@pytest.mark.parametrize("case", range(len(SAMPLES) - 1))
def test_numeric_psi_against_a_plain_implementation(case: int, bins: int) -> None:
    ref, cur = sample(case, *SAMPLES[case])
    ours = numeric_stats(ref, cur, psi_bins=bins)["psi"]
    assert ours == pytest.approx(reference_psi(ref, cur, bins), rel=1e-9, abs=1e-12)


def test_psi_is_zero_for_identical_data_and_positive_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 10_000)
    assert numeric_stats(ref, ref.copy())["psi"] == pytest.approx(0.0, abs=1e-12)
    assert numeric_stats(ref, ref + 0.5)["psi"] > 0.1


# ------------------------------------------------------------------------ categorical statistics

CATEGORY_CASES = [
    # (reference probabilities, current probabilities, n_ref, n_cur): the current may add
    # a category the reference never saw, or lose one.
    ([0.5, 0.5], [0.45, 0.55], 3000, 2000),
    ([0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], 5000, 5000),
    ([0.4, 0.3, 0.2, 0.1, 0.0], [0.3, 0.3, 0.2, 0.1, 0.1], 4000, 1500),
    ([0.2, 0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.0, 0.0, 0.0], 800, 900),
]


def categories(seed: int, p_ref, p_cur, n_ref: int, n_cur: int):
    rng = np.random.default_rng(seed)
    levels = np.array([f"level_{i}" for i in range(len(p_ref))])
    return rng.choice(levels, n_ref, p=p_ref), rng.choice(levels, n_cur, p=p_cur)


@pytest.mark.parametrize("case", range(len(CATEGORY_CASES)))
def test_chi_square_is_the_2xk_contingency_test_without_yates(case: int) -> None:
    ref, cur = categories(case, *CATEGORY_CASES[case])
    st = categorical_stats(ref, cur)
    table = table_2xk(ref, cur)
    expected = stats.chi2_contingency(table, correction=False)
    assert st["chi2"] == pytest.approx(expected.statistic, rel=1e-10)
    assert st["chi2_p_value"] == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-300)
    if table.shape[1] > 2:
        # scipy corrects only 2 x 2 tables (dof 1) by default, so beyond that they agree.
        default = stats.chi2_contingency(table)
        assert st["chi2"] == pytest.approx(default.statistic, rel=1e-10)


def test_chi_square_skips_the_yates_correction_scipy_applies_to_2x2() -> None:
    ref, cur = categories(0, *CATEGORY_CASES[0])
    st = categorical_stats(ref, cur)
    table = table_2xk(ref, cur)
    assert st["chi2"] > stats.chi2_contingency(table).statistic  # Yates shrinks it


@pytest.mark.parametrize("case", range(len(CATEGORY_CASES)))
def test_jensen_shannon_matches_scipy_natural_log(case: int) -> None:
    ref, cur = categories(case, *CATEGORY_CASES[case])
    table = table_2xk(ref, cur)
    st = categorical_stats(ref, cur)
    assert st["jensen_shannon"] == pytest.approx(
        distance.jensenshannon(table[0], table[1]), rel=1e-12, abs=1e-15
    )


def test_categorical_psi_with_a_category_the_reference_never_saw() -> None:
    ref = np.array(["a"] * 600 + ["b"] * 400)
    cur = np.array(["a"] * 500 + ["b"] * 300 + ["new"] * 200)
    st = categorical_stats(ref, cur)
    r, c = np.array([0.6, 0.4, 1e-4]), np.array([0.5, 0.3, 0.2])  # 1e-4: evidently's epsilon
    assert st["psi"] == pytest.approx(float(np.sum((r - c) * np.log(r / c))), rel=1e-12)
    assert np.isfinite(st["chi2"]) and st["chi2_p_value"] < 1e-30
    assert st["jensen_shannon"] == pytest.approx(
        distance.jensenshannon([600, 400, 0], [500, 300, 200]), rel=1e-12
    )


def test_categories_are_compared_by_their_text_form() -> None:
    profile = drift.build_profile({"k": np.array([1, 2, 2, 3])}, {"k": "categorical"})
    assert profile.columns["k"].categories == ("1", "2", "3")
    report = drift.compare(profile, pa.table({"k": pa.array([1, 2, 2, 3], pa.int32())}))
    assert report.column("k").statistics["chi2"] == 0.0
    for logged in (pa.array([1.0, 2.0, 2.0, 3.0]), pa.array(["1", "2", "2", "3"])):
        assert drift.compare(profile, {"k": logged}).column("k").statistics["chi2"] == 0.0
    halves = drift.build_profile({"k": np.array([0.5, 1.5])}, {"k": "categorical"})
    assert halves.columns["k"].categories == ("0.5", "1.5")


# ------------------------------------------------------------------------ the profile


def mixed_table(rows: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "amount": pa.array(
                rng.lognormal(3, 1, rows) * (1 + shift), mask=rng.random(rows) < 0.05
            ),
            "age": pa.array(rng.integers(18, 90, rows)),
            "region": pa.array(
                rng.choice(["north", "south", "east"], rows), mask=rng.random(rows) < 0.1
            ),
            "flag": pa.array(rng.random(rows) < 0.3),
        }
    )


def test_profile_round_trips_through_bytes_without_pickle() -> None:
    table = mixed_table(5000, 1)
    profile = drift.build_profile_from_table(
        table, ["amount", "age"], ["region", "flag"], metadata={"run_id": "abc"}
    )
    data = profile.to_bytes()
    with np.load(__import__("io").BytesIO(data), allow_pickle=False) as npz:
        assert "header" in npz.files
    loaded = ReferenceProfile.from_bytes(data)
    assert loaded.names == ["amount", "age", "region", "flag"]
    assert loaded.kinds == profile.kinds
    assert loaded.rows == 5000 and loaded.metadata == {"run_id": "abc"}
    for name in ("amount", "age"):
        a, b = profile.columns[name], loaded.columns[name]
        assert isinstance(a, drift.NumericReference) and isinstance(b, drift.NumericReference)
        assert np.array_equal(a.values, b.values)
        assert (a.rows, a.missing, a.mean, a.std) == (b.rows, b.missing, b.mean, b.std)
    region = loaded.columns["region"]
    assert isinstance(region, drift.CategoricalReference)
    assert dict(zip(region.categories, region.counts.tolist(), strict=True)) == dict(
        Counter(x for x in table.column("region").to_pylist() if x is not None)
    )
    assert region.missing == table.column("region").null_count
    current = mixed_table(3000, 2, shift=0.3)
    assert drift.compare(loaded, current).to_dict() == drift.compare(profile, current).to_dict()


def test_profile_from_bytes_rejects_garbage() -> None:
    with pytest.raises(DataError, match="drift profile"):
        ReferenceProfile.from_bytes(b"not a profile at all")
    buffer = __import__("io").BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps({"format": "other"}).encode(), np.uint8))
    with pytest.raises(DataError, match="format"):
        ReferenceProfile.from_bytes(buffer.getvalue())


def test_above_max_rows_the_profile_keeps_a_quantile_sketch_within_1_over_m() -> None:
    rng = np.random.default_rng(9)
    full = rng.normal(0, 1, 200_000)
    m = 1000
    sketched = drift.build_profile({"x": full}, {"x": "numeric"}, max_rows=m)
    exact = drift.build_profile({"x": full}, {"x": "numeric"})
    ref = sketched.columns["x"]
    assert isinstance(ref, drift.NumericReference)
    assert ref.sketched and len(ref.values) == m and ref.rows == 200_000
    assert ref.std == pytest.approx(np.std(full), rel=1e-12)  # of all values, not the sketch
    for shift in (0.0, 0.05, 0.3):
        current = rng.normal(shift, 1, 50_000)
        approx = drift.compare(sketched, {"x": current}).column("x").statistics
        truth = drift.compare(exact, {"x": current}).column("x").statistics
        assert abs(approx["ks"] - truth["ks"]) <= 1 / m
        assert approx["wasserstein_norm"] == pytest.approx(truth["wasserstein_norm"], abs=0.01)
    # The p-value uses the true reference size, not the sketch's.
    d = approx["ks"]
    assert approx["ks_p_value"] == drift.ks_p_value(d, 200_000, 50_000)


def test_build_profile_errors_name_the_column() -> None:
    with pytest.raises(DataError, match="'missing'"):
        drift.build_profile({"x": np.ones(3)}, {"missing": "numeric"})
    with pytest.raises(DataError, match=r"'x'.*no finite values"):
        drift.build_profile({"x": np.array([np.nan, np.inf])}, {"x": "numeric"})
    with pytest.raises(DataError, match="'k'"):
        drift.build_profile({"k": np.array([None, None], dtype=object)}, {"k": "categorical"})
    with pytest.raises(DataError, match="both"):
        drift.build_profile_from_table(mixed_table(10, 0), ["age"], ["age"])


# ------------------------------------------------------------------------ verdicts


def test_holm_adjusted_p_values_follow_the_step_down_rule() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        p = rng.uniform(0, 0.05, int(rng.integers(1, 25))) ** rng.uniform(0.5, 3)
        alpha = 0.05
        m = len(p)
        rejected = np.zeros(m, bool)
        for rank, i in enumerate(np.argsort(p, kind="stable")):
            if p[i] > alpha / (m - rank):
                break
            rejected[i] = True
        assert np.array_equal(drift.holm(p) <= alpha, rejected)
    np.testing.assert_allclose(drift.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def stable_columns(columns: int, rows: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    reference = {f"x{i}": rng.normal(i, 1 + i, rows) for i in range(columns)}
    current = {f"x{i}": rng.normal(i, 1 + i, rows) for i in range(columns)}
    return reference, current


def test_fifteen_stable_columns_at_large_n_raise_no_alarm() -> None:
    reference, current = stable_columns(15, 200_000, seed=3)
    profile = drift.build_profile(reference, dict.fromkeys(reference, "numeric"))
    for method in ("effect_size", "holm"):
        report = drift.compare(profile, current, DriftSettings(method=method))  # type: ignore[arg-type]
        assert report.drifted_columns == [] and not report.drifted


def test_holm_stays_quiet_where_raw_p_values_would_raise_alarms() -> None:
    reference, current = stable_columns(100, 2000, seed=8)
    profile = drift.build_profile(reference, dict.fromkeys(reference, "numeric"))
    report = drift.compare(profile, current, DriftSettings(method="holm"))
    raw_alarms = sum(c.statistics["ks_p_value"] < 0.05 for c in report.columns)
    assert raw_alarms >= 2  # what "p < 0.05 per column" would report
    assert report.drifted_columns == []


def test_a_tiny_shift_at_a_million_rows_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(12)
    profile = drift.build_profile({"x": rng.normal(0, 1, 1_000_000)}, {"x": "numeric"})
    current = {"x": rng.normal(0.05, 1, 1_000_000)}
    column = drift.compare(profile, current).column("x")
    assert column.statistics["ks_p_value"] < 1e-50
    assert column.score == column.statistics["wasserstein_norm"] == pytest.approx(0.05, abs=0.01)
    assert not column.drifted
    assert drift.compare(profile, current, DriftSettings(method="holm")).column("x").drifted


def four_columns(drifted: int, seed: int = 0) -> tuple[ReferenceProfile, dict]:
    rng = np.random.default_rng(seed)
    reference = {f"x{i}": rng.normal(0, 1, 5000) for i in range(4)}
    current = {f"x{i}": rng.normal(1.0 if i < drifted else 0.0, 1, 5000) for i in range(4)}
    return drift.build_profile(reference, dict.fromkeys(reference, "numeric")), current


def test_dataset_drift_when_the_drifted_share_reaches_share() -> None:
    profile, current = four_columns(drifted=1)
    report = drift.compare(profile, current)
    assert report.drifted_columns == ["x0"] and report.drift_share == 0.25
    assert report.drifted  # 0.25 >= the default share 0.25
    assert not drift.compare(profile, current, DriftSettings(share=0.3)).drifted
    column = report.column("x0")
    assert column.threshold == 0.1 and column.score >= 0.1
    assert report.column("x1").score < 0.1 and not report.column("x1").drifted


def test_holm_scores_are_adjusted_p_values_against_alpha() -> None:
    profile, current = four_columns(drifted=2)
    report = drift.compare(profile, current, DriftSettings(method="holm", alpha=0.01))
    raw = [c.statistics["ks_p_value"] for c in report.columns]
    assert [c.score for c in report.columns] == pytest.approx(list(drift.holm(raw)))
    assert all(c.threshold == 0.01 for c in report.columns)
    assert report.drifted_columns == ["x0", "x1"] and report.method == "holm"


def test_report_round_trips_through_json_and_renders() -> None:
    table = mixed_table(4000, 1)
    profile = drift.build_profile_from_table(table, ["amount", "age"], ["region", "flag"])
    report = drift.compare(profile, mixed_table(3000, 2, shift=0.5))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert DriftReport.from_dict(data) == report
    assert "amount" in report.drifted_columns
    assert "amount" in report.summary() and "1 of 4" in report.summary()
    lines = report.markdown().splitlines()
    assert len(lines) == 4 + 4 and lines[2].startswith("| column |")
    assert "| amount | numeric |" in report.markdown()


def test_null_shares_are_reported_and_nulls_left_out() -> None:
    table = mixed_table(4000, 1)
    profile = drift.build_profile_from_table(table, ["amount"], ["region"])
    current = pa.table(
        {
            "amount": pa.array([1.0, None, float("nan"), float("inf"), 2.0] * 100),
            "region": pa.array(["north", None, None, "south", "east"] * 100),
        }
    )
    report = drift.compare(profile, current)
    amount, region = report.column("amount"), report.column("region")
    assert amount.current_rows == 200 and amount.null_share_current == pytest.approx(0.6)
    assert region.current_rows == 300 and region.null_share_current == pytest.approx(0.4)
    assert amount.null_share_reference == pytest.approx(table.column("amount").null_count / 4000)
    assert amount.reference_rows == 4000 - table.column("amount").null_count
    assert report.current_rows == 500


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        DriftSettings(method="raw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share"):
        DriftSettings(share=0)
    with pytest.raises(ValueError, match="psi_bins"):
        DriftSettings(psi_bins=1)
    assert DriftSettings.from_dict(DriftSettings(alpha=0.01).to_dict()) == DriftSettings(alpha=0.01)


# ------------------------------------------------------------------------ edge cases


def test_an_empty_current_window_is_an_error() -> None:
    profile = drift.build_profile_from_table(mixed_table(100, 1), ["amount"], ["region"])
    with pytest.raises(DataError, match="the current window has no rows"):
        drift.compare(profile, mixed_table(100, 2).slice(0, 0))
    with pytest.raises(DataError, match="the current window has no rows"):
        drift.compare(profile, {"amount": np.array([]), "region": np.array([])})


def test_a_column_missing_from_the_current_data_is_named() -> None:
    profile = drift.build_profile_from_table(mixed_table(100, 1), ["amount", "age"], ["region"])
    with pytest.raises(DataError, match="'age'"):
        drift.compare(profile, mixed_table(100, 2).drop(["age"]))


def test_a_column_with_no_values_in_the_window_is_named() -> None:
    profile = drift.build_profile_from_table(mixed_table(100, 1), ["amount"], ["region"])
    current = pa.table(
        {"amount": pa.array([None, None], pa.float64()), "region": pa.array(["north", "east"])}
    )
    with pytest.raises(DataError, match=r"'amount'.*null"):
        drift.compare(profile, current)


def test_a_numeric_column_that_turned_into_text_is_named() -> None:
    profile = drift.build_profile({"x": np.arange(10.0)}, {"x": "numeric"})
    with pytest.raises(DataError, match=r"'x'.*string"):
        drift.compare(profile, pa.table({"x": pa.array(["1", "2"])}))


def test_a_constant_reference_uses_the_documented_scale_floor() -> None:
    stats_ = numeric_stats(np.full(1000, 5.0), np.full(1000, 5.0002))
    assert stats_["wasserstein_norm"] == pytest.approx(0.0002 / drift.WASSERSTEIN_MIN_SCALE)
    assert np.isfinite(stats_["psi"]) and stats_["ks"] == 1.0
    same = numeric_stats(np.full(1000, 5.0), np.full(500, 5.0))
    assert same["wasserstein_norm"] == 0.0 and same["ks"] == 0.0 and same["ks_p_value"] == 1.0


def test_unseen_categories_flag_drift() -> None:
    profile = drift.build_profile({"k": np.array(["a", "b"] * 500)}, {"k": "categorical"})
    report = drift.compare(profile, {"k": np.array(["a", "b", "c", "d"] * 250)})
    column = report.column("k")
    assert column.drifted and column.statistics["chi2_p_value"] < 1e-100


def test_unseen_names_what_the_training_data_never_had() -> None:
    rng = np.random.default_rng(3)
    profile = drift.build_profile(
        {
            "k": np.array(["a", "b"] * 500),
            "rate": np.full(1000, 0.0035),
            "x": rng.normal(size=1000),
        },
        {"k": "categorical", "rate": "numeric", "x": "numeric"},
    )
    same = pa.table(
        {"k": ["a", "b"] * 100, "rate": [0.0035] * 200, "x": rng.normal(size=200) + 5.0}
    )
    assert drift.unseen(profile, same) == {}  # drift (x moved by 5 std) is not unseen
    changed = pa.table(
        {
            "k": ["a", "c", "c", "d"] * 50,
            "rate": rng.uniform(0.001, 0.01, size=200),
            "x": rng.normal(size=200),
        }
    )
    assert drift.unseen(profile, changed) == {
        "k": "new categories 'c', 'd' (75% of values)",
        "rate": "came alive: constant 0.0035 in training",
    }
    stray = pa.table({"k": ["a"] * 999 + ["z"], "rate": [0.0035] * 1000, "x": [0.0] * 1000})
    assert drift.unseen(profile, stray) == {}  # one value in 1,000: below min_share
    assert drift.unseen(profile, stray, min_share=0.0005) == {
        "k": "new category 'z' (0% of values)"
    }
    assert drift.unseen(profile, pa.table({"x": [1.0, 2.0]})) == {}  # absent columns: no verdict


# ------------------------------------------------------------------------ Parquet and imports


def test_read_window_reads_the_profiled_columns_dictionary_encoded(tmp_path: Path) -> None:
    reference, current = mixed_table(3000, 1), mixed_table(2000, 2, shift=0.2)
    path = tmp_path / "current.parquet"
    pq.write_table(current, path, row_group_size=700)  # several chunks
    profile = drift.build_profile_from_table(reference, ["amount", "age"], ["region", "flag"])
    window = drift.read_window(path, profile)
    assert window.column_names == ["amount", "age", "region", "flag"]
    assert pa.types.is_dictionary(window.column("region").type)
    assert drift.compare(profile, window).to_dict() == drift.compare(profile, current).to_dict()
    with pytest.raises(DataError, match=r"current\.parquet.*'age'"):
        pq.write_table(current.drop(["age"]), path)
        drift.read_window(path, profile)
    with pytest.raises(DataError, match=r"nowhere\.parquet"):
        drift.read_window(tmp_path / "nowhere.parquet", profile)


STEP = """
import sys
from pathlib import Path
from ctpipe.drift import ReferenceProfile, compare, read_window
profile = ReferenceProfile.from_bytes(Path(sys.argv[1]).read_bytes())
report = compare(profile, read_window(sys.argv[2], profile))
print(report.drifted_columns)
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(","))))
"""


def test_a_fresh_check_imports_no_heavy_library(tmp_path: Path) -> None:
    reference, current = mixed_table(3000, 1), mixed_table(2000, 2, shift=0.5)
    profile = drift.build_profile_from_table(reference, ["amount", "age"], ["region", "flag"])
    (tmp_path / "profile.npz").write_bytes(profile.to_bytes())
    pq.write_table(current, tmp_path / "current.parquet")
    heavy = "pandas,scipy,evidently,sklearn,mlflow,torch"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            STEP,
            str(tmp_path / "profile.npz"),
            str(tmp_path / "current.parquet"),
            heavy,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    drifted, imported = result.stdout.strip().splitlines()[-2:]
    assert drifted == "['amount']"
    assert imported == "[]"
