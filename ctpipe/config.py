"""The ctpipe configuration: one YAML file, loaded into frozen dataclasses.

Endpoints and credentials never live here: they come from the environment
(`AWS_*`, `AWS_ENDPOINT_URL_S3`, `MLFLOW_TRACKING_URI`), so the same file works on a
laptop and in a cluster.

A config crosses process boundaries as a plain dict (a KFP pipeline parameter), so
`from_dict` is strict and cheap and every step re-checks what it is given.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ctpipe.errors import ConfigError
from ctpipe.options import (
    AUTO,
    FAMILIES,
    WEIGHTED_FAMILIES,
    parse_duration,
    parse_span,
    parse_window,
)

Task = Literal["classification", "regression"]

# metric name -> True when higher is better. The first metric of a task is its default.
METRICS: dict[str, dict[str, bool]] = {
    "classification": {"roc_auc": True, "accuracy": True, "f1": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}

DEFAULT_CONFIG_NAME = "ctpipe.yaml"


@dataclass(frozen=True)
class Window:
    """Which rows of the data to use, by the timestamp column."""

    start: str | None = None  # ISO 8601, inclusive
    end: str | None = None  # ISO 8601, exclusive
    last: str | None = None  # e.g. "90d": only rows this close to the newest row


@dataclass(frozen=True)
class SyntheticData:
    """The built-in deterministic dataset, used when `data.uri` is null."""

    rows: int = 20_000
    seed: int = 7
    numeric: int = 8
    categorical: int = 3


@dataclass(frozen=True)
class DataSource:
    uri: str | None = None  # local file, directory, glob, or s3://bucket/prefix
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    window: Window = field(default_factory=Window)
    synthetic: SyntheticData = field(default_factory=SyntheticData)


@dataclass(frozen=True)
class Constraint:
    """Values a column can never hold, declared by the user (an integrity rule)."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Features:
    """Overrides on top of the inferred schema."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    constraints: dict[str, Constraint] = field(default_factory=dict)  # e.g. age: {min: 0}


@dataclass(frozen=True)
class Split:
    validation_fraction: float = 0.15
    test_fraction: float = 0.2
    min_rows: int = 20  # per slice


Strictness = Literal["hard", "soft"]


@dataclass(frozen=True)
class Train:
    """Which rows a retrain learns from, and how it ends (see ctpipe.training.windows)."""

    # expanding: every labelled row; sliding <N | N% | duration>: the newest rows only;
    # auto: backtest `auto_windows` on the newest labelled rows before the test slice.
    window: str = "expanding"
    auto_windows: tuple[str, ...] = ("expanding", "sliding 50%", "sliding 25%")
    backtest_folds: int = 3  # rolling-origin folds per window length (auto)
    # Time-decay sample weights: a row this much older than the newest counts half.
    half_life: str | None = None  # rows (5000) or a duration (30d); null: equal weights
    # After a blessing, refit the blessed candidate on every row in the window, test slice
    # included; kept only when its test predictions agree with the blessed model's.
    final_refit: bool = True
    # A refit learned the test slice, so under change its labels there differ (a quarter,
    # right after the demo's change); a broken fit changes about half. Up to this share of
    # changed labels (or MAE / label std) it is taken as the same model, only fresher.
    final_refit_tolerance: float = 0.3


@dataclass(frozen=True)
class Validation:
    """Tolerances. Below a `warn_` level nothing is said; above a `max_` level the run stops.

    Integrity rules (a missing column, text in a numeric column, impossible labels, a null
    explosion, declared constraints) stop a run. Distribution rules (values beyond the
    inferred range, unseen categories) describe drift: they warn unless `distribution` is
    hard, and under `evolution: auto` the next schema version absorbs them.
    """

    warn_null_rate_increase: float = 0.05
    max_null_rate_increase: float = 0.25
    max_unseen_category_fraction: float = 0.05
    max_out_of_range_fraction: float = 0.25
    max_missing_label_fraction: float = 0.05
    integrity: Strictness = "hard"
    distribution: Strictness = "soft"
    evolution: Literal["auto", "manual"] = "auto"


@dataclass(frozen=True)
class CandidateSpace:
    """One model family and a grid: each list-valued param is a grid axis."""

    family: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", decode_params(self.params))


# KFP cannot carry null anywhere inside a dict parameter, yet null is a meaningful model
# parameter (max_depth: null is "no limit"). On the way through KFP it is this string.
NULL_PARAM = "null"


def encode_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: _map_null(v, None, NULL_PARAM) for k, v in params.items()}


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: _map_null(v, NULL_PARAM, None) for k, v in params.items()}


def _map_null(value: Any, old: Any, new: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_map_null(v, old, new) for v in value]
    return new if value == old and type(value) is type(old) else value


def _default_candidates(task: str = "classification") -> tuple[CandidateSpace, ...]:
    # Logistic regression takes C, ridge takes alpha (about 1/C).
    linear = {"C": [0.1, 1.0]} if task == "classification" else {"alpha": [1.0, 10.0]}
    return (
        CandidateSpace("linear", linear),
        CandidateSpace("random_forest", {"n_estimators": [200], "min_samples_leaf": [1, 5]}),
        CandidateSpace("hist_gradient_boosting", {"learning_rate": [0.05, 0.1]}),
    )


@dataclass(frozen=True)
class Search:
    metric: str | None = None  # chosen on validation; default: the task's first metric
    seed: int = 0
    max_candidates: int = 32
    candidates: tuple[CandidateSpace, ...] = field(default_factory=_default_candidates)


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion."""

    metric: str | None = None  # compared by paired bootstrap; default: the task's first metric
    thresholds: dict[str, float] = field(default_factory=dict)  # absolute floor (or ceiling)
    margin: float = 0.01  # how much worse than the champion is still acceptable
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    seed: int = 0
    # A champion that cannot score the test slice (tampered, unreachable, missing a column)
    # fails the run; "thresholds" blesses on the thresholds alone and says so in every report.
    on_champion_error: Literal["fail", "thresholds"] = "fail"


