"""ctpipe.monitor.metrics: gauges of monitor decisions, and a real Pushgateway receiving them."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctpipe.monitor import metrics
from ctpipe.monitor.metrics import MonitorMetrics
from tests.conftest import free_port

PUSHGATEWAY_APT = "apt-get install -y prometheus-pushgateway"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, **match: str) -> Samples:
    """{(name, labels): value} of the samples whose labels include `match`; the matched
    labels are left out of the key."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if all(sample.labels.get(k) == v for k, v in match.items()):
                rest = frozenset((k, v) for k, v in sample.labels.items() if k not in match)
                found[(sample.name, rest)] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def record_example(registry: MonitorMetrics, model: str, **overrides: object) -> None:
    values: dict[str, object] = {
        "action": "submit",
        "drift_share": 0.4,
        "feature_scores": {
            "age": {"p_value": 0.001, "drift_score": 0.31},
            "plan": {"p_value": 0.2},
        },
        "triggers": {"data_drift": True, "schedule": False},
        "champion_age_seconds": 86_400.0,
        "labelled_metrics": {"roc_auc": 0.81, "accuracy": 0.77},
        "rows": 1234,
        "blocked": False,
        "failed_runs": 1,
        "schema_changes_pending": 0,
        "timestamp": 1_700_000_000.0,
    }
    values.update(overrides)
    registry.record(model, **values)  # type: ignore[arg-type]


def test_metric_names_are_prefixed_and_complete() -> None:
    names = [
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
    ]
    assert all(name.startswith("ctpipe_") for name in names)
    assert not any(name.endswith("_total") for name in names)  # gauges, not counters
    assert metrics.ACTIONS == ("none", "submit", "skip", "blocked")
    assert metrics.TRIGGERS == ("schedule", "data_drift", "performance", "concept_drift", "manual")


def test_exposition_holds_every_gauge_with_its_labels() -> None:
    registry = MonitorMetrics()
    record_example(registry, "churn")
    found = samples(registry.exposition().decode(), model="churn")

    assert found[key(metrics.DRIFT_SHARE)] == 0.4
    assert found[key(metrics.FEATURE_DRIFT, feature="age", statistic="p_value")] == 0.001
    assert found[key(metrics.FEATURE_DRIFT, feature="age", statistic="drift_score")] == 0.31
    assert found[key(metrics.FEATURE_DRIFT, feature="plan", statistic="p_value")] == 0.2
    assert {a: found[key(metrics.DECISION, action=a)] for a in metrics.ACTIONS} == {
        "none": 0.0,
        "submit": 1.0,
        "skip": 0.0,
        "blocked": 0.0,
    }
    assert {t: found[key(metrics.TRIGGER_FIRED, trigger=t)] for t in metrics.TRIGGERS} == {
        "schedule": 0.0,
        "data_drift": 1.0,
        "performance": 0.0,
        "concept_drift": 0.0,
        "manual": 0.0,
    }
    assert found[key(metrics.CHAMPION_AGE)] == 86_400.0
    assert found[key(metrics.LABELLED_METRIC, metric="roc_auc")] == 0.81
    assert found[key(metrics.LABELLED_METRIC, metric="accuracy")] == 0.77
    assert found[key(metrics.LAST_RUN)] == 1_700_000_000.0
    assert found[key(metrics.ROWS)] == 1234.0
    assert found[key(metrics.BLOCKED)] == 0.0
    assert found[key(metrics.FAILED_RUNS)] == 1.0
    assert found[key(metrics.SCHEMA_PENDING)] == 0.0
    assert len(found) == 21


def test_a_blocked_monitor_shows_in_its_gauges() -> None:
    registry = MonitorMetrics()
    record_example(
        registry, "churn", action="blocked", blocked=True, failed_runs=3, schema_changes_pending=1
    )
    found = samples(registry.exposition().decode(), model="churn")
    assert found[key(metrics.BLOCKED)] == 1.0
    assert found[key(metrics.FAILED_RUNS)] == 3.0
    assert found[key(metrics.SCHEMA_PENDING)] == 1.0
    assert found[key(metrics.DECISION, action="blocked")] == 1.0
    assert found[key(metrics.DECISION, action="submit")] == 0.0
    # Left out (no champion yet): no series at all, rather than a made-up 0.
    record_example(registry, "churn", blocked=None, failed_runs=None)
    found = samples(registry.exposition().decode(), model="churn")
    assert key(metrics.BLOCKED) not in found and key(metrics.FAILED_RUNS) not in found


def test_a_new_record_replaces_the_models_series_only() -> None:
    registry = MonitorMetrics()
    record_example(registry, "churn")
    record_example(registry, "fraud", action="none")
    record_example(
        registry,
        "churn",
        action="skip",
        feature_scores={"age": {"p_value": 0.5}},
        champion_age_seconds=None,
        labelled_metrics={},
    )
    text = registry.exposition().decode()
    churn = samples(text, model="churn")
    assert churn[key(metrics.DECISION, action="skip")] == 1.0
    assert churn[key(metrics.DECISION, action="submit")] == 0.0
    assert [k for k in churn if k[0] == metrics.FEATURE_DRIFT] == [
        key(metrics.FEATURE_DRIFT, feature="age", statistic="p_value")
    ]
    assert key(metrics.CHAMPION_AGE) not in churn
    assert not [k for k in churn if k[0] == metrics.LABELLED_METRIC]
    fraud = samples(text, model="fraud")
    assert fraud[key(metrics.DECISION, action="none")] == 1.0
    assert fraud[key(metrics.CHAMPION_AGE)] == 86_400.0
    assert registry.models == ("churn", "fraud")


