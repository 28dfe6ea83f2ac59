"""Deterministic streams that each reproduce one kind of real change, for `ctpipe simulate`.

Every generator takes `rows` and `seed` and returns a pyarrow table in time order with
`request_id`, `event_time` (UTC), a few numeric features, one or two categorical ones and
a binary `label` (0/1) that the features predict:

    constant_comes_alive  `rate` is the constant 0.0035 for the first half, then varies and
                          carries signal (a feed that was stuck, or a field filled in late)
    new_category          `channel` gains a level mid-stream: "chat" appears and takes ~40%
                          of the rows, with its own effect on the label
    seasonal_month        ~2 years; `month` is "Jan".."Dec" (from event_time) and the
                          positive rate follows the season (high in winter, low in summer)
    label_prior_shift     the positive rate moves from ~20% to ~60% (between 40% and 60% of
                          the stream); each class's features stay as they were

`seattle_weather()` is real data for the same purpose (see its docstring).

Three more streams judge the retraining triggers' weighting (`TRIGGER_SCENARIOS`; not in
`SCENARIOS`, whose streams each carry one data change):

    seasonal_stable       ~2 years; `temperature`, `demand` and the `weather` mix follow the
                          seasons, but P(label | features) never changes: data drift that
                          a model trained on a full year does not need to retrain for
    abrupt_change         stationary, then at the middle the labelling rule flips (concept
                          drift) and `x2` and the `segment` mix shift with it
    stationary            every row from one distribution, one fixed rule

    from ctpipe.data import scenarios, synthetic
    synthetic.write(scenarios.SCENARIOS["new_category"](8000, 0), "stream.csv")
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

TIME = "event_time"
TARGET = "label"
START = datetime(2026, 1, 1, tzinfo=UTC)
HALF = 0.5  # where the one-off changes happen, as a fraction of the stream
CONSTANT_RATE = 0.0035
SEGMENTS = ("retail", "business", "public")
CHANNELS = ("web", "app", "store")
NEW_CHANNEL = "chat"
NEW_CHANNEL_SHARE = 0.4
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
PRIOR_BEFORE, PRIOR_AFTER = 0.2, 0.6
PRIOR_RAMP = (0.4, 0.6)


def constant_comes_alive(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """`rate` is 0.0035 in every row of the first half; from the middle on it varies
    around that value and raises the odds of a positive label."""
    rng, position = _start(rows, seed)
    x = rng.normal(0.0, 1.0, (rows, 3))
    segment = _choose(rng, SEGMENTS, np.array([0.5, 0.3, 0.2]), rows)
    alive = position >= HALF
    spread = rng.normal(0.0, 1.0, rows)
    rate = np.where(alive, CONSTANT_RATE * np.exp(0.5 * spread), CONSTANT_RATE)
    logit = 1.1 * x[:, 0] - 0.8 * x[:, 1] + np.array([0.0, 0.5, -0.5])[segment]
    logit += np.where(alive, 1.8 * spread, 0.0)
    return _table(
        rng,
        position,
        seed,
        {
            **_numeric(x),
            "rate": np.round(rate, 8),
            "segment": _levels(SEGMENTS, segment),
        },
        logit,
        days=120,
    )


def new_category(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """`channel` is web/app/store for the first half; from the middle on a new level,
    "chat", takes about 40% of the rows and raises the odds of a positive label."""
    rng, position = _start(rows, seed)
    x = rng.normal(0.0, 1.0, (rows, 3))
    old = _choose(rng, CHANNELS, np.array([0.5, 0.3, 0.2]), rows)
    new = (position >= HALF) & (rng.random(rows) < NEW_CHANNEL_SHARE)
    channel = np.where(new, len(CHANNELS), old)
    segment = _choose(rng, SEGMENTS, np.array([0.5, 0.3, 0.2]), rows)
    effects = np.array([0.0, 0.4, -0.6, 1.5])  # web, app, store, chat
    logit = 1.0 * x[:, 0] + 0.7 * x[:, 1] - 0.5 * x[:, 2] + effects[channel] - 0.3
    logit += np.array([0.0, 0.3, -0.3])[segment]
    return _table(
        rng,
        position,
        seed,
        {
            **_numeric(x),
            "channel": _levels((*CHANNELS, NEW_CHANNEL), channel),
            "segment": _levels(SEGMENTS, segment),
        },
        logit,
        days=120,
    )


def seasonal_month(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """730 days from 1 January; `month` ("Jan".."Dec", text) is the month of event_time,
    and the label leans positive in winter and negative in summer (a cosine over the year)."""
    rng, position = _start(rows, seed)
    days = 730
    stamps = _stamps(rng, position, days)
    month = stamps.astype("datetime64[M]").astype(np.int64) % 12  # 0 = January
    x = rng.normal(0.0, 1.0, (rows, 3))
    # Temperature-like: follows the season, so the season is learnable from it as well.
    season = np.cos(2 * np.pi * month / 12.0)  # +1 in January, -1 in July
    temperature = 12.0 - 8.0 * season + rng.normal(0.0, 3.0, rows)
    logit = 1.6 * season + 0.9 * x[:, 0] - 0.6 * x[:, 1] - 0.2
    return _table(
        rng,
        position,
        seed,
        {
            **_numeric(x[:, :2]),
            "temperature": np.round(temperature, 2),
            "month": _levels(MONTHS, month),
        },
        logit,
        stamps=stamps,
    )


def label_prior_shift(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """The positive rate is ~20% up to 40% of the stream, ~60% from 60% on, and moves
    linearly between. The features of each class keep their distribution (pure prior
    shift), so a ranking metric such as ROC AUC holds up while accuracy and calibration
    suffer."""
    rng, position = _start(rows, seed)
    first, last = PRIOR_RAMP
    ramp = np.clip((position - first) / (last - first), 0.0, 1.0)
    prior = PRIOR_BEFORE + (PRIOR_AFTER - PRIOR_BEFORE) * ramp
    label = (rng.random(rows) < prior).astype(np.int64)
    shift = np.array([1.0, -0.8, 0.5])
    x = rng.normal(0.0, 1.0, (rows, 3)) + label[:, None] * shift
    mix = np.array([[0.5, 0.3, 0.2], [0.25, 0.35, 0.4]])  # segment mix of class 0, class 1
    segment = np.where(
        label == 1,
        _choose(rng, SEGMENTS, mix[1], rows),
        _choose(rng, SEGMENTS, mix[0], rows),
    )
    return _table(
        rng,
        position,
        seed,
        {
            **_numeric(x),
            "segment": _levels(SEGMENTS, segment),
        },
        label=label,
        days=120,
    )


SEASONAL_DAYS = 730
WEATHER = ("snow", "rain", "sun")
ABRUPT_SHIFT = 1.5  # x2 moves this many standard deviations at the change


def seasonal_stable(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """730 days from 1 January. `temperature` (about -2 in January to 22 in July),
    `demand` (high in winter) and the `weather` mix ("snow" in winter, "sun" in summer)
    follow a yearly cycle; `x0`..`x3` and `segment` do not. The labelling rule is one
    logistic function of the features, the same every day: the season moves the features,
    never P(label | features). The seasonal columns are 3 of 8, so the seasons alone
    drift fewer than half of the columns."""
    rng, position = _start(rows, seed)
    stamps = _stamps(rng, position, SEASONAL_DAYS)
    day = (stamps - np.datetime64(START.replace(tzinfo=None), "us")) / np.timedelta64(1, "D")
    season = np.cos(2 * np.pi * day / 365.25)  # +1 on 1 January, -1 in early July
    temperature = 10.0 - 12.0 * season + rng.normal(0.0, 2.5, rows)
    demand = 100.0 + 30.0 * season + rng.normal(0.0, 8.0, rows)
    winter = (1.0 + season) / 2.0  # 1 in midwinter, 0 in midsummer
    mix = winter[:, None] * np.array([0.45, 0.4, 0.15]) + (1.0 - winter)[:, None] * np.array(
        [0.02, 0.28, 0.7]
    )
    weather = (rng.random(rows)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1).clip(0, 2)
    x = rng.normal(0.0, 1.0, (rows, 4))
    segment = _choose(rng, SEGMENTS, np.array([0.5, 0.3, 0.2]), rows)
    logit = (
        1.2 * x[:, 0]
        - 0.9 * x[:, 1]
        + 0.4 * x[:, 2]
        - 0.2 * x[:, 3]
        + 0.04 * (temperature - 10.0)
        + 0.01 * (demand - 100.0)
        + np.array([0.4, 0.2, -0.3])[weather]
        + np.array([0.0, 0.6, -0.6])[segment]
        - 0.2
    )
    return _table(
        rng,
        position,
        seed,
        {
            **_numeric(x),
            "temperature": np.round(temperature, 2),
            "demand": np.round(demand, 2),
            "weather": _levels(WEATHER, weather),
            "segment": _levels(SEGMENTS, segment),
        },
        logit,
        stamps=stamps,
    )


def abrupt_change(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """Stationary for the first half. From the middle on the labelling rule flips (the
    effects of x0, x1 and `segment` change sign: concept drift) and the features move
    too: `x2` shifts by 1.5 standard deviations and the `segment` mix turns over."""
    rng, position = _start(rows, seed)
    after = position >= HALF
    x = rng.normal(0.0, 1.0, (rows, 3))
    x[:, 2] += np.where(after, ABRUPT_SHIFT, 0.0)
    segment = np.where(
        after,
        _choose(rng, SEGMENTS, np.array([0.2, 0.3, 0.5]), rows),
        _choose(rng, SEGMENTS, np.array([0.5, 0.3, 0.2]), rows),
    )
    sign = np.where(after, -1.0, 1.0)
    logit = sign * (1.3 * x[:, 0] - 0.9 * x[:, 1] + np.array([0.0, 0.6, -0.6])[segment]) + 0.3 * (
        x[:, 2] - np.where(after, ABRUPT_SHIFT, 0.0)
    )
    return _table(rng, position, seed, _segmented(x, segment), logit, days=120)


def stationary(rows: int = 12_000, seed: int = 0) -> pa.Table:
    """Every row from one distribution with one labelling rule: nothing changes."""
    rng, position = _start(rows, seed)
    x = rng.normal(0.0, 1.0, (rows, 3))
    segment = _choose(rng, SEGMENTS, np.array([0.5, 0.3, 0.2]), rows)
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.4 * x[:, 2] + np.array([0.0, 0.5, -0.5])[segment]
    return _table(rng, position, seed, _segmented(x, segment), logit, days=120)


SCENARIOS: dict[str, Callable[[int, int], pa.Table]] = {
    "constant_comes_alive": constant_comes_alive,
    "new_category": new_category,
    "seasonal_month": seasonal_month,
    "label_prior_shift": label_prior_shift,
}

# The streams the retraining triggers' weighting is judged on (issue 14).
TRIGGER_SCENARIOS: dict[str, Callable[[int, int], pa.Table]] = {
    "seasonal_stable": seasonal_stable,
    "abrupt_change": abrupt_change,
    "stationary": stationary,
}

# Seattle weather, 2012-2015 (vega_datasets, a dev dependency: the CSV ships in its wheel).
# `ctpipe demo`'s stream and search: 30 batches of 1,000 rows, an abrupt change (features
# and labelling rule) at batch 9, a gradual one over batches 17-21, and a transient one:
# the old labelling rule is back for batches 24-25, then gone again.
DEMO_SEARCH = [
    {"family": "linear", "params": {"C": 1.0}},
    {"family": "hist_gradient_boosting", "params": {"max_iter": 80}},
]


DEMO_BATCHES = 30


def demo_stream() -> pa.Table:
    from ctpipe.data import synthetic

    batches = DEMO_BATCHES
    return synthetic.generate(
        batches * 1000,
        seed=11,
        numeric=6,
        categorical=2,
        days=2 * batches,
        drifts=(
            synthetic.Drift(at=9 / batches, covariate=1.2, concept=0.6),
            synthetic.Drift(at=16.8 / batches, width=4.8 / batches, covariate=-1.0, concept=0.4),
            synthetic.Drift(at=24 / batches, concept=-1.0),
            synthetic.Drift(at=26 / batches, concept=1.0),
        ),
    )


SEATTLE_TARGET = "wet"
SEATTLE_FEATURES = ("temp_max", "temp_min", "wind", "precipitation_yesterday", "month")


def seattle_weather() -> pa.Table:
    """Seattle's daily weather, 1 January 2012 to 31 December 2015 (1,461 days), as a
    binary stream: will it rain today?

    `event_time` is the day (UTC midnight). The target `wet` is 1 when any precipitation
    was measured that day (43% of days). The features are what is known by the morning:
    `temp_max`, `temp_min`, `wind`, `precipitation_yesterday` (mm) and `month` ("Jan"..).
    The day's own precipitation and the `weather` column are dropped: they are the answer.
    `weather` is not the target either: its labelling changes over the years (about half
    of 2012's days are "rain", 3 of 2014's), so no ROC AUC exists for most later batches.
    The change a replay sees is the seasons: a champion trained on winter predicts summer.
    """
    try:
        from vega_datasets import local_data
    except ImportError as exc:  # a dev dependency: `pip install -e '.[dev]'`
        raise ImportError(
            "seattle_weather needs vega_datasets (a dev dependency): "
            "pip install -c constraints.txt vega_datasets"
        ) from exc
    frame = local_data.seattle_weather()
    dates = frame["date"].to_numpy().astype("datetime64[us]")
    precipitation = frame["precipitation"].to_numpy(dtype=float)
    month = dates.astype("datetime64[M]").astype(np.int64) % 12
    return pa.Table.from_pydict(
        {
            "request_id": pa.array([f"seattle-{i:05d}" for i in range(len(frame))]),
            TIME: pa.array(dates, type=pa.timestamp("us", tz="UTC")),
            "temp_max": pa.array(frame["temp_max"].to_numpy(dtype=float)),
            "temp_min": pa.array(frame["temp_min"].to_numpy(dtype=float)),
            "wind": pa.array(frame["wind"].to_numpy(dtype=float)),
            "precipitation_yesterday": pa.array(np.concatenate([[0.0], precipitation[:-1]])),
            "month": _levels(MONTHS, month),
            SEATTLE_TARGET: pa.array((precipitation > 0).astype(np.int64)),
        }
    )


def write_seattle_weather(path: str | Path) -> Path:
    """seattle_weather() as CSV, Parquet or JSON Lines (by the extension); returns the path."""
    from ctpipe.data import synthetic

    synthetic.write(seattle_weather(), str(path))
    return Path(path)


def _start(rows: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    if rows < 2:
        raise ValueError(f"rows: expected at least 2, got {rows}")
    return np.random.default_rng(seed), np.linspace(0.0, 1.0, rows)


def _stamps(rng: np.random.Generator, position: np.ndarray, days: float) -> np.ndarray:
    """Sorted microsecond timestamps spread over `days` from START."""
    span = days * 86400.0
    step = span / len(position)  # each row lands in its own slot, the last one before the end
    offsets = np.sort(position * (span - step) + rng.uniform(0, step, len(position)))
    origin = np.datetime64(START.replace(tzinfo=None), "us")
    return origin + (offsets * 1e6).astype("timedelta64[us]")


def _choose(
    rng: np.random.Generator, levels: tuple[str, ...], mix: np.ndarray, rows: int
) -> np.ndarray:
    return rng.choice(len(levels), size=rows, p=mix / mix.sum())


def _levels(levels: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(levels, pa.string()).take(pa.array(codes.astype(np.int64)))


def _numeric(x: np.ndarray) -> dict[str, np.ndarray]:
    """Columns x0, x1, ... of a (rows, k) draw, rounded as a CSV would keep them."""
    return {f"x{i}": np.round(x[:, i], 6) for i in range(x.shape[1])}


def _segmented(x: np.ndarray, segment: np.ndarray) -> dict[str, np.ndarray | pa.Array]:
    """Numeric columns x0.. and the segment each row belongs to."""
    return {**_numeric(x), "segment": _levels(SEGMENTS, segment)}


def _table(
    rng: np.random.Generator,
    position: np.ndarray,
    seed: int,
    features: dict[str, np.ndarray | pa.Array],
    logit: np.ndarray | None = None,
    *,
    label: np.ndarray | None = None,
    days: float = 120,
    stamps: np.ndarray | None = None,
) -> pa.Table:
    rows = len(position)
    if stamps is None:
        stamps = _stamps(rng, position, days)
    if label is None:
        assert logit is not None
        label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([f"s{seed:03d}-{i:07d}" for i in range(rows)]),
        TIME: pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
    }
    for name, values in features.items():
        columns[name] = values if isinstance(values, pa.Array) else pa.array(values)
    columns[TARGET] = pa.array(label)
    return pa.Table.from_pydict(columns)
