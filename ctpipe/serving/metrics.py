"""Prometheus metrics of the predictor, served at /metrics next to KServe's own.

The names are the contract with manifests/components/monitoring (alerts, dashboard). They
follow the Prometheus conventions, which `promtool check metrics` lints on a live scrape
(tests/serving/test_metrics_promtool.py): a counter is a Counter and ends in `_total`, a gauge
never does, a unit ends the name (`_seconds`, `_rows`), every family has help text, and every
label takes a bounded set of values (the server's own model name, never one from the URL).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class _LogFigures(Protocol):
    """What the prediction log writer reports (ctpipe.predlog.writer.PredictionLogWriter)."""

    @property
    def pending(self) -> int: ...

    @property
    def failed_flushes(self) -> int: ...

    @property
    def rows_lost(self) -> int: ...


REQUESTS = "ctpipe_predictor_requests_total"  # {model, protocol, status, version}
LATENCY = "ctpipe_predictor_request_duration_seconds"  # {model, protocol, version}
ROWS = "ctpipe_predictor_rows_total"  # {model}
SCORE = "ctpipe_predictor_prediction_score"  # {model}: the distribution of scores served
MODEL_INFO = "ctpipe_predictor_model_info"  # {model, version} = 1 for the version serving
LOG_PENDING = "ctpipe_predictor_log_pending_rows"  # {model}: rows waiting for the next flush
# {model}: log flushes failed in a row, 0 again after one succeeds (so a gauge)
LOG_FAILURES = "ctpipe_predictor_log_consecutive_failed_flushes"
LOG_LOST = "ctpipe_predictor_log_lost_rows_total"  # {model}: acknowledged rows the log lost
# Shadow scoring (ctpipe.serving.shadow): the challenger answers the same requests, off the
# request path. Counted in rows, as ROWS is: dropped and failed over scored is a share.
SHADOW_ROWS = "ctpipe_predictor_shadow_rows_total"  # {model}: rows scored and logged
SHADOW_DROPPED = "ctpipe_predictor_shadow_dropped_rows_total"  # {model}: the queue was full
SHADOW_FAILED = "ctpipe_predictor_shadow_failed_rows_total"  # {model}: the shadow's predict failed
SHADOW_INFO = "ctpipe_predictor_shadow_model_info"  # {model, version} = 1 for the shadow version

# The model label of a request whose path names another model: labels come from the
# server's own name, never from the URL, so no client can add series.
UNKNOWN_MODEL = "unknown"

# Prometheus appends these suffixes to the families above.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10))

requests = Counter(
    REQUESTS.removesuffix("_total"),
    "Inference requests by outcome",
    ["model", "protocol", "status", "version"],
)
latency = Histogram(
    LATENCY,
    "Inference request latency",
    ["model", "protocol", "version"],
    buckets=LATENCY_BUCKETS,
)
rows = Counter(ROWS.removesuffix("_total"), "Rows predicted", ["model"])


def start_version(model: str, version: str) -> None:
    """Create a version's request series at 0 before its first request: Prometheus'
    increase() counts from a series' first sample, so without this a rollout judging the
    canary would miss its first requests and its first errors."""
    for protocol in ("v1", "v2"):
        for status in ("200", "500"):
            requests.labels(model, protocol, status, version)
        latency.labels(model, protocol, version)


score = Histogram(
    SCORE,
    "Scores served (positive-class probability, or the value)",
    ["model"],
    buckets=SCORE_BUCKETS,
)
model_info = Gauge(MODEL_INFO, "The model version being served (1)", ["model", "version"])
shadow_rows = Counter(
    SHADOW_ROWS.removesuffix("_total"),
    "Rows the shadow model scored after the champion answered, and logged",
    ["model"],
)
shadow_dropped = Counter(
    SHADOW_DROPPED.removesuffix("_total"),
    "Rows left unscored by the shadow model: its queue was full",
    ["model"],
)
shadow_failed = Counter(
    SHADOW_FAILED.removesuffix("_total"),
    "Rows the shadow model failed to score (the answers were the champion's all the same)",
    ["model"],
)
shadow_info = Gauge(
    SHADOW_INFO,
    "The model version scoring in shadow (1; none when no shadow)",
    ["model", "version"],
)


class _LogCollector:
    """The prediction log writers' figures, read when Prometheus scrapes rather than when a
    request arrives: with no traffic a flush that recovered in the background still shows
    0 failures at once, so the alert on failed flushes does not stay stuck."""

    def __init__(self) -> None:
        self._writers: dict[str, _LogFigures] = {}
        self._lock = threading.Lock()

    def watch(self, model: str, writer: _LogFigures) -> None:
        with self._lock:
            self._writers[model] = writer

    def unwatch(self, model: str) -> None:
        with self._lock:
            self._writers.pop(model, None)

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            LOG_PENDING, "Prediction log rows not yet written", labels=["model"]
        )
        failures = GaugeMetricFamily(
            LOG_FAILURES,
            "Prediction log flushes failed in a row; 0 after one succeeds",
            labels=["model"],
        )
        # The writer's running total: a restarted predictor starts again from 0, which
        # Prometheus' increase() reads as a counter reset.
        lost = CounterMetricFamily(
            LOG_LOST.removesuffix("_total"),
            "Acknowledged prediction log rows lost (memory buffer and journal full or failing)",
            labels=["model"],
        )
        with self._lock:
            writers = dict(self._writers)
        for model, writer in writers.items():
            pending.add_metric([model], writer.pending)
            failures.add_metric([model], writer.failed_flushes)
            lost.add_metric([model], writer.rows_lost)
        yield from (pending, failures, lost)


log_figures = _LogCollector()
REGISTRY.register(log_figures)
