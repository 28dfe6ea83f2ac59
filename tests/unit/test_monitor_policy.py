"""Triggers, the policy and the claim that lets exactly one of two racing monitors submit."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ctpipe import storage
from ctpipe.config import RetrainPolicy
from ctpipe.monitor import decide, triggers
from ctpipe.monitor.state import FAILED, SUCCEEDED, LastRun, MonitorStore, State

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_schedule_fires_past_the_maximum_age() -> None:
    assert triggers.schedule(31 * 86400, 30 * 86400).fired
    assert not triggers.schedule(29 * 86400, 30 * 86400).fired
    assert not triggers.schedule(10**9, None).enabled
    after_run = triggers.schedule(2 * 86400, 30 * 86400, since_run=True)
    assert not after_run.fired
    assert after_run.reason == "the last run that ended is 2.0 days old (max 30)"


def test_data_drift_trigger() -> None:
    assert triggers.data_drift(0.4, True, ["num_0", "num_1"], 500, 200, 0.25).fired
    quiet = triggers.data_drift(0.1, False, ["num_0"], 500, 200, 0.25)
    assert not quiet.fired and "num_0" in quiet.reason
    small = triggers.data_drift(None, False, [], 50, 200, 0.25)
    assert not small.fired and "only 50 predictions" in small.reason


@pytest.mark.parametrize(
    ("value", "floor", "champion", "fired"),
    [
        (0.70, 0.75, None, True),  # below the absolute floor
        (0.80, 0.75, None, False),
        (0.80, None, 0.86, True),  # 0.06 below the champion's own test metric, margin 0.05
        (0.83, None, 0.86, False),
    ],
)
def test_performance_trigger(
    value: float, floor: float | None, champion: float | None, fired: bool
) -> None:
    result = triggers.performance(
        "roc_auc",
        value,
        500,
        higher_is_better=True,
        min_labelled=200,
        floor=floor,
        champion_value=champion,
        margin=0.05,
    )
    assert result.fired is fired


def test_performance_is_oriented_for_lower_is_better_metrics() -> None:
    worse = triggers.performance(
        "rmse",
        12.0,
        500,
        higher_is_better=False,
        min_labelled=200,
        floor=None,
        champion_value=10.0,
        margin=1.0,
    )
    assert worse.fired
    better = triggers.performance(
        "rmse",
        9.0,
        500,
        higher_is_better=False,
        min_labelled=200,
        floor=10.5,
        champion_value=10.0,
        margin=1.0,
    )
    assert not better.fired


def test_performance_waits_for_enough_labels() -> None:
    result = triggers.performance(
        "roc_auc",
        0.1,
        50,
        higher_is_better=True,
        min_labelled=200,
        floor=0.9,
        champion_value=None,
        margin=None,
    )
    assert not result.fired and "need 200" in result.reason


def test_page_hinkley_detects_a_rise_in_the_error_rate_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    steady = (rng.random(4000) < 0.2).astype(float)
    assert triggers.page_hinkley(steady).alarm_at is None
    shifted = np.concatenate([steady[:2000], (rng.random(2000) < 0.45).astype(float)])
    alarm = triggers.page_hinkley(shifted).alarm_at
    assert alarm is not None and 2000 < alarm < 2600
    assert triggers.concept_drift(shifted, 0.05, 50).fired
    assert not triggers.concept_drift(np.zeros(0), 0.05, 50).fired


RULES = RetrainPolicy(cooldown="6h", min_new_rows=1000, claim_ttl="2h")


def _decide(fired: list[str], **kw: object) -> decide.Decision:
    results = [triggers.TriggerResult(name, name in fired, "because") for name in triggers.ALL]
    defaults = {
        "now": NOW,
        "new_rows": 5000,
        "last_run_at": NOW - timedelta(days=1),
        "active_run": None,
    }
    return decide.decide(results, RULES, **{**defaults, **kw})  # type: ignore[arg-type]


def test_policy() -> None:
    assert _decide([]).action == decide.NONE
    submit = _decide(["data_drift", "performance"])
    assert submit.action == decide.SUBMIT and submit.run_reason == "data_drift+performance"
    cooling = _decide(["data_drift"], last_run_at=NOW - timedelta(hours=2))
    assert cooling.action == decide.SKIP and "cooldown" in cooling.reasons[-1]
    few = _decide(["data_drift"], new_rows=10)
    assert few.action == decide.SKIP and "min_new_rows" in few.reasons[-1]
    busy = _decide(["schedule"], active_run="run-1")
    assert busy.action == decide.SKIP and "still active" in busy.reasons[-1]


def test_manual_skips_cooldown_and_new_rows_but_not_an_active_run() -> None:
    assert _decide(["manual"], last_run_at=NOW, new_rows=0).action == decide.SUBMIT
    assert _decide(["manual"], active_run="run-1").action == decide.SKIP


def test_state_round_trip(tmp_path: Path) -> None:
    store = MonitorStore(str(tmp_path), "m")
    assert store.load() == State()
    state = State(3, LastRun("run-3", "m-drift", "kfp", "data_drift", NOW.isoformat(), 3))
    store.save(state)
    assert store.load() == state and store.load().last_run.at == NOW


def _race(store: MonitorStore, contenders: int) -> list[int | None]:
    results: list[int | None] = [None] * contenders
    errors: list[BaseException] = []
    barrier = threading.Barrier(contenders)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.claim(State(), NOW, ttl_seconds=7200)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_racing_monitors_claim_exactly_once_locally(tmp_path: Path) -> None:
    results = _race(MonitorStore(str(tmp_path), "m"), 8)
    assert sorted(r for r in results if r is not None) == [1]
    assert results.count(None) == 7


def test_racing_monitors_claim_exactly_once_on_s3(s3) -> None:
    s3.create_bucket(Bucket="race")
    results = _race(MonitorStore("s3://race/state", "m"), 6)
    assert sorted(r for r in results if r is not None) == [1]


def test_an_abandoned_claim_is_taken_over_after_its_ttl(tmp_path: Path) -> None:
    store = MonitorStore(str(tmp_path), "m")
    assert store.claim(State(), NOW - timedelta(hours=3), ttl_seconds=7200) == 1  # its holder died
    assert store.claim(State(), NOW, ttl_seconds=7200) == 2
    assert store.claim(State(), NOW, ttl_seconds=7200) is None  # generation 2 is live


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_released_claim_frees_the_next_generation_at_once(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A submission that failed gives its claim up with the error in it: a rerun a minute
    later claims the next generation instead of waiting out claim_ttl."""
    if where == "s3":
        request.getfixturevalue("s3").create_bucket(Bucket="released")
    store = MonitorStore("s3://released/state" if where == "s3" else str(tmp_path), "m")
    assert store.claim(State(), NOW, ttl_seconds=7200) == 1
    uri = store.release(1, NOW, "no pipeline named 'continuous-training'")
    held = json.loads(storage.read_bytes(uri).decode())
    assert held["error"] == "no pipeline named 'continuous-training'"
    assert held["released_at"] == NOW.isoformat() and held["claimed_at"] == NOW.isoformat()
    later = NOW + timedelta(minutes=1)
    assert store.claim(State(), later, ttl_seconds=7200) == 2  # state not yet past 1
    assert store.claim(State(generation=1), later, ttl_seconds=7200) is None  # 2 is live


