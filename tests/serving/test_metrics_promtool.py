"""The predictor's live /metrics passes `promtool check metrics`: counters end in _total and
are counters, gauges do not, every family has help text. Scraped from a real predictor
process after good and bad requests, so every ctpipe family has samples."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctpipe.data import synthetic
from ctpipe.serving import metrics
from tests.conftest import check_metrics
from tests.serving.conftest import Server

pytestmark = pytest.mark.services


# Every family the predictor exports, with its Prometheus type (the name prometheus_client's
# parser gives: a counter's family drops `_total`).
FAMILIES = {
    metrics.REQUESTS.removesuffix("_total"): "counter",
    metrics.LATENCY: "histogram",
    metrics.ROWS.removesuffix("_total"): "counter",
    metrics.SCORE: "histogram",
    metrics.MODEL_INFO: "gauge",
    metrics.LOG_PENDING: "gauge",
    metrics.LOG_FAILURES: "gauge",
    metrics.LOG_LOST.removesuffix("_total"): "counter",
    metrics.SHADOW_ROWS.removesuffix("_total"): "counter",
    metrics.SHADOW_DROPPED.removesuffix("_total"): "counter",
    metrics.SHADOW_FAILED.removesuffix("_total"): "counter",
    metrics.SHADOW_INFO: "gauge",
}


def instances(count: int) -> list[dict[str, Any]]:
    table = synthetic.generate(count, seed=3, world=7)
    return [
        {k: v for k, v in r.items() if k not in ("label", "event_time", "request_id")}
        for r in table.to_pylist()
    ]


def test_a_live_scrape_passes_promtool(server: Server, promtool: str) -> None:
    # Good requests, and bad ones: malformed JSON, an empty batch, another model's path.
    for count in (1, 5):
        status, body, _ = server.v1(instances(count))
        assert status == 200, body
    path = f"/v1/models/{server.model}:predict"
    assert server.post(path, b"{not json")[0] == 400
    assert server.post(path, {"instances": []})[0] == 400
    assert server.post("/v1/models/someone-else:predict", {"instances": instances(1)})[0] == 404
    time.sleep(1.0)  # a flush of the prediction log (--log-flush-seconds 0.5)
    server.v1(instances(1))  # the log's gauges are set on each logged request
    text = server.get("/metrics")

    check_metrics(promtool, text)

    # Every ctpipe family is in the scrape, typed and documented, so promtool saw it.
    # (prometheus_client's text format adds a `<family>_created` gauge per counter and
    # histogram: the time its series started.)
    found = {
        f.name: f
        for f in text_string_to_metric_families(text)
        if f.name.startswith("ctpipe_") and not f.name.endswith("_created")
    }
    assert {name: f.type for name, f in found.items()} == FAMILIES
    assert all(f.documentation for f in found.values())
    for family in found.values():
        if family.type != "counter":
            assert not family.name.endswith("_total"), family.name
    # Labels come from the server's name, never from the URL.
    models = {s.labels["model"] for f in found.values() for s in f.samples}
    assert models <= {server.model, metrics.UNKNOWN_MODEL}


def test_log_figures_are_read_at_scrape_time() -> None:
    """The prediction log's gauges and counter come from the writer when Prometheus scrapes:
    a flush that recovers with no traffic shows 0 failures at once (the alert on failed
    flushes would otherwise stay stuck), and lost rows are a counter, its total the writer's."""
    from prometheus_client import REGISTRY

    @dataclass
    class Writer:
        pending: int = 0
        failed_flushes: int = 0
        rows_lost: int = 0

    model = "promtool-unit"
    writer = Writer(pending=7, failed_flushes=3, rows_lost=5)

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"model": model})

    metrics.log_figures.watch(model, writer)
    try:
        assert value(metrics.LOG_PENDING) == 7.0
        assert value(metrics.LOG_FAILURES) == 3.0
        assert value(metrics.LOG_LOST) == 5.0
        writer.failed_flushes = 0  # the writer recovered in the background; no request came
        writer.rows_lost = 6
        assert value(metrics.LOG_FAILURES) == 0.0
        assert value(metrics.LOG_LOST) == 6.0
    finally:
        metrics.log_figures.unwatch(model)
    assert value(metrics.LOG_PENDING) is None
