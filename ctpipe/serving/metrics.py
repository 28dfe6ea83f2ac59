"""Prometheus metrics of the predictor, served at /metrics next to KServe's own.

The names are the contract with manifests/components/monitoring (alerts, dashboard).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = "ctpipe_predictor_requests_total"  # {model, protocol, status}
LATENCY = "ctpipe_predictor_request_duration_seconds"  # {model, protocol}
ROWS = "ctpipe_predictor_rows_total"  # {model}
SCORE = "ctpipe_predictor_prediction_score"  # {model}: the distribution of scores served
MODEL_INFO = "ctpipe_predictor_model_info"  # {model, version} = 1 for the version serving
LOG_PENDING = "ctpipe_predictor_log_pending_rows"  # {model}: rows waiting for the next flush
LOG_FAILURES = "ctpipe_predictor_log_failed_flushes_total"  # {model}
LOG_LOST = "ctpipe_predictor_log_lost_rows"  # {model}: acknowledged rows the log lost, ever

# The model label of a request whose path names another model: labels come from the
# server's own name, never from the URL, so no client can add series.
UNKNOWN_MODEL = "unknown"

# Prometheus appends these suffixes to the families above.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10))

requests = Counter(
    REQUESTS.removesuffix("_total"),
    "Inference requests by outcome",
    ["model", "protocol", "status"],
)
latency = Histogram(
    LATENCY, "Inference request latency", ["model", "protocol"], buckets=LATENCY_BUCKETS
)
rows = Counter(ROWS.removesuffix("_total"), "Rows predicted", ["model"])
score = Histogram(
    SCORE,
    "Scores served (positive-class probability, or the value)",
    ["model"],
    buckets=SCORE_BUCKETS,
)
model_info = Gauge(MODEL_INFO, "The model version being served (1)", ["model", "version"])
log_pending = Gauge(LOG_PENDING, "Prediction log rows not yet written", ["model"])
log_failures = Gauge(LOG_FAILURES, "Prediction log flushes that failed so far", ["model"])
log_lost = Gauge(
    LOG_LOST,
    "Acknowledged prediction log rows lost so far (memory buffer and journal full or failing)",
    ["model"],
)
