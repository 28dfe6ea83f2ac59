"""Alerts and dashboard: valid, and built on the metric names the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ctpipe.monitor import metrics as monitor_metrics
from ctpipe.serving import metrics as serving
from tests.manifests.conftest import MANIFESTS, Doc, one, overlay

METRIC = re.compile(r"\bctpipe_[a-z0-9_]+")
DASHBOARD = MANIFESTS / "components/monitoring/ctpipe-dashboard.json"


def exported_names() -> set[str]:
    """Every series name the code exports, histogram and counter suffixes included."""
    m = monitor_metrics
    names = {m.DRIFT_SHARE, m.FEATURE_DRIFT, m.DECISION, m.TRIGGER_FIRED, m.CHAMPION_AGE}
    names |= {m.LABELLED_METRIC, m.LAST_RUN, m.ROWS, m.BLOCKED, m.FAILED_RUNS, m.SCHEMA_PENDING}
    # Every other name the monitor pushes (the rollout's, for one), by its module constants.
    names |= {
        v for k, v in vars(m).items() if k.isupper() and isinstance(v, str) and METRIC.fullmatch(v)
    }
    names |= {serving.REQUESTS, serving.ROWS, serving.MODEL_INFO, serving.LOG_PENDING}
    names |= {serving.LOG_FAILURES, serving.LOG_LOST}
    for histogram in (serving.LATENCY, serving.SCORE):
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    return names


def rules() -> dict[str, Any]:
    rule = one(overlay("gpu-cloud"), "PrometheusRule", "ctpipe")
    return {"groups": rule["spec"]["groups"]}


def alerts() -> dict[str, Doc]:
    return {r["alert"]: r for g in rules()["groups"] for r in g["rules"] if "alert" in r}


def dashboard() -> Doc:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_the_promised_alerts_exist() -> None:
    found = alerts()
    for name in (
        "CtpipeDataDrift",
        "CtpipeModelStale",
        "CtpipePredictorErrorRate",
        "CtpipeMonitorBlocked",
        "CtpipeRolloutRolledBack",
    ):
        assert name in found
        assert found[name]["labels"]["severity"] in {"warning", "critical"}
        assert found[name]["annotations"]["summary"]


def test_alerts_and_panels_use_exported_metric_names() -> None:
    exported = exported_names()
    used = {m for r in alerts().values() for m in METRIC.findall(r["expr"])}
    used |= {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert used - exported == set(), "names the code does not export"
    # And the dashboard shows every family the code exports.
    shown = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    assert families - {re.sub(r"_(bucket|sum|count)$", "", n) for n in shown} == set()


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "ctpipe"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "model"} <= variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
    config_map = one(overlay("gpu-cloud"), "ConfigMap", "ctpipe-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["ctpipe-dashboard.json"]) == board


def test_monitors_select_what_ctpipe_runs() -> None:
    docs = overlay("gpu-cloud")
    pod_monitor = one(docs, "PodMonitor", "ctpipe-predictor")
    isvc = one(docs, "InferenceService", "ctpipe-demo")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]
    }
    ports = {p["name"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]}
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= ports
    service_monitor = one(docs, "ServiceMonitor", "ctpipe-pushgateway")
    assert all(e["honorLabels"] for e in service_monitor["spec"]["endpoints"])
    service = one(docs, "Service", "ctpipe-pushgateway")
    assert (
        service_monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    cron = one(docs, "CronJob", "ctpipe-monitor")
    env = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    url = {e["name"]: e.get("value") for e in env}[monitor_metrics.PUSHGATEWAY_ENV]
    assert url == "http://ctpipe-pushgateway.ctpipe.svc.cluster.local:9091"


def run(promtool: str, *args: str, cwd: Path) -> None:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)


def test_promtool_accepts_the_monitor_metrics(promtool: str) -> None:
    """The exposition, every gauge set, passes promtool's naming lint (no gauge ends in
    _total, units spelled out, ...)."""
    registry = monitor_metrics.MonitorMetrics()
    registry.record(
        "m",
        action="blocked",
        drift_share=0.4,
        feature_scores={"age": {"p_value": 0.01}},
        triggers={"data_drift": True},
        champion_age_seconds=60.0,
        labelled_metrics={"roc_auc": 0.8},
        rows=10,
        blocked=True,
        failed_runs=3,
        schema_changes_pending=1,
    )
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=registry.exposition(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


DRIFT_TEXT = (
    "50% of the features drifted in the latest window. The monitor retrains when the policy "
    "allows it (cooldown, new labelled rows); see its decision records."
)
STALE_TEXT = (
    "The champion was registered longer ago than the retraining schedule allows. Check the "
    "recurring run and the monitor's decisions: runs may be failing or never blessed."
)
BLOCKED_TEXT = (
    "3 runs failed in a row. The latest decision record (state_dir/monitor/<model>/decisions) "
    "gives the reason and the last error. Fix the cause, then run `ctpipe monitor --manual`: "
    "a run that ends lifts the block."
)
SCHEMA_TEXT = (
    "The data differs from the stored schema in distribution and validation.evolution is "
    "manual. `ctpipe schema show` lists the change; `ctpipe schema accept --run <run id>` "
    "stores it and lifts the block."
)
ERROR_TEXT = (
    "More than 5% of inference requests answered with a server error for 10 minutes. Check "
    "the predictor's log; roll back with the deploy step if a new champion is at fault."
)
LOG_FAILING_TEXT = (
    "Flushes of the prediction log have failed in a row for 5 minutes; the monitor sees no "
    "traffic that is not written. Check the object store and the predictor's credentials."
)
LOST_TEXT = (
    "The predictor's memory buffer and its local journal were both full or failing, so "
    "acknowledged rows were dropped. Check the object store, the journal volume and the "
    "predictor's log."
)
ROLLBACK_TEXT = (
    "A challenger that passed the gate on history was rolled back on live traffic: the "
    "champion serves all traffic again, at its own pinned version, and the challenger stays "
    "registered. `ctpipe rollout status` and the rollout's decision records "
    "(state_dir/monitor/<model>) give the evidence; retrain or fix the data before the next "
    "challenger."
)
# Synthetic series (one sample a minute) that must fire each alert, next to series that must
# not, as Prometheus itself evaluates them: promtool's rule unit tests. The expected
# annotations check that the templates render.
RULE_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'ctpipe_monitor_trigger_fired{job="ctpipe-monitor",model="m",trigger="data_drift"}',
                "values": "0x29 1x120",
            },
            {
                "series": 'ctpipe_monitor_drifted_features_ratio{job="ctpipe-monitor",model="m"}',
                "values": "0.1x29 0.5x120",
            },
            {
                "series": 'ctpipe_monitor_trigger_fired{job="ctpipe-monitor",model="calm",trigger="data_drift"}',
                "values": "0x150",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "60m", "alertname": "CtpipeDataDrift", "exp_alerts": []},
            {
                "eval_time": "2h",
                "alertname": "CtpipeDataDrift",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "m: the live data has drifted from the champion's training data",
                            "description": DRIFT_TEXT,
                        },
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # 36 days old and growing; and a fresh one.
            {"series": 'ctpipe_champion_age_seconds{model="m"}', "values": "3110400+60x150"},
            {"series": 'ctpipe_champion_age_seconds{model="fresh"}', "values": "86400+60x150"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "2h",
                "alertname": "CtpipeModelStale",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "m: the champion is 36d 2h 0m 0s old",
                            "description": STALE_TEXT,
                        },
                    }
                ],
            }
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # Two failures (not blocked yet), then a third: blocked. Another model never is.
            {
                "series": 'ctpipe_monitor_blocked{job="ctpipe-monitor",model="m"}',
                "values": "0x59 1x60",
            },
            {
                "series": 'ctpipe_monitor_consecutive_failed_runs{job="ctpipe-monitor",model="m"}',
                "values": "2x59 3x60",
            },
            {
                "series": 'ctpipe_monitor_blocked{job="ctpipe-monitor",model="ok"}',
                "values": "0x120",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "58m", "alertname": "CtpipeMonitorBlocked", "exp_alerts": []},
            {
                "eval_time": "90m",
                "alertname": "CtpipeMonitorBlocked",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "critical"},
                        "exp_annotations": {
                            "summary": "m: the monitor is blocked and submits no retraining runs",
                            "description": BLOCKED_TEXT,
                        },
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # A change waits from minute 30 and is accepted at minute 90; another model has none.
            {
                "series": 'ctpipe_monitor_schema_changes_pending{job="ctpipe-monitor",model="m"}',
                "values": "0x29 1x60 0x30",
            },
            {
                "series": 'ctpipe_monitor_schema_changes_pending{job="ctpipe-monitor",model="ok"}',
                "values": "0x120",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "32m", "alertname": "CtpipeSchemaChangeNeedsApproval", "exp_alerts": []},
            {
                "eval_time": "60m",
                "alertname": "CtpipeSchemaChangeNeedsApproval",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "m: a schema change waits for approval; no runs are submitted",
                            "description": SCHEMA_TEXT,
                        },
                    }
                ],
            },
            {"eval_time": "110m", "alertname": "CtpipeSchemaChangeNeedsApproval", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'ctpipe_predictor_requests_total{model="m",protocol="v2",status="200"}',
                "values": "0+90x30",
            },
            {
                "series": 'ctpipe_predictor_requests_total{model="m",protocol="v2",status="500"}',
                "values": "0+10x30",
            },
            {
                "series": 'ctpipe_predictor_requests_total{model="ok",protocol="v2",status="200"}',
                "values": "0+100x30",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "20m",
                "alertname": "CtpipePredictorErrorRate",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "critical"},
                        "exp_annotations": {
                            "summary": "m: 10% of predictions fail",
                            "description": ERROR_TEXT,
                        },
                    }
                ],
            }
        ],
    },
]


RULE_TESTS += [
    {
        "interval": "1m",
        "input_series": [
            # One failed flush at minute 10, retried in time; then failing from minute 22 to 42.
            {
                "series": 'ctpipe_predictor_log_consecutive_failed_flushes{model="m"}',
                "values": "0x9 1 0x10 1x20 0x20",
            },
            {
                "series": 'ctpipe_predictor_log_consecutive_failed_flushes{model="ok"}',
                "values": "0x60",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "13m", "alertname": "CtpipePredictionLogFailing", "exp_alerts": []},
            {
                "eval_time": "30m",
                "alertname": "CtpipePredictionLogFailing",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "m: the prediction log cannot be written",
                            "description": LOG_FAILING_TEXT,
                        },
                    }
                ],
            },
            {"eval_time": "50m", "alertname": "CtpipePredictionLogFailing", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # A row lost a minute from minute 30; "ok" restarted with rows a torn journal lost
            # before these series start, and loses none after.
            {
                "series": 'ctpipe_predictor_log_lost_rows_total{model="m"}',
                "values": "0x29 0+1x30",
            },
            {"series": 'ctpipe_predictor_log_lost_rows_total{model="ok"}', "values": "3x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": "CtpipePredictionLogLostRows", "exp_alerts": []},
            {
                "eval_time": "55m",
                "alertname": "CtpipePredictionLogLostRows",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "critical"},
                        "exp_annotations": {
                            "summary": "m: the prediction log lost 15 acknowledged rows in 15m",
                            "description": LOST_TEXT,
                        },
                    }
                ],
            },
        ],
    },
]


RULE_TESTS += [
    {
        "interval": "1m",
        "input_series": [
            # The monitor pushes the counter on every run; a rollback at minute 60. Another
            # model's rollout never rolls back.
            {
                "series": 'ctpipe_rollout_rollbacks_total{job="ctpipe-monitor",model="m"}',
                "values": "0x59 1x180",
            },
            {
                "series": 'ctpipe_rollout_rollbacks_total{job="ctpipe-monitor",model="ok"}',
                "values": "0x240",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "55m", "alertname": "CtpipeRolloutRolledBack", "exp_alerts": []},
            {
                "eval_time": "90m",
                "alertname": "CtpipeRolloutRolledBack",
                "exp_alerts": [
                    {
                        "exp_labels": {"model": "m", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "m: the rollout rolled a challenger back",
                            "description": ROLLBACK_TEXT,
                        },
                    }
                ],
            },
            # An hour on, the rollback is no news.
            {"eval_time": "3h", "alertname": "CtpipeRolloutRolledBack", "exp_alerts": []},
        ],
    },
]


def test_alerts_fire_on_synthetic_series(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": RULE_TESTS}, sort_keys=False)
    )
    run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
