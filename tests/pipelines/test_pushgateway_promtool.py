"""The monitor's metrics, as a real Pushgateway serves them to Prometheus after a push,
pass `promtool check metrics`.

The push is the monitor's own (MonitorMetrics.push, what every monitor run calls) to a real
Pushgateway, with every gauge set for two models; a full monitor run needs a trained
champion and adds nothing to the names and types checked here (tests/pipelines/
test_monitor.py runs one against the same gateway). promtool reads the whole exposition,
the Pushgateway's own metrics included: they pass too, so nothing is filtered out.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ctpipe.monitor import metrics
from tests.conftest import check_metrics

# Every family a monitor run pushes: all gauges.
FAMILIES = {
    metrics.DRIFT_SHARE,
    metrics.FEATURE_DRIFT,
    metrics.DECISION,
    metrics.TRIGGER_FIRED,
    metrics.CHAMPION_AGE,
    metrics.LABELLED_METRIC,
    metrics.LAST_RUN,
    metrics.ROWS,
    metrics.BLOCKED,
    metrics.FAILED_RUNS,
    metrics.SCHEMA_PENDING,
}


def test_the_pushgateway_exposition_passes_promtool(pushgateway: str, promtool: str) -> None:
    recorded = metrics.MonitorMetrics()
    recorded.record(
        "promtool-blocked",
        action=metrics.ACTION_BLOCKED,
        drift_share=0.4,
        feature_scores={"age": {"p_value": 0.01}, "region": {"wasserstein": 0.3}},
        triggers={"data_drift": True, "performance": True},
        champion_age_seconds=86400.0,
        labelled_metrics={"roc_auc": 0.8, "log_loss": 0.4},
        rows=1200,
        blocked=True,
        failed_runs=3,
        schema_changes_pending=1,
    )
    recorded.record("promtool-quiet", action=metrics.ACTION_NONE, drift_share=0.0, rows=0)
    result = recorded.push(pushgateway)
    assert result, result.message

    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    check_metrics(promtool, text)

    # Every family the monitor pushes reached the gateway as a documented gauge.
    ours = {
        f.name: f
        for f in text_string_to_metric_families(text)
        if f.name.startswith("ctpipe_")
        and any(s.labels.get("model", "").startswith("promtool-") for s in f.samples)
    }
    assert set(ours) == FAMILIES
    for family in ours.values():
        assert family.type == "gauge" and not family.name.endswith("_total"), family.name
        assert family.documentation, family.name
