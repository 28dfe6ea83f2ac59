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

from ctpipe import predlog, registry
from ctpipe.config import Config, Monitor
from ctpipe.data import synthetic
from ctpipe.errors import DataError
from ctpipe.monitor import decide
from ctpipe.monitor.runner import labels_root, predictions_root, run_monitor
from ctpipe.monitor.state import MonitorStore
from ctpipe.monitor.submit import RunOutcome, RunRef
from ctpipe.pipelines.local import run_local
from ctpipe.pipelines.submit import LocalSubmitter
from tests.conftest import check_metrics, make_config

pytestmark = pytest.mark.pipeline


def _small_monitor(monitor: Monitor, **paths: str) -> Monitor:
    """Monitor settings for a few hundred rows a day (and `paths`: predictions, labels)."""
    return dataclasses.replace(
        monitor,
        window="2d",
        min_rows=200,
        report_rows=500,
        triggers=dataclasses.replace(monitor.triggers, min_labelled=100),
        policy=dataclasses.replace(monitor.policy, cooldown="1h", min_new_rows=300),
        **paths,
    )


@pytest.fixture(scope="module")
def champion_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """A champion trained by the real pipeline on the first world of a drifting stream."""
    root = tmp_path_factory.mktemp("monitor")
    data = root / "train.parquet"
    synthetic.write(synthetic.generate(3000, seed=7), str(data))
    config = make_config(root / "state")
    monitor = _small_monitor(config.monitor)
    # These tests are about triggers and submissions: a blessed run becomes the champion at
    # once. Retraining during a progressive rollout has its own test at the end.
    deploy = dataclasses.replace(
        config.deploy, rollout=dataclasses.replace(config.deploy.rollout, strategy="immediate")
    )
    config = config.replace(
        data=dataclasses.replace(config.data, uri=str(data)), monitor=monitor, deploy=deploy
    )
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


SHIFTED = (synthetic.Drift(at=0.0, covariate=1.5, concept=0.7),)


def _stream(
    seed: int,
    rows: int,
    shifted: bool,
    start_days: float,
    drifts: tuple[synthetic.Drift, ...] | None = None,
) -> pa.Table:
    """A day of the champion's world (7), SHIFTED or not, or with `drifts` of its own."""
    from datetime import UTC, datetime

    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=start_days)
    chosen = drifts if drifts is not None else (SHIFTED if shifted else ())
    return synthetic.generate(rows, seed=seed, world=7, start=start, days=1.0, drifts=chosen)


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
    assert outcome.decision.action == decide.NONE, outcome.summary()
    assert outcome.drift is not None and not outcome.drift.drifted
    record = json.loads(Path(outcome.record_uri).read_text())
    assert record["action"] == "none" and record["inputs"]["window_rows"] == 800
    assert {t["name"] for t in record["triggers"]} == {
        "schedule", "data_drift", "performance", "concept_drift", "manual",
    }  # fmt: skip


def test_drift_submits_one_run_then_holds_back(
    fresh: Config, pushgateway: str, promtool: str
) -> None:
    batch = _stream(22, 800, shifted=True, start_days=200)
    _serve(fresh, batch, "1")
    outcome = run_monitor(fresh, LocalSubmitter(), now=_now(batch), pushgateway=pushgateway)
    assert outcome.decision.action == decide.SUBMIT, outcome.summary()
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
    assert "ctpipe_monitor_drifted_features_ratio{" in text
    check_metrics(promtool, text)  # after a real monitor run, as Prometheus would scrape it

    # Safe to rerun: within the cooldown the same drift is held back, nothing is submitted.
    again = run_monitor(
        fresh, LocalSubmitter(), now=_now(batch) + timedelta(minutes=5), report=False
    )
    assert again.decision.action == decide.SKIP and again.run is None
    assert any("cooldown" in r for r in again.decision.reasons)
    assert MonitorStore(fresh.state_dir, fresh.model_name).load().generation == state.generation


def test_an_empty_window_is_no_action_with_a_reason(fresh: Config) -> None:
    outcome = run_monitor(
        fresh, LocalSubmitter(), now=_now(_stream(23, 10, False, 205)), report=False
    )
    assert outcome.decision.action == decide.NONE
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
    path = _config_file(config, tmp_path)
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


# ------------------------------------------------ failed runs: backoff, blocked, recovery

BOOM = "step train: ValueError: Input contains NaN"


