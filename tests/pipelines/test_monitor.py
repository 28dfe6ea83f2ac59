"""The monitor end to end: a real champion (trained by the pipeline), a prediction log and
delayed labels on disk, the drift engine, the policy, a local submission, a real
Pushgateway, and the `ctpipe monitor` command's exit codes."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.errors import DataError
from ctpipe.monitor import policy, predlog
from ctpipe.monitor.runner import labels_root, predictions_root, run_monitor
from ctpipe.monitor.state import MonitorStore
from ctpipe.monitor.submit import LocalSubmitter
from ctpipe.pipelines.local import run_local
from tests.conftest import make_config

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def champion_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """A champion trained by the real pipeline on the first world of a drifting stream."""
    root = tmp_path_factory.mktemp("monitor")
    data = root / "train.parquet"
    synthetic.write(synthetic.generate(3000, seed=7), str(data))
    config = make_config(root / "state")
    monitor = dataclasses.replace(
        config.monitor,
        window="2d",
        min_rows=200,
        report_rows=500,
        triggers=dataclasses.replace(config.monitor.triggers, min_labelled=100),
        policy=dataclasses.replace(config.monitor.policy, cooldown="1h", min_new_rows=300),
    )
    config = config.replace(data=dataclasses.replace(config.data, uri=str(data)), monitor=monitor)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CTPIPE_TRAIN_THREADS", "1")
        run = run_local(config, out=io.StringIO())
        assert run.ok and run.registered_version == "1", run.errors
        yield config


def _serve(config: Config, table: pa.Table, version: str, labels: bool = True) -> None:
    """Predict `table` with the champion and log it like the predictor would."""
    model = registry.load_model(registry.champion(config))
    proba = model.predict_proba(table.to_pandas())[:, 1]
    frame = table.to_pylist()
    features = [
        {k: v for k, v in row.items() if k not in ("label", "event_time", "request_id")}
        for row in frame
    ]
    with predlog.PredictionLogWriter(predictions_root(config), config.model_name) as writer:
        writer.append(
            predlog.Prediction(
                row["request_id"], row["event_time"], version, int(p > 0.5), float(p), f
            )
            for row, p, f in zip(frame, proba, features, strict=True)
        )
    if labels:
        predlog.write_labels(
            labels_root(config),
            config.model_name,
            [predlog.Label(r["request_id"], r["label"]) for r in frame],
        )


def _stream(seed: int, rows: int, shifted: bool, start_days: float) -> pa.Table:
    from datetime import UTC, datetime

    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=start_days)
    drifts = (synthetic.Drift(at=0.0, covariate=1.5, concept=0.7),) if shifted else ()
    return synthetic.generate(rows, seed=seed, world=7, start=start, days=1.0, drifts=drifts)


@pytest.fixture
def fresh(champion_config: Config, tmp_path: Path) -> Config:
    """The module's champion, but this test's own prediction log, labels and monitor state."""
    monitor = dataclasses.replace(
        champion_config.monitor,
        predictions=str(tmp_path / "predictions"),
        labels=str(tmp_path / "labels"),
    )
    return champion_config.replace(monitor=monitor)


def _now(table: pa.Table) -> Any:
    return table.column("event_time")[-1].as_py() + timedelta(seconds=1)


def test_quiet_traffic_needs_no_action(fresh: Config) -> None:
    batch = _stream(21, 800, shifted=False, start_days=200)
    _serve(fresh, batch, "1")
    outcome = run_monitor(fresh, LocalSubmitter(), now=_now(batch), report=False)
    assert outcome.decision.action == policy.NONE, outcome.summary()
    assert outcome.drift is not None and not outcome.drift.drifted
    record = json.loads(Path(outcome.record_uri).read_text())
    assert record["action"] == "none" and record["inputs"]["window_rows"] == 800
    assert {t["name"] for t in record["triggers"]} == {
        "schedule", "data_drift", "performance", "concept_drift", "manual",
    }  # fmt: skip


def test_drift_submits_one_run_then_holds_back(fresh: Config, pushgateway: str) -> None:
    batch = _stream(22, 800, shifted=True, start_days=200)
    _serve(fresh, batch, "1")
    outcome = run_monitor(fresh, LocalSubmitter(), now=_now(batch), pushgateway=pushgateway)
    assert outcome.decision.action == policy.SUBMIT, outcome.summary()
    assert "data_drift" in outcome.decision.fired
    assert outcome.run is not None and outcome.run.backend == "local"
    assert outcome.run.run_name.startswith("test-model-") and "data_drift" in outcome.run.run_name
    state = MonitorStore(fresh.state_dir, fresh.model_name).load()
    assert state.generation >= 1 and state.last_run.run_name == outcome.run.run_name
    # The evidently page is kept with the decisions and linked from the champion's MLflow run.
    page = Path(outcome.report_uri or "").read_text()
    assert page.strip().lower().startswith("<!doctype html")
    linked = outcome.record["drift_report_mlflow"]
    assert linked.endswith(Path(outcome.report_uri or "").name) and "/monitor/" in linked
    # The Pushgateway holds the decision.
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert (
        'ctpipe_monitor_decision{action="submit",instance="",job="ctpipe-monitor",model="test-model"} 1'
        in text
    )
    assert "ctpipe_monitor_drift_share{" in text

    # Safe to rerun: within the cooldown the same drift is held back, nothing is submitted.
    again = run_monitor(
        fresh, LocalSubmitter(), now=_now(batch) + timedelta(minutes=5), report=False
    )
    assert again.decision.action == policy.SKIP and again.run is None
    assert any("cooldown" in r for r in again.decision.reasons)
    assert MonitorStore(fresh.state_dir, fresh.model_name).load().generation == state.generation


def test_an_empty_window_is_no_action_with_a_reason(fresh: Config) -> None:
    outcome = run_monitor(
        fresh, LocalSubmitter(), now=_now(_stream(23, 10, False, 205)), report=False
    )
    assert outcome.decision.action == policy.NONE
    drift = next(t for t in outcome.triggers if t.name == "data_drift")
    assert "only 0 predictions in the window" in drift.reason


def test_labels_with_unknown_request_ids_are_refused(fresh: Config) -> None:
    batch = _stream(24, 400, shifted=True, start_days=200)
    _serve(fresh, batch, "1", labels=False)
    predlog.write_labels(
        labels_root(fresh), fresh.model_name, [predlog.Label(f"ghost-{i}", 1) for i in range(7)]
    )
    generation = MonitorStore(fresh.state_dir, fresh.model_name).load().generation
    with pytest.raises(DataError, match="7 labels match no logged prediction"):
        run_monitor(fresh, LocalSubmitter(), now=_now(batch), report=False)
    assert MonitorStore(fresh.state_dir, fresh.model_name).load().generation == generation


def _cli(config: Config, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ctpipe.cli",
            "monitor",
            "--config",
            str(path),
            "--no-report",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_a_log_with_missing_columns_exits_nonzero_and_submits_nothing(
    fresh: Config, tmp_path: Path
) -> None:
    folder = Path(predictions_root(fresh), fresh.model_name, "date=2026-07-20")
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a"], "score": [0.5]}), folder / "part-broken.parquet")
    result = _cli(fresh, tmp_path, "--now", "2026-07-21T00:00:00Z")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "part-broken.parquet" in result.stderr and "missing" in result.stderr
    assert "submitting" not in result.stdout


def test_the_cli_exits_zero_for_no_action(fresh: Config, tmp_path: Path) -> None:
    batch = _stream(25, 300, shifted=False, start_days=200)
    _serve(fresh, batch, "1")
    result = _cli(fresh, tmp_path, "--now", _now(batch).isoformat())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "decision: NONE" in result.stdout


def test_manual_dry_run_records_but_submits_nothing(fresh: Config, tmp_path: Path) -> None:
    batch = _stream(26, 300, shifted=False, start_days=200)
    _serve(fresh, batch, "1")
    before = MonitorStore(fresh.state_dir, fresh.model_name).load()
    result = _cli(
        fresh,
        tmp_path,
        "--now",
        _now(batch).isoformat(),
        "--manual",
        "--note",
        "audit",
        "--dry-run",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "decision: SKIP" in result.stdout and "dry run" in result.stdout
    assert "FIRED manual" in result.stdout and "requested: audit" in result.stdout
    assert MonitorStore(fresh.state_dir, fresh.model_name).load().last_run == before.last_run


def test_two_monitor_processes_racing_submit_exactly_once(fresh: Config, tmp_path: Path) -> None:
    """Two `ctpipe monitor --submit kfp` processes at once, against a recording KFP API."""
    import threading

    from tests.unit.test_kfp_submit import API, RecordingKfp

    batch = _stream(27, 800, shifted=True, start_days=210)
    _serve(fresh, batch, "1")
    server = RecordingKfp()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(fresh.to_dict()))
    command = [
        sys.executable, "-m", "ctpipe.cli", "monitor", "--config", str(path), "--no-report",
        "--submit", "kfp", "--kfp-host", server.url, "--now", (_now(batch) + timedelta(days=30)).isoformat(),
    ]  # fmt: skip
    try:
        racers = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [racer.communicate(timeout=600) for racer in racers]
    finally:
        server.shutdown()
        server.server_close()
    assert [r.returncode for r in racers] == [0, 0], outputs
    assert len(server.find("POST", f"{API}/runs")) == 1, outputs
    decisions = sorted(
        next(line for line in out.splitlines() if line.startswith("decision:"))
        for out, _ in outputs
    )
    assert decisions == ["decision: SKIP", "decision: SUBMIT"], outputs
    # The loser either lost the claim, or came late enough to see the winner's run.
    reasons = ("another monitor claimed this submission", "still active", "cooldown")
    assert any(reason in out for out, _ in outputs for reason in reasons), outputs