def test_a_rerun_as_of_the_same_time_keeps_the_earlier_decision_record(tmp_path: Path) -> None:
    """An error at --now T, then the corrected rerun at --now T: both records stay."""
    store = MonitorStore(str(tmp_path), "m")
    first = store.record({"action": "error"}, NOW)
    second = store.record({"action": "submit"}, NOW)
    assert first != second and sorted([second, first]) == [first, second]
    assert json.loads(Path(first).read_text()) == {"action": "error"}
    assert json.loads(Path(second).read_text()) == {"action": "submit"}


# ------------------------------------------------------- failed runs: backoff, blocked

FAILING = RetrainPolicy(
    cooldown="6h",
    min_new_rows=1000,
    claim_ttl="2h",
    retry_backoff="1h",
    max_retry_backoff="4h",
    max_failed_runs=3,
)


def _after_failures(
    count: int,
    ago: timedelta,
    fired: tuple[str, ...] = ("data_drift",),
    active_run: str | None = None,
    blocks: tuple[str, ...] = (),
) -> decide.Decision:
    """The policy `ago` after the last of `count` failed runs in a row."""
    results = [triggers.TriggerResult(n, n in fired, "because") for n in triggers.ALL]
    return decide.decide(
        results,
        FAILING,
        now=NOW,
        new_rows=5000,
        last_run_at=NOW - ago,
        active_run=active_run,
        failures=decide.Failures(count, "step validate: the target column is missing", NOW - ago),
        blocks=blocks,
    )


def test_the_backoff_doubles_per_failure_up_to_its_cap() -> None:
    hours = [decide.retry_backoff_seconds(FAILING, n) / 3600 for n in range(7)]
    assert hours == [0, 1, 2, 4, 4, 4, 4]
    assert decide.retry_backoff_seconds(FAILING, 10_000) == 4 * 3600  # no overflow


def test_after_a_failed_run_the_backoff_takes_the_cooldowns_place() -> None:
    early = _after_failures(1, timedelta(minutes=30))
    assert early.action == decide.SKIP
    assert early.reasons[-1].startswith("backoff: 1 run(s) failed in a row")
    assert "the target column is missing" in early.reasons[-1]
    # An hour on, the retry goes, though the 6h cooldown has not passed.
    assert _after_failures(1, timedelta(hours=1)).action == decide.SUBMIT
    # The second failure in a row doubles the wait.
    assert _after_failures(2, timedelta(hours=1.5)).action == decide.SKIP
    assert _after_failures(2, timedelta(hours=2)).action == decide.SUBMIT


