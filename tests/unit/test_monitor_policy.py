"""Triggers, the policy and the claim that lets exactly one of two racing monitors submit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ctpipe.config import Policy
from ctpipe.monitor import policy, triggers
from ctpipe.monitor.state import LastRun, MonitorStore, State

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_schedule_fires_past_the_maximum_age() -> None:
    assert triggers.schedule(31 * 86400, 30 * 86400).fired
    assert not triggers.schedule(29 * 86400, 30 * 86400).fired
    assert not triggers.schedule(10**9, None).enabled


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


RULES = Policy(cooldown="6h", min_new_rows=1000, claim_ttl="2h")


def _decide(fired: list[str], **kw: object) -> policy.Decision:
    results = [triggers.TriggerResult(name, name in fired, "because") for name in triggers.ALL]
    defaults = {
        "now": NOW,
        "new_rows": 5000,
        "last_run_at": NOW - timedelta(days=1),
        "active_run": None,
    }
    return policy.decide(results, RULES, **{**defaults, **kw})  # type: ignore[arg-type]


def test_policy() -> None:
    assert _decide([]).action == policy.NONE
    submit = _decide(["data_drift", "performance"])
    assert submit.action == policy.SUBMIT and submit.run_reason == "data_drift+performance"
    cooling = _decide(["data_drift"], last_run_at=NOW - timedelta(hours=2))
    assert cooling.action == policy.SKIP and "cooldown" in cooling.reasons[-1]
    few = _decide(["data_drift"], new_rows=10)
    assert few.action == policy.SKIP and "min_new_rows" in few.reasons[-1]
    busy = _decide(["schedule"], active_run="run-1")
    assert busy.action == policy.SKIP and "still active" in busy.reasons[-1]


def test_manual_skips_cooldown_and_new_rows_but_not_an_active_run() -> None:
    assert _decide(["manual"], last_run_at=NOW, new_rows=0).action == policy.SUBMIT
    assert _decide(["manual"], active_run="run-1").action == policy.SKIP


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
