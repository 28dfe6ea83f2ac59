"""The rollout's rules and its live-metric sources, without predictors: the verdicts at
their boundaries, the two-sample interval, histogram quantiles, the PromQL (checked by
promtool) and Prometheus' API answer as the client reads it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import yaml

from ctpipe import evaluation
from ctpipe.config import Config
from ctpipe.monitor.metrics import MonitorMetrics
from ctpipe.rollout import judge
from ctpipe.rollout.evidence import LiveComparison
from ctpipe.rollout.health import Counters, Health, HealthError, Prometheus, quantile
from ctpipe.rollout.state import CANARY, PROMOTED, ROLLED_BACK, SHADOW, Rollout
from tests.conftest import check_metrics, make_config

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _config(tmp_path: Path, **rollout: Any) -> Config:
    config = make_config(tmp_path / "state")
    settings = dataclasses.replace(config.deploy.rollout, strategy="progressive", **rollout)
    return config.replace(
        deploy=dataclasses.replace(config.deploy, canary_traffic_percent=10, rollout=settings)
    )


def _rollout(phase: str, started: datetime = NOW) -> Rollout:
    at = started.isoformat()
    return Rollout("m", "1", "2", phase, at, at, 10 if phase == CANARY else 0)


def _compared(low: float, high: float) -> LiveComparison:
    return LiveComparison("paired", "accuracy", 500, 0.8, 0.79, low, high)


def test_shadow_verdicts(tmp_path: Path) -> None:
    config = _config(tmp_path)  # gate.margin 0.01 by default
    shadow = _rollout(SHADOW)
    assert judge.judge(config, shadow, _compared(-0.005, 0.02), None, NOW).action == CANARY
    assert judge.judge(config, shadow, _compared(-0.05, -0.001), None, NOW).action == ROLLED_BACK
    assert judge.judge(config, shadow, _compared(-0.05, 0.01), None, NOW).action == judge.WAIT
    no_canary = config.replace(deploy=dataclasses.replace(config.deploy, canary_traffic_percent=0))
    assert judge.judge(no_canary, shadow, _compared(0.0, 0.02), None, NOW).action == PROMOTED
    unjudged = LiveComparison("paired", "accuracy", 30)
    later = NOW + timedelta(days=7)
    assert judge.judge(config, shadow, unjudged, None, NOW).action == judge.WAIT
    assert judge.judge(config, shadow, unjudged, None, later).action == ROLLED_BACK


def test_a_canary_is_never_promoted_without_measured_guardrails(tmp_path: Path) -> None:
    config = _config(tmp_path, min_requests=50)
    canary = _rollout(CANARY)
    clears = _compared(0.0, 0.03)
    verdict = judge.judge(config, canary, clears, None, NOW)
    assert verdict.action == judge.WAIT and "not measured" in " ".join(verdict.reasons)
    few = {"2": Health(10, 0, 0.01), "1": Health(100, 0, 0.01)}
    assert judge.judge(config, canary, clears, few, NOW).action == judge.WAIT
    good = {"2": Health(60, 1, 0.011), "1": Health(600, 2, 0.010)}
    assert judge.judge(config, canary, clears, good, NOW).action == PROMOTED


@pytest.mark.parametrize(
    ("canary", "reason"),
    [(Health(100, 5, 0.01), "error rate:"), (Health(100, 0, 0.031), "latency:")],
)
def test_guardrails_roll_back_even_when_labels_look_good(
    tmp_path: Path, canary: Health, reason: str
) -> None:
    config = _config(tmp_path, max_error_rate=0.02, max_latency_ratio=1.5)
    health = {"2": canary, "1": Health(1000, 1, 0.02)}
    verdict = judge.judge(config, _rollout(CANARY), _compared(0.01, 0.05), health, NOW)
    assert verdict.action == ROLLED_BACK
    assert any(r.startswith(reason) for r in verdict.reasons)


def test_two_sample_interval_is_wider_than_the_paired_one() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 2000)
    # The challenger errs on most of the rows the champion errs on: pairing cancels that.
    draw = rng.random(2000)
    champion = np.where(draw < 0.8, truth, 1 - truth)
    challenger = np.where(draw < 0.85, truth, 1 - truth)
    target = evaluation.Target.of(truth, "classification", (0, 1))
    eye = np.eye(2)
    paired = evaluation.paired_bootstrap(
        "accuracy", target, eye[challenger], eye[champion], higher_is_better=True,
        samples=500, confidence=0.95, seed=0, champion_version="1",
    )  # fmt: skip
    two = evaluation.two_sample_bootstrap(
        "accuracy", (target, eye[challenger]), (target, eye[champion]), higher_is_better=True,
        samples=500, confidence=0.95, seed=0, champion_version="1",
    )  # fmt: skip
    assert two.improvement == pytest.approx(paired.improvement)
    assert two.high - two.low > 2 * (paired.high - paired.low)
    assert two.low < two.improvement < two.high


def test_histogram_quantile_matches_prometheus_rules() -> None:
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.95, buckets) == pytest.approx(0.075)
    assert quantile(0.95, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == pytest.approx(0.1)
    since = Counters(10, 1, ((0.1, 8.0), (float("inf"), 10.0)))
    now = Counters(110, 3, ((0.1, 100.0), (float("inf"), 110.0)))
    assert (now - since).health() == Health(
        100, 2, quantile(0.95, [(0.1, 92), (float("inf"), 100)])
    )
    assert Counters.from_dict(json.loads(json.dumps(now.to_dict()))) == now


def test_the_promql_parses(tmp_path: Path, promtool: str) -> None:
    queries = Prometheus("http://unused").queries("demo-model", 3600)
    rules = {
        "groups": [
            {
                "name": "ctpipe-rollout-queries",
                "rules": [
                    {"record": f"ctpipe:rollout_{name}:by_version", "expr": expr}
                    for name, expr in queries.items()
                ],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


class _Api(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, Any]] = {}
    seen: ClassVar[list[dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        type(self).seen.append(query)
        promql = query["query"][0]
        kind = (
            "p95" if "histogram_quantile" in promql else "errors" if "5.." in promql else "requests"
        )
        body = json.dumps(self.answers[kind]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _vector(values: dict[str, str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"version": v}, "value": [1764547200.0, x]} for v, x in values.items()
            ],
        },
    }


def test_prometheus_answers_are_read_per_version() -> None:
    _Api.answers = {
        "requests": _vector({"1": "900.0", "2": "100.0"}),
        "errors": _vector({"2": "3.0"}),
        "p95": _vector({"1": "0.012", "2": "NaN"}),
    }
    _Api.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        health = Prometheus(url).measure("demo-model", NOW - timedelta(hours=1), NOW, {})
        assert health == {"1": Health(900, 0, 0.012), "2": Health(100, 3, None)}
        assert all(q["time"] == [f"{NOW.timestamp():.3f}"] for q in _Api.seen)
        assert all("[3600s]" in q["query"][0] for q in _Api.seen)
        _Api.answers["requests"] = {"status": "error", "error": "parse error"}
        with pytest.raises(HealthError, match="refused"):
            Prometheus(url).measure("demo-model", NOW - timedelta(hours=1), NOW, {})
    finally:
        server.shutdown()
    with pytest.raises(HealthError, match="did not answer"):
        Prometheus(url).measure("demo-model", NOW - timedelta(hours=1), NOW, {})


def test_rollout_metrics_pass_promtool(promtool: str) -> None:
    metrics = MonitorMetrics()
    metrics.record("demo-model", action="none")
    metrics.record_rollout(
        "demo-model", phase=ROLLED_BACK, traffic_ratio=0.0, rollbacks=2, promotions=1
    )
    text = metrics.exposition().decode()
    assert 'ctpipe_rollout_rollbacks_total{model="demo-model"} 2.0' in text
    assert 'ctpipe_rollout_phase{model="demo-model",phase="rolled_back"} 1.0' in text
    check_metrics(promtool, text)
