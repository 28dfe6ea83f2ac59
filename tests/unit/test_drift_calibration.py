"""Calibrated drift thresholds: each column is held to its own window-to-window variation
in the training data, so seasonal columns stop drifting on every check while real shifts
still do."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ctpipe import drift
from ctpipe.config import Config, Monitor
from ctpipe.data.schema import ColumnSchema, Schema
from ctpipe.drift import Calibration, DriftReport, DriftSettings, ReferenceProfile
from ctpipe.drift import profile as reference
from ctpipe.drift.stats import _QuantileDistance
from ctpipe.errors import DataError

DAY = 86400.0
MONTH = 30 * DAY
PER_DAY = 50
START = datetime(2023, 1, 1, tzinfo=UTC)
NUMERIC = ["price", "steady"]
CATEGORICAL = ["weather"]
FIXED = DriftSettings(thresholds="fixed")
CALIBRATED = DriftSettings()


def seasonal(first_day: int, days: int, seed: int) -> pa.Table:
    """`days` days from START + first_day, PER_DAY rows a day at random times of day.

    price: a yearly sine (amplitude 10) plus unit noise; steady: stationary N(5, 2);
    weather: hot / cold / mild, hot in summer and cold in winter.
    """
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(first_day, first_day + days), PER_DAY).astype(np.float64)
    day += rng.random(len(day))
    phase = np.sin(2 * np.pi * (day - 105) / 365.0)  # highest in mid July
    summer = (1 + phase) / 2
    hot = 0.1 + 0.6 * summer
    pick = rng.random(len(day))
    weather = np.where(pick < hot, "hot", np.where(pick < 0.8, "cold", "mild"))
    micros = (START.timestamp() + day * DAY) * 1e6
    return pa.table(
        {
            "ts": pa.array(micros.astype(np.int64), type=pa.timestamp("us", tz="UTC")),
            "price": 10 * phase + rng.normal(0, 1, len(day)),
            "steady": rng.normal(5, 2, len(day)),
            "weather": weather,
        }
    )


def profile_of(table: pa.Table, window: float = MONTH, min_rows: int = 200) -> ReferenceProfile:
    profile = drift.build_profile_from_table(table, NUMERIC, CATEGORICAL)
    calibration = drift.calibrate(profile, table, table.column("ts"), window, min_rows=min_rows)
    return dataclasses.replace(profile, calibration=calibration)


@pytest.fixture(scope="module")
def year() -> pa.Table:
    return seasonal(0, 365, seed=1)


@pytest.fixture(scope="module")
def profile(year: pa.Table) -> ReferenceProfile:
    return profile_of(year)


@pytest.fixture(scope="module")
def next_summer() -> pa.Table:
    """30 days of July a year after the training data starts: the same season."""
    return seasonal(365 + 181, 30, seed=2)


# ------------------------------------------------------------------------ seasonal columns


def test_a_seasonal_window_drifts_on_fixed_thresholds_but_not_on_calibrated_ones(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    fixed = drift.compare(profile, next_summer, FIXED)
    assert fixed.column("price").drifted and fixed.column("weather").drifted
    assert fixed.column("price").threshold_source == "fixed"

    calibrated = drift.compare(profile, next_summer, CALIBRATED)
    price, weather = calibrated.column("price"), calibrated.column("weather")
    assert not price.drifted and not weather.drifted
    assert price.threshold_source == weather.threshold_source == "calibrated"
    assert calibration_of(profile).thresholds["price"] == price.threshold > price.score
    assert calibration_of(profile).thresholds["weather"] == weather.threshold > weather.score
    # The statistics themselves do not change: only the bar they are held to.
    assert price.score == fixed.column("price").score
    assert not calibrated.drifted and fixed.drifted


def test_a_real_level_shift_still_drifts_under_calibrated_thresholds(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    price_ref = profile.columns["price"]
    assert isinstance(price_ref, drift.NumericReference)
    shifted_price = pa.array(next_summer.column("price").to_numpy() + 3 * price_ref.std)
    rng = np.random.default_rng(3)
    weather = np.array(next_summer.column("weather").to_pylist(), dtype=object)
    weather[rng.random(len(weather)) < 0.6] = "storm"  # a category training never saw
    current = next_summer.set_column(1, "price", shifted_price).set_column(
        3, "weather", pa.array(weather.tolist())
    )
    report = drift.compare(profile, current, CALIBRATED)
    assert report.column("price").threshold_source == "calibrated"
    assert report.column("price").drifted and report.column("weather").drifted
    assert not report.column("steady").drifted


def test_the_calibrated_threshold_is_median_plus_3_robust_std_of_each_window_as_a_check_scores_it(
    year: pa.Table, profile: ReferenceProfile
) -> None:
    """Slice the year into 30-day windows counted back from the newest row, check each
    window on its own, and redo the arithmetic: an independent path to the same numbers."""
    seconds = year.column("ts").cast(pa.int64()).to_numpy() / 1e6
    span = np.floor((seconds.max() - seconds) / MONTH).astype(int)
    scores: dict[str, list[float]] = {"price": [], "steady": [], "weather": []}
    # 365 days give 12 full windows and a 5-day sliver, which is left out.
    for k in range(12):
        window = year.filter(pa.array(span == k))
        report = drift.compare(profile, window, FIXED)
        for name in scores:
            column = report.column(name)
            # Each window is part of the reference: scored as if from outside it.
            outside = 1 - column.current_rows / column.reference_rows
            scores[name].append(column.score / outside)
    calibration = calibration_of(profile)
    assert calibration.windows == calibration.available == 12
    assert calibration.window_seconds == MONTH and calibration.min_rows == 200
    for name, values in scores.items():
        median = np.median(values)
        expected = median + 3 * 1.4826 * np.median(np.abs(np.asarray(values) - median))
        assert calibration.thresholds[name] == pytest.approx(expected, rel=1e-9)


def test_a_change_inside_the_training_data_does_not_blind_the_calibration() -> None:
    """Ten quiet windows and two after a level shift: mean + 3 std would set the bar above
    the shift itself; the robust limit stays near the quiet windows' spread."""
    scores = [0.05, 0.06, 0.05, 0.07, 0.06, 0.05, 0.06, 0.05, 0.07, 0.06, 0.9, 0.95]
    assert drift.robust_limit(scores) < 0.15
    assert np.mean(scores) + 3 * np.std(scores, ddof=1) > 0.9
    seasonal = list(np.abs(np.sin(np.linspace(0, np.pi, 12))) * 0.6)  # spread over the year
    assert drift.robust_limit(seasonal) >= max(seasonal)