def test_registries_are_private() -> None:
    first, second = MonitorMetrics(), MonitorMetrics()  # same names, no clash
    record_example(first, "churn")
    assert samples(second.exposition().decode()) == {}
    assert samples(first.exposition().decode())


def test_record_rejects_unknown_names() -> None:
    registry = MonitorMetrics()
    with pytest.raises(ValueError, match="unknown action 'retrain'"):
        registry.record("churn", action="retrain")
    with pytest.raises(ValueError, match=r"unknown trigger.*weather"):
        registry.record("churn", action="none", triggers={"weather": True})
    with pytest.raises(ValueError, match="rows"):
        registry.record("churn", action="none", rows=-1)
    with pytest.raises(ValueError, match="failed_runs"):
        registry.record("churn", action="none", failed_runs=-1)
    assert registry.models == ()


def test_no_gateway_configured_means_no_push(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    registry = MonitorMetrics()
    record_example(registry, "churn")
    result = registry.push()
    assert not result
    assert not result.configured
    assert result.error is None
    assert metrics.PUSHGATEWAY_ENV in result.message


def test_push_to_a_closed_port_reports_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    registry = MonitorMetrics()
    record_example(registry, "churn")
    url = f"http://127.0.0.1:{free_port()}"
    result = registry.push(url, timeout=5)
    assert not result
    assert result.configured
    assert result.pushed == ()
    assert result.error is not None
    assert url in result.error
    assert "model=churn" in result.error
    assert "refused" in result.error.lower()
    assert result.message == result.error


# -------------------------------------------------------------- real Pushgateway


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return response.read().decode()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.services
def test_a_real_pushgateway_receives_the_gauges(pushgateway: str) -> None:
    churn, fraud = unique("churn"), unique("fraud")
    registry = MonitorMetrics()
    record_example(registry, churn)
    record_example(registry, fraud, action="none", drift_share=0.0)
    result = registry.push(pushgateway)
    assert result, result.message
    assert result.pushed == tuple(sorted((churn, fraud)))

    text = scrape(pushgateway)
    got = samples(text, job=metrics.DEFAULT_JOB, model=churn)
    # The gateway adds `instance=""` to every pushed sample.
    assert got[key(metrics.DRIFT_SHARE, instance="")] == 0.4
    assert got[key(metrics.DECISION, action="submit", instance="")] == 1.0
    assert got[key(metrics.DECISION, action="none", instance="")] == 0.0
    assert got[key(metrics.TRIGGER_FIRED, trigger="data_drift", instance="")] == 1.0
    assert got[key(metrics.FEATURE_DRIFT, feature="age", statistic="p_value", instance="")] == (
        0.001
    )
    assert got[key(metrics.LABELLED_METRIC, metric="roc_auc", instance="")] == 0.81
    assert got[key(metrics.CHAMPION_AGE, instance="")] == 86_400.0
    assert got[key(metrics.ROWS, instance="")] == 1234.0
    # One group per model: the gateway stamps each group's push time with its grouping key.
    assert got[key("push_time_seconds", instance="")] > 0
    other = samples(text, job=metrics.DEFAULT_JOB, model=fraud)
    assert other[key(metrics.DECISION, action="none", instance="")] == 1.0
    assert other[key(metrics.DRIFT_SHARE, instance="")] == 0.0


@pytest.mark.services
def test_a_push_replaces_the_models_group(pushgateway: str) -> None:
    churn, fraud = unique("churn"), unique("fraud")
    first = MonitorMetrics()
    record_example(first, churn)
    record_example(first, fraud)
    assert first.push(pushgateway)

    # The next monitor run, in a new process, knows only churn and only one feature.
    second = MonitorMetrics()
    record_example(second, churn, action="none", feature_scores={"plan": {"p_value": 0.9}})
    assert second.push(pushgateway).pushed == (churn,)

    text = scrape(pushgateway)
    got = samples(text, job=metrics.DEFAULT_JOB, model=churn)
    features = {k for k in got if k[0] == metrics.FEATURE_DRIFT}
    assert features == {
        key(metrics.FEATURE_DRIFT, feature="plan", statistic="p_value", instance="")
    }
    assert got[key(metrics.DECISION, action="none", instance="")] == 1.0
    untouched = samples(text, job=metrics.DEFAULT_JOB, model=fraud)
    assert untouched[key(metrics.FEATURE_DRIFT, feature="age", statistic="p_value", instance="")]


@pytest.mark.services
def test_the_gateway_url_can_come_from_the_environment(
    pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = unique("env")
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, pushgateway)
    registry = MonitorMetrics()
    record_example(registry, model)
    result = registry.push(job="nightly")
    assert result and result.gateway == pushgateway
    got = samples(scrape(pushgateway), job="nightly", model=model)
    assert got[key(metrics.ROWS, instance="")] == 1234.0