DriftMethod = Literal["effect_size", "holm"]
DriftThresholds = Literal["fixed", "calibrated"]


class InvalidField(ValueError):
    """A config class's own check of one of its values, made however the class is made (from
    YAML, in code, from a stored record); `from_dict` reports it at the key's path."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True)
class DriftSettings:
    """How per-column drift statistics become a verdict: `monitor.drift`, and what
    ctpipe.drift.compare reads.

    method: "effect_size" compares numeric wasserstein_norm with `numeric_threshold` and
    categorical jensen_shannon with `categorical_threshold`; "holm" corrects the KS and
    chi-square p-values of all columns together and flags those it rejects at `alpha`.
    share: the dataset has drifted when at least this fraction of its columns has.
    psi_bins: reference-quantile bins for numeric PSI (reported, never a verdict).
    thresholds: "calibrated" holds each column to the larger of its kind's threshold and
    the threshold the profile calibrated for it (see ctpipe.drift.profile.calibrate), where
    there is one; "fixed" uses the kind's threshold only. Method "holm" ignores it.
    """

    method: DriftMethod = "effect_size"
    numeric_threshold: float = 0.1  # normalised Wasserstein-1 (effect_size)
    categorical_threshold: float = 0.1  # Jensen-Shannon distance (effect_size)
    alpha: float = 0.05  # family-wise error rate (holm)
    share: float = 0.25  # dataset drift when at least this share of columns drifted
    psi_bins: int = 10  # reference-quantile bins for numeric PSI (reported, never a verdict)
    # calibrated: each column's threshold is also at least what its own training data
    # varies by from one monitor window to the next (seasonal data does not drift by
    # being seasonal); fixed: the thresholds above only.
    thresholds: DriftThresholds = "calibrated"

    def __post_init__(self) -> None:
        for name, allowed in (("method", DriftMethod), ("thresholds", DriftThresholds)):
            value = getattr(self, name)
            if value not in get_args(allowed):
                choices = ", ".join(repr(a) for a in get_args(allowed))
                raise InvalidField(name, f"expected one of {choices}, got {_describe(value)}")
        for name in ("share", "alpha"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise InvalidField(name, f"expected a fraction between 0 and 1, got {value}")
        for name in ("numeric_threshold", "categorical_threshold"):
            value = getattr(self, name)
            if not value > 0:
                raise InvalidField(name, f"expected a positive number, got {value}")
        bins = self.psi_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise InvalidField("psi_bins", f"expected an integer >= 2, got {bins!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftSettings:
        return cls(**data)


@dataclass(frozen=True)
class Triggers:
    """What can start a retraining run. Each trigger can be switched off on its own."""

    max_model_age: str | None = "30d"  # schedule: retrain a champion older than this
    data_drift: bool = True
    performance_metric: str | None = None  # default: roc_auc (binary), accuracy, or rmse
    performance_floor: float | None = None  # absolute floor (ceiling for lower-is-better)
    performance_margin: float | None = 0.05  # or: this much below the champion's own test metric
    min_labelled: int = 200  # labelled predictions needed before performance is judged
    performance_confidence: float = 0.95  # the drop must hold at this confidence (bootstrap)
    # Labels newer than this count as "in time": then performance decides, and data drift
    # alone triggers a run only when at least large_drift_share of the columns drifted.
    label_horizon: str | None = "7d"  # null: data drift always triggers on its own
    large_drift_share: float = 0.5
    concept_drift: bool = True  # Page-Hinkley on the per-prediction error stream
    page_hinkley_delta: float = 0.05  # error-rate change tolerated; smaller alarms on noise
    page_hinkley_threshold: float = 50.0


@dataclass(frozen=True)
class RetrainPolicy:
    """When a fired trigger may submit a run (the `monitor.policy` section)."""

    cooldown: str = "6h"  # no new run this soon after the last one (or the champion's birth)
    min_new_rows: int = 1000  # labelled predictions newer than the champion's training data
    claim_ttl: str = "2h"  # a claimed submission that never completed is retried after this
    retry_backoff: str = "1h"  # after a failed run: wait this, doubling per failure in a row
    max_retry_backoff: str = "24h"  # the doubling stops here
    max_failed_runs: int = 3  # this many failed runs in a row: stop submitting and alert


@dataclass(frozen=True)
class Monitor:
    """The drift monitor (`ctpipe monitor`, a CronJob in a cluster)."""

    predictions: str | None = None  # prediction log root; default: <state_dir>/predictions
    labels: str | None = None  # delayed labels root; default: <state_dir>/labels
    window: str = "1d"  # the current window: predictions this recent
    min_rows: int = 200  # fewer rows in the window: no drift verdict
    report_rows: int = 5000  # bound on each side of the evidently HTML report; 0: no reports
    drift: DriftSettings = field(default_factory=DriftSettings)
    triggers: Triggers = field(default_factory=Triggers)
    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    experiment: str = "ctpipe"  # KFP experiment for submitted runs
    pipeline_name: str = "continuous-training"  # KFP pipeline to run (its newest version)
    pipeline_version: str | None = None  # a specific version id instead


@dataclass(frozen=True)
class Rollout:
    """How a blessed challenger becomes the champion (the `deploy.rollout` section).

    progressive: `register` names it `challenger`; the rollout controller (run by the
    monitor) scores it in shadow, then gives it deploy.canary_traffic_percent of the
    traffic, and moves `champion` only when live evidence clears the margin. immediate:
    `register` makes it the champion at once (the gate's evidence alone).
    """

    strategy: Literal["progressive", "immediate"] = "progressive"
    shadow: bool = True  # score the challenger beside the champion before any canary
    min_labelled: int = 200  # labelled rows (per side) before a phase is judged
    margin: float | None = None  # how much worse is still acceptable; default: gate.margin
    confidence: float | None = None  # of the live interval; default: gate.confidence
    bootstrap_samples: int = 1000
    max_error_rate: float = 0.02  # the canary's share of failed requests
    max_latency_ratio: float = 1.5  # the canary's p95 latency over the champion's
    min_requests: int = 50  # requests per side before error rate and latency count
    timeout: str = "7d"  # no verdict this long after the rollout began: rolled back
    prometheus: str | None = None  # Prometheus URL: error rate and latency in a cluster


@dataclass(frozen=True)
class Deploy:
    """How the champion is served: the InferenceService, and its pre-promotion check."""

    namespace: str = "ctpipe"
    service: str | None = None  # InferenceService name; default: the model_name
    image: str | None = None  # default: ctpipe/serving:<version>
    canary_traffic_percent: int = 10  # a new champion first gets this share; 100 or 0: all at once
    apply: Literal["auto", "always", "never"] = "auto"  # auto: apply when running inside a cluster
    service_account: str = "ctpipe-predictor"
    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    gpu: int = 0  # nvidia.com/gpu limit
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()
    min_replicas: int = 1
    max_replicas: int = 3
    infra_rows: int = 200  # test rows sent through the served challenger before registration
    infra_latency_samples: int = 100  # single-row requests timed per model (after a warm-up)
    infra_latency_ratio: float = 1.5  # challenger p95 / champion p95, both served by the step
    infra_latency_ms: float = 1000.0  # absolute ceiling on the challenger's single-row p95
    infra_timeout_seconds: float = 120.0  # for the challenger's server to become ready
    rollout: Rollout = field(default_factory=Rollout)


@dataclass(frozen=True)
class Config:
    task: Task
    target: str
    timestamp: str
    model_name: str = "ctpipe-model"
    id_column: str | None = None
    sensitive_columns: tuple[str, ...] = ()
    state_dir: str = ".ctpipe"  # local dir or s3:// prefix: schemas, and local MLflow
    data: DataSource = field(default_factory=DataSource)
    features: Features = field(default_factory=Features)
    split: Split = field(default_factory=Split)
    train: Train = field(default_factory=Train)
    validation: Validation = field(default_factory=Validation)
    search: Search = field(default_factory=Search)
    gate: Gate = field(default_factory=Gate)
    monitor: Monitor = field(default_factory=Monitor)
    deploy: Deploy = field(default_factory=Deploy)

    @property
    def search_metric(self) -> str:
        return self.search.metric or next(iter(METRICS[self.task]))

    @property
    def gate_metric(self) -> str:
        return self.gate.metric or next(iter(METRICS[self.task]))

    def higher_is_better(self, metric: str) -> bool:
        return METRICS[self.task][metric]

    @property
    def reserved_columns(self) -> tuple[str, ...]:
        """Columns that are never model features."""
        return tuple(c for c in (self.target, self.timestamp, self.id_column) if c)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that `from_dict` turns back into an equal Config.

        KFP cannot carry null inside a dict parameter. A None whose key defaults to None is
        left out; one whose key has another default (`max_model_age: null`, "never") is
        written as NULL_PARAM, which `from_dict` reads back as None.
        """
        raw = _explicit_nulls(self)
        for space in raw["search"]["candidates"]:
            space["params"] = encode_params(space["params"])
        return _plain(raw)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _explicit_nulls(obj: Any) -> Any:
    """dataclasses.asdict, with NULL_PARAM for a None that differs from its key's default."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            has_default = f.default is not dataclasses.MISSING and f.default is not None
            out[f.name] = NULL_PARAM if has_default else None
        elif dataclasses.is_dataclass(value):
            out[f.name] = _explicit_nulls(value)
        elif isinstance(value, list | tuple):
            out[f.name] = [_explicit_nulls(v) for v in value]
        elif isinstance(value, dict):
            out[f.name] = {k: _explicit_nulls(v) for k, v in value.items()}
        else:
            out[f.name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- loading


def default_config_text() -> str:
    """The documented default ctpipe.yaml that ships inside the package."""
    return resources.files("ctpipe").joinpath(DEFAULT_CONFIG_NAME).read_text()


def load(path: str | Path | None = None) -> Config:
    """Load a config file (or the embedded default) and make its local paths absolute.

    Relative paths in a file are relative to that file; in the embedded default they are
    relative to the working directory.
    """
    import yaml

    if path is None:
        source, text, base = f"<embedded {DEFAULT_CONFIG_NAME}>", default_config_text(), Path.cwd()
    else:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read config file ({exc.strerror})") from exc
        source, base = str(file), file.resolve().parent
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return resolve_paths(from_dict(data, source=source), base)


def resolve_paths(config: Config, base: Path) -> Config:
    def absolute(uri: str | None) -> str | None:
        if uri is None or "://" in uri or Path(uri).is_absolute():
            return uri
        return str((base / uri).resolve())

    data = dataclasses.replace(config.data, uri=absolute(config.data.uri))
    monitor = dataclasses.replace(
        config.monitor,
        predictions=absolute(config.monitor.predictions),
        labels=absolute(config.monitor.labels),
    )
    return config.replace(data=data, state_dir=absolute(config.state_dir), monitor=monitor)


def from_dict(data: Any, source: str = "config") -> Config:
    """Build and check a Config; raise ConfigError naming the key and what was expected."""
    config = _build(Config, data, "", source)
    search = data.get("search") if isinstance(data, dict) else None
    if not (isinstance(search, dict) and "candidates" in search):
        # The dataclass default grid is the classification one; use the task's own.
        candidates = _default_candidates(config.task)
        config = config.replace(search=dataclasses.replace(config.search, candidates=candidates))
    _check(config, source)
    return config


def _fail(source: str, path: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {path or '<top level>'}: {message}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _build(tp: Any, value: Any, path: str, source: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path, source)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or value == NULL_PARAM:  # NULL_PARAM: a null that crossed KFP
            return None
        return _build(args[0], value, path, source)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise _fail(source, path, f"expected one of {choices}, got {_describe(value)}")
        return value
    if origin is tuple:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise _fail(source, path, f"expected a list, got {_describe(value)}")
        item_type = get_args(tp)[0]
        return tuple(_build(item_type, v, f"{path}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _fail(source, path, f"expected a mapping, got {_describe(value)}")
        value_type = get_args(tp)[1]
        return {str(k): _build(value_type, v, f"{path}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        # KFP carries numbers as protobuf doubles: 3.0 arrives where 3 was written.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(source, path, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if isinstance(value, date):  # YAML reads an unquoted 2026-01-01 as a date
            value = value.isoformat()
        if not isinstance(value, str) or not value:
            raise _fail(source, path, f"expected a non-empty string, got {_describe(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {path} is not supported")  # a bug in this module


def _build_dataclass(cls: Any, value: Any, path: str, source: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(source, path, f"expected a mapping, got {_describe(value)}")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            where = f"{path}.{key}" if path else str(key)
            raise _fail(source, where, f"unknown key; {hint}expected one of: {', '.join(known)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            kwargs[f.name] = _build(hints[f.name], value[f.name], where, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(source, where, "required key is missing")
    try:
        return cls(**kwargs)
    except InvalidField as exc:  # a class that checks its own values (DriftSettings)
        raise _fail(source, f"{path}.{exc.name}" if path else exc.name, exc.message) from None


def _check(config: Config, source: str) -> None:
    """Rules that span keys or need more than a type."""
    metrics = METRICS[config.task]

    def fraction(path: str, value: float, *, open_low: bool = True) -> None:
        low_ok = value > 0 if open_low else value >= 0
        if not (low_ok and value < 1):
            raise _fail(source, path, f"expected a fraction between 0 and 1, got {value}")

    fraction("split.validation_fraction", config.split.validation_fraction)
    fraction("split.test_fraction", config.split.test_fraction)
    if config.split.validation_fraction + config.split.test_fraction >= 0.9:
        raise _fail(
            source,
            "split",
            "validation_fraction + test_fraction must leave at least 10% for training",
        )
    if config.split.min_rows < 1:
        raise _fail(
            source, "split.min_rows", f"expected a positive integer, got {config.split.min_rows}"
        )
    for name in (f.name for f in dataclasses.fields(Validation)):
        value = getattr(config.validation, name)
        if isinstance(value, float):
            fraction(f"validation.{name}", value, open_low=False)
    if config.validation.warn_null_rate_increase > config.validation.max_null_rate_increase:
        raise _fail(
            source, "validation.warn_null_rate_increase", "must not exceed max_null_rate_increase"
        )

    for path, metric in (
        ("search.metric", config.search.metric),
        ("gate.metric", config.gate.metric),
    ):
        if metric is not None and metric not in metrics:
            raise _fail(
                source,
                path,
                f"expected one of {', '.join(metrics)} for {config.task}, got {metric!r}",
            )
    for metric in config.gate.thresholds:
        if metric not in metrics:
            raise _fail(
                source,
                f"gate.thresholds.{metric}",
                f"unknown metric; expected one of {', '.join(metrics)}",
            )
    if config.gate.margin < 0:
        raise _fail(source, "gate.margin", f"expected a number >= 0, got {config.gate.margin}")
    fraction("gate.confidence", config.gate.confidence)
    if config.gate.bootstrap_samples < 100:
        raise _fail(
            source,
            "gate.bootstrap_samples",
            f"expected at least 100, got {config.gate.bootstrap_samples}",
        )

    if not config.search.candidates:
        raise _fail(source, "search.candidates", "expected at least one candidate family")
    if config.search.max_candidates < 1:
        raise _fail(source, "search.max_candidates", "expected a positive integer")
    for i, space in enumerate(config.search.candidates):
        where = f"search.candidates[{i}]"
        family = FAMILIES.get(space.family)
        if family is None:
            raise _fail(
                source,
                f"{where}.family",
                f"expected one of {', '.join(FAMILIES)}, got {space.family!r}",
            )
        for param, values in space.params.items():
            accepted = family.params_for(config.task)
            if param not in accepted:
                close = difflib.get_close_matches(param, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise _fail(
                    source,
                    f"{where}.params.{param}",
                    f"unknown parameter for {space.family} ({config.task}); {hint}expected one of: {', '.join(accepted)}",
                )
            grid = values if isinstance(values, list) else [values]
            if not grid:
                raise _fail(
                    source,
                    f"{where}.params.{param}",
                    "expected a value or a non-empty list of values",
                )
            for value in grid:
                if isinstance(value, dict | list):
                    raise _fail(
                        source,
                        f"{where}.params.{param}",
                        f"expected a scalar or a list of scalars, got {_describe(value)}",
                    )

    reserved = set(config.reserved_columns)
    if len(reserved) != len(config.reserved_columns):
        raise _fail(source, "target", "target, timestamp and id_column must be different columns")
    for path, columns in (
        ("sensitive_columns", config.sensitive_columns),
        ("features.numeric", config.features.numeric),
        ("features.categorical", config.features.categorical),
    ):
        clash = sorted(reserved.intersection(columns))
        if clash:
            raise _fail(
                source,
                path,
                f"{clash[0]!r} is the target, timestamp or id column and cannot be a feature",
            )
    both = sorted(set(config.features.numeric) & set(config.features.categorical))
    if both:
        raise _fail(source, "features", f"{both[0]!r} is listed as both numeric and categorical")
    for name, constraint in config.features.constraints.items():
        where = f"features.constraints.{name}"
        if constraint.min is None and constraint.max is None:
            raise _fail(source, where, "expected min, max or both")
        if name in config.features.categorical:
            raise _fail(source, where, "min and max apply to numeric columns only")
        if (
            constraint.min is not None
            and constraint.max is not None
            and constraint.min > constraint.max
        ):
            raise _fail(source, where, f"min {constraint.min:g} is above max {constraint.max:g}")

    _check_train(config, source)
    window = config.data.window
    if window.last is not None:
        try:
            parse_duration(window.last)
        except ValueError as exc:
            raise _fail(source, "data.window.last", str(exc)) from None
    for key in ("start", "end"):
        stamp = getattr(window, key)
        if stamp is not None:
            try:
                parse_timestamp(stamp)
            except ValueError:
                raise _fail(
                    source, f"data.window.{key}", f"expected an ISO 8601 timestamp, got {stamp!r}"
                ) from None
    if config.data.synthetic.rows < 100:
        raise _fail(source, "data.synthetic.rows", "expected at least 100 rows")
    _check_monitor(config, source)
    deploy = config.deploy
    if not 0 <= deploy.canary_traffic_percent <= 100:
        raise _fail(
            source,
            "deploy.canary_traffic_percent",
            f"expected 0 to 100, got {deploy.canary_traffic_percent}",
        )
    if (
        deploy.gpu < 0
        or deploy.min_replicas < 0
        or deploy.max_replicas < max(1, deploy.min_replicas)
    ):
        raise _fail(
            source,
            "deploy",
            "gpu and min_replicas must be >= 0, and max_replicas >= max(1, min_replicas)",
        )
    if (
        deploy.infra_rows < 1
        or deploy.infra_latency_samples < 1
        or deploy.infra_latency_ms <= 0
        or deploy.infra_timeout_seconds <= 0
    ):
        raise _fail(
            source,
            "deploy",
            "infra_rows, infra_latency_samples, infra_latency_ms and infra_timeout_seconds "
            "must be positive",
        )
    _check_rollout(deploy.rollout, source)
    if deploy.infra_latency_ratio < 1:
        raise _fail(
            source,
            "deploy.infra_latency_ratio",
            f"expected a ratio of at least 1 (challenger p95 / champion p95), got {deploy.infra_latency_ratio}",
        )


def _check_rollout(rollout: Rollout, source: str) -> None:
    where = "deploy.rollout"
    if rollout.min_labelled < 10 or rollout.min_requests < 1 or rollout.bootstrap_samples < 100:
        raise _fail(
            source,
            where,
            "min_labelled must be at least 10, min_requests at least 1 and "
            "bootstrap_samples at least 100",
        )
    if rollout.margin is not None and not rollout.margin >= 0:
        raise _fail(source, f"{where}.margin", f"expected 0 or more, got {rollout.margin}")
    if rollout.confidence is not None and not 0.5 <= rollout.confidence < 1:
        raise _fail(
            source, f"{where}.confidence", f"expected 0.5 up to 1, got {rollout.confidence}"
        )
    if not 0 <= rollout.max_error_rate < 1:
        raise _fail(
            source,
            f"{where}.max_error_rate",
            f"expected a share from 0 to 1, got {rollout.max_error_rate}",
        )
    if not rollout.max_latency_ratio >= 1:
        raise _fail(
            source,
            f"{where}.max_latency_ratio",
            f"expected at least 1 (canary p95 / champion p95), got {rollout.max_latency_ratio}",
        )
    try:
        parse_duration(rollout.timeout)
    except ValueError as exc:
        raise _fail(source, f"{where}.timeout", str(exc)) from None


def _check_train(config: Config, source: str) -> None:
    train = config.train
    try:
        spec = parse_window(train.window)
    except ValueError as exc:
        raise _fail(source, "train.window", str(exc)) from None
    if spec.kind == AUTO:
        if len(train.auto_windows) < 2:
            raise _fail(source, "train.auto_windows", "expected at least two windows to compare")
        for i, text in enumerate(train.auto_windows):
            try:
                if parse_window(text).kind == AUTO:
                    raise ValueError("auto cannot be one of the windows it chooses from")
            except ValueError as exc:
                raise _fail(source, f"train.auto_windows[{i}]", str(exc)) from None
    if not 1 <= train.backtest_folds <= 10:
        raise _fail(
            source, "train.backtest_folds", f"expected 1 to 10 folds, got {train.backtest_folds}"
        )
    if train.half_life is not None:
        try:
            parse_span(train.half_life, allow_share=False)
        except ValueError as exc:
            raise _fail(source, "train.half_life", str(exc)) from None
        unweighted = [
            s.family for s in config.search.candidates if s.family not in WEIGHTED_FAMILIES
        ]
        if unweighted:
            raise _fail(
                source,
                "train.half_life",
                f"family {unweighted[0]!r} takes no sample weights; weighted families: "
                f"{', '.join(sorted(WEIGHTED_FAMILIES))}",
            )
    if not 0 < train.final_refit_tolerance < 1:
        raise _fail(
            source,
            "train.final_refit_tolerance",
            f"expected a fraction between 0 and 1, got {train.final_refit_tolerance}",
        )


def _check_monitor(config: Config, source: str) -> None:
    monitor = config.monitor
    durations = {
        "monitor.window": monitor.window,
        "monitor.triggers.max_model_age": monitor.triggers.max_model_age,
        "monitor.triggers.label_horizon": monitor.triggers.label_horizon,
        "monitor.policy.cooldown": monitor.policy.cooldown,
        "monitor.policy.claim_ttl": monitor.policy.claim_ttl,
        "monitor.policy.retry_backoff": monitor.policy.retry_backoff,
        "monitor.policy.max_retry_backoff": monitor.policy.max_retry_backoff,
    }
    for path, text in durations.items():
        if text is not None:
            try:
                parse_duration(text)
            except ValueError as exc:
                raise _fail(source, path, str(exc)) from None

    # monitor.drift checks itself (DriftSettings.__post_init__) while it is built.
    confidence = monitor.triggers.performance_confidence
    if not 0 < confidence < 1:
        raise _fail(
            source,
            "monitor.triggers.performance_confidence",
            f"expected a fraction between 0 and 1, got {confidence}",
        )
    if not 0 < monitor.triggers.large_drift_share <= 1:
        raise _fail(
            source,
            "monitor.triggers.large_drift_share",
            f"expected a fraction in (0, 1], got {monitor.triggers.large_drift_share}",
        )
    metric = monitor.triggers.performance_metric
    if metric is not None and metric not in METRICS[config.task]:
        raise _fail(
            source,
            "monitor.triggers.performance_metric",
            f"expected one of {', '.join(METRICS[config.task])} for {config.task}, got {metric!r}",
        )
    for path, count in (
        ("monitor.min_rows", monitor.min_rows),
        ("monitor.triggers.min_labelled", monitor.triggers.min_labelled),
    ):
        if count < 1:
            raise _fail(source, path, f"expected a positive integer, got {count}")
    if monitor.report_rows < 0:
        raise _fail(source, "monitor.report_rows", "expected 0 (no reports) or a positive integer")
    if monitor.policy.min_new_rows < 0:
        raise _fail(source, "monitor.policy.min_new_rows", "expected an integer >= 0")
    if monitor.policy.max_failed_runs < 1:
        raise _fail(source, "monitor.policy.max_failed_runs", "expected a positive integer")


def parse_timestamp(text: str) -> Any:
    """ISO 8601 -> timezone-aware UTC datetime (naive input is taken as UTC)."""
    from datetime import UTC, datetime

    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