# ------------------------------------------------------------------------ stationary column


def test_a_stationary_column_keeps_the_fixed_threshold_and_its_sensitivity(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    learned = calibration_of(profile).thresholds["steady"]
    # Window-to-window noise of 1,500 rows is far below a 0.1 std effect.
    assert 0 < learned < FIXED.numeric_threshold
    report = drift.compare(profile, next_summer, CALIBRATED)
    steady = report.column("steady")
    assert steady.threshold == FIXED.numeric_threshold and steady.threshold_source == "fixed"
    assert not steady.drifted

    shifted = next_summer.set_column(
        2, "steady", pa.array(next_summer.column("steady").to_numpy() + 0.3 * 2)
    )
    assert drift.compare(profile, shifted, CALIBRATED).column("steady").drifted


def test_calibration_never_lowers_a_threshold_below_the_fixed_one(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    strict = DriftSettings(numeric_threshold=50.0, categorical_threshold=0.8)
    report = drift.compare(profile, next_summer, strict)
    assert all(c.threshold_source == "fixed" for c in report.columns)
    assert report.column("price").threshold == 50.0
    assert report.column("weather").threshold == 0.8


# ------------------------------------------------------------------------ no calibration


def test_too_few_windows_give_no_calibration_and_say_why(next_summer: pa.Table) -> None:
    two_months = seasonal(150, 60, seed=4)
    profile = profile_of(two_months)
    calibration = calibration_of(profile)
    assert calibration.thresholds == {} and calibration.windows == 0
    assert calibration.available == 2
    assert "only 2 training window(s) of 30d" in calibration.reason

    report = drift.compare(profile, next_summer, CALIBRATED)
    assert all(c.threshold_source == "fixed" for c in report.columns)
    assert report.column("price").threshold == CALIBRATED.numeric_threshold
    assert report.calibrated_windows == 0 and report.calibration_note == calibration.reason
    assert calibration.reason in report.summary()

    # Windows with fewer than min_rows rows do not count either.
    sparse = calibration_of(profile_of(seasonal(0, 365, seed=5), min_rows=PER_DAY * 31))
    assert sparse.available == 0 and "with >= 1550 rows" in sparse.reason


def test_windows_beyond_the_bound_are_thinned_evenly(year: pa.Table) -> None:
    calibration = calibration_of(profile_of(year, window=3 * DAY, min_rows=50))
    # 365 days: 121 windows of 3 days, and 2 days more: over half a window, so it counts.
    assert calibration.available == 122
    assert calibration.windows == drift.MAX_CALIBRATION_WINDOWS
    assert set(calibration.thresholds) == {"price", "steady", "weather"}


def test_timestamps_in_any_form_and_rows_in_any_order_calibrate_alike(year: pa.Table) -> None:
    profile = drift.build_profile_from_table(year, NUMERIC, CATEGORICAL)
    expected = drift.calibrate(profile, year, year.column("ts"), MONTH, min_rows=200)
    seconds = year.column("ts").cast(pa.int64()).to_numpy() / 1e6
    as_numpy = {name: year.column(name).to_numpy() for name in [*NUMERIC, *CATEGORICAL]}
    assert drift.calibrate(profile, as_numpy, seconds, MONTH, min_rows=200) == expected
    stamps = seconds.astype("datetime64[s]")
    assert drift.calibrate(profile, year, stamps, MONTH, min_rows=200) == expected
    shuffled = year.take(pa.array(np.random.default_rng(6).permutation(year.num_rows)))
    got = drift.calibrate(profile, shuffled, shuffled.column("ts"), MONTH, min_rows=200)
    assert got.thresholds == pytest.approx(expected.thresholds, rel=1e-12)
    with pytest.raises(DataError, match="timestamps for"):
        drift.calibrate(profile, year, seconds[:-1], MONTH)


def test_the_holm_method_ignores_calibration(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    report = drift.compare(profile, next_summer, DriftSettings(method="holm"))
    assert all(c.threshold == 0.05 and c.threshold_source == "fixed" for c in report.columns)
    assert report.calibrated_windows == 0 and report.calibration_note == ""


def test_settings_check_the_thresholds_mode() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        DriftSettings(thresholds="auto")  # type: ignore[arg-type]
    assert DriftSettings().thresholds == "calibrated"


# ------------------------------------------------------------------------ storage


def test_the_calibration_round_trips_through_profile_bytes(profile: ReferenceProfile) -> None:
    loaded = ReferenceProfile.from_bytes(profile.to_bytes())
    assert loaded.calibration == profile.calibration
    assert header_of(profile.to_bytes())["version"] == drift.PROFILE_VERSION == 2


def test_a_version_1_profile_loads_and_checks_with_fixed_thresholds(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    old = rewrite_header(profile.to_bytes(), version=1, calibration=...)
    loaded = ReferenceProfile.from_bytes(old)
    assert loaded.calibration is None and loaded.names == profile.names
    report = drift.compare(loaded, next_summer, CALIBRATED)
    assert all(c.threshold_source == "fixed" for c in report.columns)
    assert report.column("price").drifted
    assert report.calibration_note == "the reference profile has no calibration"
    assert "fixed: the reference profile has no calibration" in report.summary()

    with pytest.raises(DataError, match="version 3 is not supported"):
        ReferenceProfile.from_bytes(rewrite_header(profile.to_bytes(), version=3))
    with pytest.raises(DataError, match="calibration"):
        ReferenceProfile.from_bytes(rewrite_header(profile.to_bytes(), calibration=[1, 2]))


def test_reference_write_stores_the_calibration_when_given_the_config(
    year: pa.Table, tmp_path: Path
) -> None:
    train = year.append_column("y", pa.array(np.arange(year.num_rows, dtype=np.float64)))
    train = train.take(pa.array(np.random.default_rng(7).permutation(train.num_rows)))
    schema = schema_of(train)
    config = Config(
        task="regression",
        target="y",
        timestamp="ts",
        monitor=Monitor(window="30d", min_rows=200, drift=DriftSettings(thresholds="fixed")),
    )
    profile_out, sample_out = tmp_path / "profile.npz", tmp_path / "sample.parquet"
    reference.write(train, schema, str(profile_out), str(sample_out), rows=100, config=config)
    stored = ReferenceProfile.from_bytes(profile_out.read_bytes())
    expected = calibration_of(profile_of(year))
    assert stored.calibration is not None
    assert stored.calibration.windows == 12 and stored.calibration.window_seconds == MONTH
    assert stored.calibration.thresholds == pytest.approx(expected.thresholds, rel=1e-12)

    reference.write(train, schema, str(profile_out), str(sample_out), rows=100)
    assert ReferenceProfile.from_bytes(profile_out.read_bytes()).calibration is None
    no_time = dataclasses.replace(config, timestamp="when")
    reference.write(train, schema, str(profile_out), str(sample_out), rows=100, config=no_time)
    assert ReferenceProfile.from_bytes(profile_out.read_bytes()).calibration is None


# ------------------------------------------------------------------------ reports


def test_the_report_says_when_thresholds_were_calibrated(
    profile: ReferenceProfile, next_summer: pa.Table
) -> None:
    report = drift.compare(profile, next_summer, CALIBRATED)
    assert report.calibrated_windows == 12
    assert "thresholds calibrated on 12 training windows, 2 above the fixed ones" in (
        report.summary()
    )
    lines = report.markdown().splitlines()
    assert "| threshold from |" in lines[2]
    price = next(line for line in lines if line.startswith("| price |"))
    assert "| calibrated |" in price
    assert "calibrated" not in drift.compare(profile, next_summer, FIXED).summary()
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert DriftReport.from_dict(data) == report


def test_an_old_report_dict_still_loads(profile: ReferenceProfile, next_summer: pa.Table) -> None:
    data = drift.compare(profile, next_summer, FIXED).to_dict()
    for column in data["columns"]:
        del column["threshold_source"]
    del data["calibrated_windows"], data["calibration_note"], data["settings"]["thresholds"]
    old = DriftReport.from_dict(data)
    assert all(c.threshold_source == "fixed" for c in old.columns)
    assert old.settings.thresholds == "fixed" and old.calibrated_windows == 0
    assert old.drifted_columns == ["price", "weather"]
    assert "calibrated" not in old.summary()


# ------------------------------------------------------------------------ helpers


def test_window_distances_match_the_checks_wasserstein() -> None:
    rng = np.random.default_rng(8)
    cases = [
        (1000, 30, None, 100.0),
        (5000, 5000, 1, 100.0),
        (7, 100, None, 0.0),
        (20_000, 900, 0, 100.0),
        # Epoch-sized values: prefix sums of raw values would lose the digits that matter.
        (200_000, 2000, None, 1.7e9),
    ]
    for n1, n2, decimals, level in cases:
        a = np.sort(rng.normal(level, 1, n1))
        b = np.sort(rng.normal(level + 0.3, 1.5, n2))
        if decimals is not None:
            a, b = np.round(a, decimals), np.round(b, decimals)
        got = _QuantileDistance(a)(b)
        assert got == pytest.approx(drift.wasserstein(a, b), rel=1e-6, abs=1e-12)


def calibration_of(profile: ReferenceProfile) -> Calibration:
    assert profile.calibration is not None
    return profile.calibration


def header_of(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return json.loads(npz["header"].tobytes().decode())


def rewrite_header(data: bytes, *, version: int | None = None, calibration: object = None) -> bytes:
    """The same profile with its header changed; calibration=... drops the key, as a
    version-1 writer did."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    if version is not None:
        header["version"] = version
    if calibration is ...:
        del header["calibration"]
    elif calibration is not None:
        header["calibration"] = calibration
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def schema_of(table: pa.Table) -> Schema:
    def column(name: str, kind: str, role: str) -> ColumnSchema:
        return ColumnSchema(name=name, kind=kind, role=role, dtype="x", null_rate=0.0)  # type: ignore[arg-type]

    return Schema(
        version=1,
        task="regression",
        target="y",
        timestamp="ts",
        columns=(
            column("ts", "timestamp", "timestamp"),
            column("price", "numeric", "feature"),
            column("steady", "numeric", "feature"),
            column("weather", "categorical", "feature"),
            column("y", "numeric", "target"),
        ),
        rows=table.num_rows,
        created_at=(START + timedelta(days=1)).isoformat(),
        source_hash="",
        config_fingerprint="",
    )


def test_a_profile_of_few_windows_is_not_fooled_by_its_own_rows() -> None:
    """Four 300-row windows make the profile: each is a quarter of the reference it is
    scored against, so unscaled it looks a quarter closer than a fresh window does. Fresh
    windows from the same distribution must pass the calibrated thresholds."""
    import dataclasses

    rng = np.random.default_rng(3)
    day = 86400.0

    def rows(n: int) -> dict[str, np.ndarray]:
        return {
            "a": rng.normal(0, 1, n),
            "b": rng.normal(5, 2, n),
            "c": rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2]),
        }

    reference = rows(1200)
    profile = drift.build_profile(reference, {"a": "numeric", "b": "numeric", "c": "categorical"})
    times = np.arange(1200) * (28 * day / 1200)  # four 7-day windows
    calibration = drift.calibrate(profile, reference, times, 7 * day, min_rows=200)
    assert calibration.windows == 4
    profile = dataclasses.replace(profile, calibration=calibration)
    settings = drift.DriftSettings(thresholds="calibrated")
    fresh = [drift.compare(profile, rows(300), settings) for _ in range(100)]
    for name in ("a", "b"):
        scores = np.array([r.column(name).score for r in fresh])
        threshold = calibration.thresholds[name]
        # about the 95th percentile of fresh windows' noise, as mean + 2 std would be:
        # without the correction it sits at three quarters of that
        assert np.mean(scores >= threshold) <= 0.1, (name, threshold, np.quantile(scores, 0.9))
        assert threshold > np.quantile(scores, 0.85)