def test_too_many_failed_runs_in_a_row_block_every_automatic_run() -> None:
    blocked = _after_failures(3, timedelta(days=3))
    assert blocked.action == decide.BLOCKED and blocked.fired == ("data_drift",)
    assert blocked.blocked_by == (blocked.reasons[-1],)
    assert blocked.reasons[-1].startswith(
        "blocked: 3 runs failed in a row, last error: step validate: the target column is missing"
    )
    # Blocked shows whether or not anything fired, so every visit reports it.
    quiet = _after_failures(3, timedelta(days=3), fired=())
    assert quiet.action == decide.BLOCKED and quiet.fired == ()
    assert quiet.reasons == blocked.blocked_by


def test_a_manual_request_submits_while_blocked_and_says_so() -> None:
    manual = _after_failures(5, timedelta(minutes=1), fired=("manual",))
    assert manual.action == decide.SUBMIT and manual.run_reason == "manual"
    assert manual.blocked_by and any("despite the block" in r for r in manual.reasons)
    # ... but not beside a run still active.
    busy = _after_failures(5, timedelta(minutes=1), fired=("manual",), active_run="run-7")
    assert busy.action == decide.SKIP and "still active" in busy.reasons[-1]


def test_other_blocks_are_reasons_passed_in() -> None:
    reason = "blocked: schema v3 waits for approval"
    held = _after_failures(0, timedelta(days=1), blocks=(reason,))
    assert held.action == decide.BLOCKED and held.blocked_by == (reason,)
    assert _after_failures(0, timedelta(days=1), blocks=(reason,), fired=("manual",)).action == (
        decide.SUBMIT
    )


def test_an_always_failing_pipeline_gets_at_most_max_failed_runs_runs() -> None:
    """The monitor's loop in small: state, policy, a run that always fails, 10 days of
    hourly visits with drift firing on every one of them."""
    state, submitted = State(), 0
    for hour in range(240):
        now = NOW + timedelta(hours=hour)
        decision = decide.decide(
            [triggers.TriggerResult("data_drift", True, "drifted")],
            FAILING,
            now=now,
            new_rows=5000,
            last_run_at=state.last_run.at if state.last_run else None,
            active_run=None,
            failures=decide.Failures(state.failures, state.last_error, state.failed_at),
        )
        if decision.action == decide.SUBMIT:
            submitted += 1
            run = LastRun(f"run-{hour}", "m-drift", "local", "data_drift", now.isoformat(), hour)
            state = dataclasses.replace(state, last_run=run).with_outcome(FAILED, "boom", now)
    assert submitted == FAILING.max_failed_runs == state.failures
    assert decision.action == decide.BLOCKED


def test_a_run_that_ends_resets_the_failures_and_is_recorded_once() -> None:
    run = LastRun("run-1", "m", "kfp", "data_drift", NOW.isoformat(), 1)
    failed = State(1, run, failures=2, last_error="old").with_outcome(FAILED, "new", NOW)
    assert failed.failures == 3 and failed.last_error == "new"
    assert failed.last_failure_at == NOW.isoformat() and failed.last_run.failed
    assert failed.with_outcome(FAILED, "again", NOW) == failed  # learned once
    assert failed.succeeded_at is None
    later = dataclasses.replace(failed, last_run=dataclasses.replace(run, run_id="run-2"))
    refused = later.with_outcome(SUCCEEDED, None, NOW + timedelta(hours=1))
    assert refused.failures == 0 and refused.last_run.succeeded
    assert refused.succeeded_at == NOW  # the run's submission time


def test_state_files_written_before_failures_were_counted_still_load(tmp_path: Path) -> None:
    store = MonitorStore(str(tmp_path), "m")
    old = {
        "generation": 4,
        "last_run": {
            "run_id": "run-4", "run_name": "m-schedule", "backend": "kfp",
            "reason": "schedule", "submitted_at": NOW.isoformat(), "generation": 4,
        },
        "drift_since": None,
    }  # fmt: skip
    Path(store.state_uri).parent.mkdir(parents=True)
    Path(store.state_uri).write_text(json.dumps(old))
    state = store.load()
    assert state.generation == 4 and state.failures == 0 and state.last_error is None
    assert state.last_run is not None and state.last_run.outcome is None
    assert state.succeeded_at == NOW  # a recorded run of old never failed
    # And what is written now round-trips, unknown future keys ignored.
    failed = state.with_outcome(FAILED, "boom", NOW)
    store.save(failed)
    assert store.load() == failed
    raw = json.loads(Path(store.state_uri).read_text())
    raw["last_run"]["added_later"] = 1
    Path(store.state_uri).write_text(json.dumps(raw))
    assert store.load() == failed


def test_page_hinkley_reports_where_it_started() -> None:
    fresh = triggers.concept_drift(np.zeros(0), 0.05, 50, since="2026-11-27T12:00:00+00:00")
    assert not fresh.fired and "since 2026-11-27T12:00:00+00:00" in fresh.reason
    assert fresh.statistics["since"] == "2026-11-27T12:00:00+00:00"
