"""Monitor decisions as Prometheus gauges, pushed to a Pushgateway when one is configured.

A monitor run is a short-lived CronJob, so nothing scrapes it: it pushes. Each model is
pushed as its own group (grouping key `model`) with replace semantics, so a series the
latest run no longer reports - a dropped feature, a cleared trigger - disappears from the
gateway instead of keeping its old value.

A failed push does not raise: `push` returns a PushResult and the caller decides. The
monitor's decision does not depend on the metrics reaching Prometheus, so it should log
the failure and carry on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, push_to_gateway
from prometheus_client.metrics_core import Metric

PUSHGATEWAY_ENV = "CTPIPE_PUSHGATEWAY_URL"
DEFAULT_JOB = "ctpipe-monitor"
PUSH_TIMEOUT_SECONDS = 10.0

# Metric names, by the Prometheus conventions (`promtool check metrics` lints them on the
# Pushgateway's exposition: tests/pipelines/test_pushgateway_promtool.py). All are gauges,
# so none ends in `_total`; a unit ends the name where there is one (`_ratio` for a share,
# `_seconds`, `_rows`). Labels are bounded: the model, features of its schema, and the
# fixed sets of actions, triggers and configured metrics below. The rollout's counts of
# rollbacks and promotions are counters (`_total`), kept in its decision records.
DRIFT_SHARE = "ctpipe_monitor_drifted_features_ratio"
FEATURE_DRIFT = "ctpipe_monitor_feature_drift"
DECISION = "ctpipe_monitor_decision"
TRIGGER_FIRED = "ctpipe_monitor_trigger_fired"
CHAMPION_AGE = "ctpipe_champion_age_seconds"
LABELLED_METRIC = "ctpipe_monitor_labelled_metric"
LAST_RUN = "ctpipe_monitor_last_run_timestamp_seconds"
ROWS = "ctpipe_monitor_rows"
BLOCKED = "ctpipe_monitor_blocked"
FAILED_RUNS = "ctpipe_monitor_consecutive_failed_runs"
SCHEMA_PENDING = "ctpipe_monitor_schema_changes_pending"

ROLLOUT_PHASE = "ctpipe_rollout_phase"  # {model, phase}: 1 for the current one
ROLLOUT_TRAFFIC = "ctpipe_rollout_challenger_traffic_ratio"
ROLLBACKS = "ctpipe_rollout_rollbacks_total"
PROMOTIONS = "ctpipe_rollout_promotions_total"
ROLLOUT_PHASES = ("shadow", "canary", "promoted", "rolled_back")

# Label names.
MODEL_LABEL = "model"
FEATURE_LABEL = "feature"
STATISTIC_LABEL = "statistic"
ACTION_LABEL = "action"
TRIGGER_LABEL = "trigger"
METRIC_LABEL = "metric"

# What a monitor run can decide, and what can make it act.
ACTION_NONE = "none"
ACTION_SUBMIT = "submit"
ACTION_SKIP = "skip"
ACTION_BLOCKED = "blocked"
ACTIONS = (ACTION_NONE, ACTION_SUBMIT, ACTION_SKIP, ACTION_BLOCKED)
TRIGGERS = ("schedule", "data_drift", "performance", "concept_drift", "manual")


def resolve_gateway(gateway_url: str | None = None) -> str | None:
    """The Pushgateway to use: the argument, else $CTPIPE_PUSHGATEWAY_URL, else None."""
    url = gateway_url or os.environ.get(PUSHGATEWAY_ENV, "")
    return url.strip() or None


@dataclass(frozen=True)
class PushResult:
    """What `push` did. True only when every recorded model reached the gateway."""

    gateway: str | None  # None: no gateway configured, nothing was tried
    pushed: tuple[str, ...] = ()  # models whose group was replaced
    error: str | None = None

    @property
    def configured(self) -> bool:
        return self.gateway is not None

    def __bool__(self) -> bool:
        return self.configured and self.error is None and bool(self.pushed)

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        if not self.configured:
            return f"no Pushgateway configured (set {PUSHGATEWAY_ENV}); metrics not pushed"
        if not self.pushed:
            return "nothing recorded; nothing pushed"
        return f"pushed metrics for {', '.join(self.pushed)} to {self.gateway}"


class MonitorMetrics:
    """The gauges of monitor runs, on a registry of their own (never the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.drift_share = Gauge(
            DRIFT_SHARE, "Share of features that drifted (0 to 1)", [MODEL_LABEL], registry=reg
        )
        self.feature_drift = Gauge(
            FEATURE_DRIFT,
            "Per-feature drift statistic (a score or p-value, named by `statistic`)",
            [MODEL_LABEL, FEATURE_LABEL, STATISTIC_LABEL],
            registry=reg,
        )
        self.decision = Gauge(
            DECISION,
            "1 for the action the monitor took, 0 for the others",
            [MODEL_LABEL, ACTION_LABEL],
            registry=reg,
        )
        self.trigger_fired = Gauge(
            TRIGGER_FIRED,
            "1 when the trigger fired in the latest run",
            [MODEL_LABEL, TRIGGER_LABEL],
            registry=reg,
        )
        self.champion_age = Gauge(
            CHAMPION_AGE, "Seconds since the champion was registered", [MODEL_LABEL], registry=reg
        )
        self.labelled_metric = Gauge(
            LABELLED_METRIC,
            "Performance metric on recently labelled predictions",
            [MODEL_LABEL, METRIC_LABEL],
            registry=reg,
        )
        self.last_run = Gauge(
            LAST_RUN, "Unix time of the latest monitor run", [MODEL_LABEL], registry=reg
        )
        self.rows = Gauge(
            ROWS, "Prediction rows in the monitored window", [MODEL_LABEL], registry=reg
        )
        self.blocked = Gauge(
            BLOCKED,
            "1 while the monitor submits no runs until someone acts (see its decision record)",
            [MODEL_LABEL],
            registry=reg,
        )
        self.failed_runs = Gauge(
            FAILED_RUNS,
            "Retraining runs failed in a row; a run that ends resets it",
            [MODEL_LABEL],
            registry=reg,
        )
        self.schema_pending = Gauge(
            SCHEMA_PENDING,
            "Schema changes waiting for `ctpipe schema accept` (validation.evolution: manual)",
            [MODEL_LABEL],
            registry=reg,
        )
        self.rollout_phase = Gauge(
            ROLLOUT_PHASE,
            "1 for the phase of the latest rollout (shadow, canary, promoted, rolled_back)",
            [MODEL_LABEL, "phase"],
            registry=reg,
        )
        self.rollout_traffic = Gauge(
            ROLLOUT_TRAFFIC,
            "Share of live traffic the challenger answers (0 to 1)",
            [MODEL_LABEL],
            registry=reg,
        )
        self.rollbacks = Counter(
            ROLLBACKS.removesuffix("_total"),
            "Rollouts rolled back (harm, error rate, latency, timeout)",
            [MODEL_LABEL],
            registry=reg,
        )
        self.promotions = Counter(
            PROMOTIONS.removesuffix("_total"),
            "Rollouts that promoted their challenger on live evidence",
            [MODEL_LABEL],
            registry=reg,
        )
        # Every series set per model, so that a new record replaces the model's old ones.
        self._series: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._series))

    def record(
        self,
        model: str,
        *,
        action: str,
        drift_share: float | None = None,
        feature_scores: Mapping[str, Mapping[str, float]] | None = None,
        triggers: Mapping[str, bool] | None = None,
        champion_age_seconds: float | None = None,
        labelled_metrics: Mapping[str, float] | None = None,
        rows: int | None = None,
        blocked: bool | None = None,
        failed_runs: int | None = None,
        schema_changes_pending: int | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Set the model's gauges from one run, replacing what an earlier record set.

        `feature_scores` is {feature: {statistic: value}}. `triggers` is {trigger: fired};
        triggers left out are 0. None leaves a gauge out (e.g. no champion yet).
        `blocked`: the monitor submits nothing (too many failed runs in a row, or another
        block); `failed_runs`: runs failed in a row; `schema_changes_pending`: changes
        waiting for approval.
        """
        if not model:
            raise ValueError("model must be a non-empty name")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        unknown = sorted(set(triggers or {}) - set(TRIGGERS))
        if unknown:
            raise ValueError(
                f"unknown trigger(s) {', '.join(unknown)}; expected {', '.join(TRIGGERS)}"
            )
        if rows is not None and rows < 0:
            raise ValueError(f"rows must not be negative, got {rows}")
        if failed_runs is not None and failed_runs < 0:
            raise ValueError(f"failed_runs must not be negative, got {failed_runs}")
        if schema_changes_pending is not None and schema_changes_pending < 0:
            raise ValueError(
                f"schema_changes_pending must not be negative, got {schema_changes_pending}"
            )

        for gauge, labels in self._series.pop(model, []):
            gauge.remove(*labels)
        series: list[tuple[Gauge, tuple[str, ...]]] = []

        def put(gauge: Gauge, labels: Iterable[str], value: float) -> None:
            key = (model, *labels)
            gauge.labels(*key).set(float(value))
            series.append((gauge, key))

        if drift_share is not None:
            put(self.drift_share, (), drift_share)
        for feature, stats in (feature_scores or {}).items():
            for statistic, value in stats.items():
                put(self.feature_drift, (feature, statistic), value)
        for name in ACTIONS:
            put(self.decision, (name,), 1.0 if name == action else 0.0)
        for name in TRIGGERS:
            put(self.trigger_fired, (name,), 1.0 if (triggers or {}).get(name) else 0.0)
        if champion_age_seconds is not None:
            put(self.champion_age, (), champion_age_seconds)
        for metric, value in (labelled_metrics or {}).items():
            put(self.labelled_metric, (metric,), value)
        if rows is not None:
            put(self.rows, (), rows)
        if blocked is not None:
            put(self.blocked, (), 1.0 if blocked else 0.0)
        if failed_runs is not None:
            put(self.failed_runs, (), failed_runs)
        if schema_changes_pending is not None:
            put(self.schema_pending, (), schema_changes_pending)
        put(self.last_run, (), time.time() if timestamp is None else timestamp)
        self._series[model] = series

    def record_rollout(
        self,
        model: str,
        *,
        phase: str | None,
        traffic_ratio: float,
        rollbacks: int,
        promotions: int,
    ) -> None:
        """The latest rollout's phase (None: none yet) and the counts of rollouts ended each
        way (from the rollout's decision records). The counts go out on every visit, zeros
        included: increase() needs a sample before the first rollback to see it."""
        if phase is not None and phase not in ROLLOUT_PHASES:
            raise ValueError(f"unknown rollout phase {phase!r}")
        if phase is not None:
            for name in ROLLOUT_PHASES:
                self.rollout_phase.labels(model, name).set(1.0 if name == phase else 0.0)
        self.rollout_traffic.labels(model).set(traffic_ratio)
        self.rollbacks.labels(model).inc(rollbacks)
        self.promotions.labels(model).inc(promotions)

    def exposition(self) -> bytes:
        """Every recorded series in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    def push(
        self,
        gateway_url: str | None = None,
        job: str = DEFAULT_JOB,
        *,
        timeout: float = PUSH_TIMEOUT_SECONDS,
    ) -> PushResult:
        """Replace each recorded model's group {job, model} on the Pushgateway.

        The gateway is `gateway_url` or $CTPIPE_PUSHGATEWAY_URL; with neither, nothing is
        pushed and the result is false with `configured` False. A failure (gateway down,
        HTTP error) is reported in the result, not raised.
        """
        url = resolve_gateway(gateway_url)
        if url is None:
            return PushResult(gateway=None)
        done: list[str] = []
        for model in self.models:
            try:
                push_to_gateway(
                    url,
                    job=job,
                    registry=_OneModel(self.registry, model),
                    grouping_key={MODEL_LABEL: model},
                    timeout=timeout,
                )
            except (OSError, ValueError) as exc:  # URLError and HTTP errors are OSErrors
                return PushResult(
                    gateway=url,
                    pushed=tuple(done),
                    error=f"push to Pushgateway {url} (job={job}, model={model}) failed: {exc}",
                )
            done.append(model)
        return PushResult(gateway=url, pushed=tuple(done))


class _OneModel:
    """A registry view holding one model's samples: a push replaces exactly that group,
    and the gateway refuses samples whose `model` differs from the grouping key."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self._registry = registry
        self._model = model

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            samples = [s for s in family.samples if s.labels.get(MODEL_LABEL) == self._model]
            if samples:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = samples
                yield copy