class FakeSubmitter:
    """A test double at the Submitter boundary, for runs that fail (or end) on demand.

    backend "local": the run ends inside submit() and its RunRef says how; "kfp": submit()
    only starts it, and the outcome is read on the monitor's next visit.
    """

    def __init__(self, backend: str = "local", fail: bool = True) -> None:
        self.backend = backend
        self.fail = fail
        self.submitted: list[str] = []
        self.states: dict[str, str] = {}

    def submit(self, config: Config, reason: str, run_name: str) -> RunRef:
        run_id = f"run-{len(self.submitted) + 1}"
        self.submitted.append(run_name)
        self.states[run_id] = "FAILED" if self.fail else "SUCCEEDED"
        if self.backend == "kfp":
            return RunRef(run_id, run_name, self.backend)
        if self.fail:
            return RunRef(run_id, run_name, self.backend, failed=True, error=BOOM)
        return RunRef(run_id, run_name, self.backend, blessed=False)  # refused by the gate

    def outcome(self, run_id: str) -> RunOutcome:
        state = self.states.get(run_id, "UNKNOWN")
        return RunOutcome(run_id, state, BOOM if state == "FAILED" else None)

    def is_active(self, run_id: str) -> bool:
        return self.outcome(run_id).active


@pytest.fixture
def isolated(champion_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The module's champion (its MLflow store, by MLFLOW_TRACKING_URI), but this test's
    own state_dir: monitor state, claims and decisions start empty."""
    monkeypatch.setenv(registry.TRACKING_ENV, registry.tracking_uri(champion_config.state_dir))
    monitor = dataclasses.replace(
        champion_config.monitor,
        predictions=str(tmp_path / "predictions"),
        labels=str(tmp_path / "labels"),
    )
    return champion_config.replace(state_dir=str(tmp_path / "state"), monitor=monitor)


def _champion_version(config: Config) -> str:
    """Earlier tests in this module may have promoted a new champion."""
    champion = registry.champion(config)
    assert champion is not None
    return str(champion.version)


def _optional_pushgateway(request: pytest.FixtureRequest) -> str | None:
    try:
        return str(request.getfixturevalue("pushgateway"))
    except pytest.skip.Exception:
        return None  # not installed: the decision records are checked all the same


def _scrape(gateway: str, name: str, model: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == model:
                return float(sample.value)
    raise AssertionError(f"{name}{{model={model!r}}} is not on the gateway")


@pytest.mark.parametrize("backend", ["local", "kfp"])
def test_an_always_failing_pipeline_backs_off_then_blocks(
    isolated: Config, backend: str, request: pytest.FixtureRequest
) -> None:
    """Drift fires on every hourly visit; every run fails. At most max_failed_runs runs go
    out, each after a longer wait, then the monitor is blocked, says why, and alerts."""
    gateway = _optional_pushgateway(request)
    batch = _stream(31, 800, shifted=True, start_days=200)
    _serve(isolated, batch, _champion_version(isolated))
    submitter = FakeSubmitter(backend)
    start = _now(batch)
    visits = [*range(10), 30, 200]  # hours after the drifted day
    outcomes = [
        run_monitor(
            isolated,
            submitter,
            now=start + timedelta(hours=hour),
            report=False,
            pushgateway=gateway,
        )
        for hour in visits
    ]
    rules = isolated.monitor.policy
    assert len(submitter.submitted) == rules.max_failed_runs == 3, [
        o.decision.action for o in outcomes
    ]
    actions = [o.decision.action for o in outcomes]
    submitted_at = [h for h, a in zip(visits, actions, strict=True) if a == decide.SUBMIT]
    # local: a failure is known at once; kfp: on the next visit. Waits of 1h, then 2h.
    assert submitted_at == ([0, 1, 3] if backend == "local" else [0, 2, 5]), actions
    backoffs = [r for o in outcomes for r in o.decision.reasons if r.startswith("backoff:")]
    assert backoffs and BOOM in backoffs[0]
    first_blocked = actions.index(decide.BLOCKED)
    assert set(actions[first_blocked:]) == {decide.BLOCKED}

    last = outcomes[-1]
    (reason,) = last.decision.blocked_by
    assert reason.startswith(f"blocked: 3 runs failed in a row, last error: {BOOM}")
    assert "BLOCKED" in last.summary() and reason in last.summary()
    record = json.loads(Path(last.record_uri).read_text())
    assert record["action"] == "blocked" and record["blocked"] == [reason]
    assert record["failures"]["in_a_row"] == 3 and record["failures"]["last_error"] == BOOM
    store = MonitorStore(isolated.state_dir, isolated.model_name)
    assert len(list(Path(store.root, "decisions").iterdir())) == len(visits)
    state = store.load()
    assert state.failures == 3 and state.last_run is not None and state.last_run.failed
    if gateway:
        assert _scrape(gateway, "ctpipe_monitor_blocked", isolated.model_name) == 1.0
        assert (
            _scrape(gateway, "ctpipe_monitor_consecutive_failed_runs", isolated.model_name) == 3.0
        )

    # Someone fixed it and asks: a manual request submits while blocked, and says so.
    submitter.fail = False
    later = start + timedelta(hours=201)
    manual = run_monitor(isolated, submitter, now=later, manual=True, report=False)
    assert manual.decision.action == decide.SUBMIT and manual.run is not None
    assert any("despite the block" in r for r in manual.decision.reasons)
    assert len(submitter.submitted) == 4
    # The run ran to the end (refused by the gate: still a success): the count resets, at
    # once for a local run, on the next visit for a KFP one.
    after = run_monitor(
        isolated, submitter, now=later + timedelta(minutes=10), report=False, pushgateway=gateway
    )
    assert after.decision.action != decide.BLOCKED and not after.record["blocked"]
    assert store.load().failures == 0
    if gateway:
        assert _scrape(gateway, "ctpipe_monitor_blocked", isolated.model_name) == 0.0


def test_a_real_failed_run_is_recorded_and_then_blocks(isolated: Config, tmp_path: Path) -> None:
    """The real pipeline, on data without its target column: the run fails at validation.
    With max_failed_runs 1, the next visit (the CLI) is blocked and still exits 0."""
    broken = tmp_path / "no-label.parquet"
    table = synthetic.generate(600, seed=3)
    pq.write_table(table.drop_columns(["label"]), broken)
    config = isolated.replace(
        data=dataclasses.replace(isolated.data, uri=str(broken)),
        monitor=dataclasses.replace(
            isolated.monitor,
            policy=dataclasses.replace(isolated.monitor.policy, max_failed_runs=1),
        ),
    )
    batch = _stream(32, 800, shifted=True, start_days=200)
    version = _champion_version(config)
    _serve(config, batch, version)
    outcome = run_monitor(config, LocalSubmitter(), now=_now(batch), report=False)
    assert outcome.decision.action == decide.SUBMIT, outcome.summary()
    assert outcome.run is not None and outcome.run.failed and outcome.run.error
    assert "label" in outcome.run.error, outcome.run.error
    assert "run FAILED" in outcome.summary()
    record = json.loads(Path(outcome.record_uri).read_text())
    assert record["run"]["failed"] is True and record["failures"]["in_a_row"] == 1
    assert record["blocked"] and record["blocked"][0].startswith("blocked: 1 runs failed")
    assert _champion_version(config) == version  # the champion stays

    result = _cli(config, tmp_path, "--now", (_now(batch) + timedelta(days=2)).isoformat())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "decision: BLOCKED" in result.stdout
    assert "blocked: 1 runs failed in a row, last error: " in result.stderr
    assert "submitting" not in result.stdout


def test_page_hinkley_starts_over_after_a_refused_run(isolated: Config) -> None:
    """Concept drift alarms; a run is refused by the gate; the next checks judge only the
    errors made after that run, so the old alarm does not fire again."""
    rules = isolated.monitor.triggers
    config = isolated.replace(
        monitor=dataclasses.replace(
            isolated.monitor,
            triggers=dataclasses.replace(
                rules,
                data_drift=False,
                performance_margin=None,
                performance_floor=None,
                page_hinkley_threshold=25.0,
            ),
        )
    )
    quiet = _stream(33, 800, shifted=False, start_days=200)
    changed = _stream(34, 800, shifted=True, start_days=201)
    version = _champion_version(config)
    _serve(config, quiet, version)
    _serve(config, changed, version)
    submitter = FakeSubmitter("local", fail=False)  # runs end, the gate refuses
    alarm = run_monitor(config, submitter, now=_now(changed), report=False)
    assert alarm.decision.fired == ("concept_drift",), alarm.summary()
    assert alarm.decision.action == decide.SUBMIT and alarm.run is not None
    assert alarm.record["inputs"]["sequential_since_from"] == "champion"

    # Two hours on (past the cooldown), no new labels: nothing to judge, nothing fires.
    again = run_monitor(config, submitter, now=_now(changed) + timedelta(hours=2), report=False)
    concept = next(t for t in again.triggers if t.name == "concept_drift")
    assert not concept.fired, concept.reason
    assert again.decision.action == decide.NONE
    assert again.record["inputs"]["sequential_since"] == _now(changed).isoformat()
    assert again.record["inputs"]["sequential_since_from"] == "last_run"
    assert concept.statistics["since"] == _now(changed).isoformat()

    # A new day in the changed world: the same (already high) error level is no change.
    more = _stream(35, 800, shifted=True, start_days=202)
    _serve(config, more, version)
    later = run_monitor(config, submitter, now=_now(more), report=False)
    concept = next(t for t in later.triggers if t.name == "concept_drift")
    assert not concept.fired and concept.statistics["observations"] == 800, concept.reason
    assert len(submitter.submitted) == 1


def test_a_schema_change_waiting_for_approval_blocks_until_accepted(
    isolated: Config, tmp_path: Path
) -> None:
    """validation.evolution: manual. A run on data with a new category stops at validation
    and proposes schema v2; the monitor blocks (and says how to accept) until `ctpipe
    schema accept`, after which a run on the same data validates and finishes."""
    from ctpipe.data import schema as schema_module

    config = isolated.replace(
        validation=dataclasses.replace(isolated.validation, evolution="manual"),
    )
    old = synthetic.generate(600, seed=3)
    schemas = schema_module.SchemaStore(config.state_dir, config.model_name)
    schemas.save_next(schema_module.infer(old, config))
    channel = old.column("channel").to_pylist()
    new = old.set_column(
        old.column_names.index("channel"),
        "channel",
        pa.array(["kiosk" if i % 3 == 0 else c for i, c in enumerate(channel)]),
    )
    data = tmp_path / "new-channel.parquet"
    pq.write_table(new, data)
    config = config.replace(data=dataclasses.replace(config.data, uri=str(data)))
    version = _champion_version(config)
    batch = _stream(35, 400, shifted=False, start_days=200)
    _serve(config, batch, version)

    stopped = run_monitor(config, LocalSubmitter(), now=_now(batch), manual=True, report=False)
    assert stopped.run is not None and stopped.run.failed, stopped.summary()
    assert "schema accept --run" in (stopped.run.error or ""), stopped.run.error
    [pending] = schemas.pending()
    assert pending.proposed.changes == ("channel: new category 'kiosk'",)
    assert stopped.record["schema"]["pending"][0]["accept"] == pending.accept_command
    assert schemas.versions() == [1] and _champion_version(config) == version

    later = _now(batch) + timedelta(days=1)
    held = run_monitor(config, LocalSubmitter(), now=later, report=False)
    assert held.decision.action == decide.BLOCKED, held.summary()
    [reason] = held.decision.blocked_by
    assert reason.startswith("blocked: schema change needs approval: run ")
    assert f"accept it with `{pending.accept_command}`" in reason
    assert held.run is None

    accepted = subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "schema", "accept", "--run", pending.run_id,
         "--config", str(_config_file(config, tmp_path))],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "stored schema v2" in accepted.stdout
    assert schemas.versions() == [1, 2] and schemas.pending() == []

    resumed = run_monitor(
        config, LocalSubmitter(), now=later + timedelta(hours=1), manual=True, report=False
    )
    assert not any("schema" in r for r in resumed.decision.blocked_by), resumed.summary()
    assert resumed.run is not None and not resumed.run.failed, resumed.run.error
    assert resumed.record["schema"]["pending"] == []


def _config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


# ------------------------------------- errors and failed submissions: always recorded


def _records(config: Config) -> list[dict[str, Any]]:
    folder = Path(MonitorStore(config.state_dir, config.model_name).root, "decisions")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_labels_outside_the_champions_classes_stop_the_monitor_and_are_recorded(
    isolated: Config,
) -> None:
    """ "yes"/"no" labels against classes 0/1 would pass as 800 labelled predictions that
    are all wrong (or unscored): the monitor stops, names them, and records why."""
    batch = _stream(36, 800, shifted=False, start_days=200)
    _serve(isolated, batch, _champion_version(isolated), labels=False)
    predlog.write_labels(
        labels_root(isolated),
        isolated.model_name,
        [
            predlog.Label(r["request_id"], "yes" if r["label"] else "no")
            for r in batch.select(["request_id", "label"]).to_pylist()
        ],
    )
    with pytest.raises(DataError) as info:
        run_monitor(isolated, LocalSubmitter(), now=_now(batch), report=False)
    message = str(info.value)
    assert "column 'label', rule label_domain: 800 of the 800 labelled predictions" in message
    assert "not among the model's classes '0', '1'" in message
    assert "'yes' (" in message and "'no' (" in message
    [record] = _records(isolated)
    assert record["action"] == "error" and record["error"]["message"] == message
    assert MonitorStore(isolated.state_dir, isolated.model_name).load().generation == 0


def test_a_submission_kfp_refuses_releases_its_claim_for_the_corrected_rerun(
    isolated: Config, tmp_path: Path
) -> None:
    """No pipeline uploaded yet: the submission fails. Its decision is recorded with the
    failure and its claim released, so once the pipeline is uploaded a rerun a few minutes
    later submits (not "another monitor claimed this submission" for two hours)."""
    import threading

    from ctpipe.monitor.submit import SubmitError
    from ctpipe.pipelines.submit import KfpSubmitter
    from tests.unit.test_kfp_submit import API, RecordingKfp

    batch = _stream(37, 800, shifted=True, start_days=200)
    _serve(isolated, batch, _champion_version(isolated))
    server = RecordingKfp()
    uploaded, server.pipelines = server.pipelines, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    submitter = KfpSubmitter(server.url, token_path=str(tmp_path / "no-token"))
    store = MonitorStore(isolated.state_dir, isolated.model_name)
    try:
        with pytest.raises(SubmitError) as info:
            run_monitor(isolated, submitter, now=_now(batch), report=False)
        assert "no pipeline named 'continuous-training'" in str(info.value)
        assert "the claim is released" in str(info.value)
        [record] = _records(isolated)
        assert record["action"] == "submit" and record["run"] is None
        failure = record["submission_failure"]
        assert failure["claim_released"] and "no pipeline named" in failure["error"]
        assert record["failures"]["in_a_row"] == 0  # nothing ran: no failed run to count
        assert any(r.startswith("submission failed: ") for r in record["reasons"])
        claim = json.loads(Path(failure["claim"]).read_text())
        assert claim["error"] == failure["error"] and claim["released_at"]
        state = store.load()
        assert (state.generation, state.failures, state.last_run) == (1, 0, None)

        server.pipelines = uploaded  # the fix: `make cluster` uploads it
        rerun = run_monitor(
            isolated, submitter, now=_now(batch) + timedelta(minutes=5), report=False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert rerun.decision.action == decide.SUBMIT, rerun.summary()
    assert rerun.run is not None and rerun.run.run_id == "run-42"
    assert len(server.find("POST", f"{API}/runs")) == 1
    assert store.load().generation == 2 and len(_records(isolated)) == 2


def test_a_local_run_that_cannot_start_is_recorded_and_a_corrected_rerun_submits(
    isolated: Config,
) -> None:
    """The local run raises before its first step (its output folder cannot be made):
    the decision is recorded, the claim released, and after the fix the real pipeline
    runs at once."""
    from ctpipe.monitor.submit import SubmitError
    from ctpipe.pipelines.local import runs_root

    batch = _stream(38, 800, shifted=True, start_days=200)
    _serve(isolated, batch, _champion_version(isolated))
    blocker = runs_root(isolated)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with pytest.raises(SubmitError) as info:
        run_monitor(isolated, LocalSubmitter(), now=_now(batch), report=False)
    assert "(local) failed: NotADirectoryError: " in str(info.value)
    assert str(blocker) in str(info.value)
    [record] = _records(isolated)
    assert record["submission_failure"]["claim_released"] and record["run"] is None

    blocker.unlink()
    rerun = run_monitor(
        isolated, LocalSubmitter(), now=_now(batch) + timedelta(minutes=5), report=False
    )
    assert rerun.decision.action == decide.SUBMIT, rerun.summary()
    assert rerun.run is not None and not rerun.run.failed, rerun.run.error
    assert not any("another monitor" in r for r in rerun.decision.reasons)
    assert MonitorStore(isolated.state_dir, isolated.model_name).load().generation == 2


class InterruptedSubmitter(FakeSubmitter):
    """Someone pressed Ctrl-C while a local run was going."""

    def submit(self, config: Config, reason: str, run_name: str) -> RunRef:
        self.submitted.append(run_name)
        raise KeyboardInterrupt


def test_an_interrupted_submission_is_recorded_and_releases_its_claim(isolated: Config) -> None:
    batch = _stream(39, 800, shifted=True, start_days=200)
    _serve(isolated, batch, _champion_version(isolated))
    with pytest.raises(KeyboardInterrupt):
        run_monitor(isolated, InterruptedSubmitter(), now=_now(batch), report=False)
    [record] = _records(isolated)
    assert "was interrupted" in record["submission_failure"]["error"]
    submitter = FakeSubmitter(fail=False)
    rerun = run_monitor(isolated, submitter, now=_now(batch) + timedelta(minutes=1), report=False)
    assert rerun.decision.action == decide.SUBMIT and len(submitter.submitted) == 1


# ------------------------------------------------ retraining while a challenger rolls out


def test_a_live_rollout_holds_retraining_until_the_data_moves_past_its_challenger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 learned world A; v2, blessed on world B, is in shadow. World B traffic drifts
    from v1 but not from v2: retraining would relearn what v2 already knows, so it waits
    for v2's verdict. Drift from v2 alone does not end the wait either; a channel that
    v2's training data never had does: a run may go."""
    monkeypatch.setenv("CTPIPE_TRAIN_THREADS", "1")
    world_a = tmp_path / "a.parquet"
    world_b = tmp_path / "b.parquet"
    synthetic.write(synthetic.generate(3000, seed=7), str(world_a))
    synthetic.write(synthetic.generate(3000, seed=8, world=7, drifts=SHIFTED), str(world_b))
    base = make_config(tmp_path / "state")
    config = base.replace(
        data=dataclasses.replace(base.data, uri=str(world_a)),
        monitor=_small_monitor(
            base.monitor,
            predictions=str(tmp_path / "predictions"),
            labels=str(tmp_path / "labels"),
        ),
    )
    assert config.deploy.rollout.strategy == "progressive"
    first = run_local(config, out=io.StringIO())
    assert first.ok and first.registered_version == "1", first.errors
    second = run_local(
        config.replace(data=dataclasses.replace(config.data, uri=str(world_b))), out=io.StringIO()
    )
    assert second.ok and second.registered_version == "2", second.errors
    assert _champion_version(config) == "1"  # v2 is the challenger until its rollout ends

    in_b = _stream(41, 800, True, 200)
    _serve(config, in_b, "1", labels=False)
    submitter = FakeSubmitter("local", fail=False)
    held = run_monitor(config, submitter, now=_now(in_b), report=False)
    assert "data_drift" in held.decision.fired, held.summary()  # world B is not v1's
    assert held.decision.action == decide.SKIP and held.run is None, held.summary()
    assert any("v2 in shadow; its verdict first" in r for r in held.decision.reasons)
    assert submitter.submitted == []

    away = (synthetic.Drift(at=0.0, covariate=-1.5),)
    in_c = _stream(42, 800, False, 204, away)  # drifted from v2 too, past world B's window
    _serve(config, in_c, "1")  # labelled: policy.min_new_rows
    still = run_monitor(config, submitter, now=_now(in_c), report=False)
    assert still.decision.action == decide.SKIP and "data_drift" in still.decision.fired
    assert any("v2 in shadow; its verdict first" in r for r in still.decision.reasons)
    assert submitter.submitted == []

    channel = in_c.schema.get_field_index("channel")
    kiosk = pa.array(["kiosk" if i % 2 else v for i, v in enumerate(in_c["channel"].to_pylist())])
    in_d = _stream(43, 800, False, 206, away)
    in_d = in_d.set_column(channel, "channel", kiosk[: in_d.num_rows])
    _serve(config, in_d, "1")
    moved = run_monitor(config, submitter, now=_now(in_d), report=False)
    assert moved.decision.action == decide.SUBMIT and moved.run is not None, moved.summary()
    assert any("moved past challenger v2 (shadow)" in r for r in moved.decision.reasons), (
        moved.summary()
    )
    assert len(submitter.submitted) == 1
    assert _champion_version(config) == "1"  # a refused run changes nothing
