"""One monitor run, in four steps with a typed result each:

    measure  the window and its drift, the labelled performance, the error stream, the
             last run's outcome (Measurement)
    judge    the triggers, then the retraining rules of ctpipe.monitor.decide (Judgement)
    act      claim and submit, or not (Action)
    record   the decision record, the drift report, the metrics push (MonitorOutcome)

    champion (MLflow)  ->  reference profile (stored with the model at training time)
    prediction log     ->  current window  ->  drift engine     -> data_drift
    + delayed labels   ->  champion's labelled predictions      -> performance, concept_drift
    champion's data age                                         -> schedule
    --manual                                                    -> manual
    the last run's outcome (failed runs in a row)               -> backoff, blocked
    monitor.policy (cooldown, new rows, one active run, claims) -> none | skip | submit | blocked

Page-Hinkley (any sequential detector) sees only the champion's labelled predictions after
the later of its data's end and the last run that ran to the end (blessed or refused):
a refused retrain starts the detector over instead of leaving it alarmed for good.

Performance is judged with a bootstrap interval over the labelled window. While labels
arrive in time (triggers.label_horizon), performance outranks data drift: drift alone
triggers only at triggers.large_drift_share; the record's `weighting` says why.

Every run writes a JSON decision record, a run that stops on an error included (action
"error", with the message); metrics go to a Pushgateway when configured. A preflight
checks S3 and the MLflow server first, so a service that is down fails the visit in
seconds. A submission that fails releases its claim, with the error in it, so the next
visit (a corrected rerun) may submit at once; nothing ran, so no failed run is counted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import evaluation, predlog, preflight, registry, storage
from ctpipe.config import METRICS, Config, parse_duration
from ctpipe.data.schema import PendingChange, SchemaStore
from ctpipe.errors import CtpipeError, DataError
from ctpipe.monitor import decide, triggers
from ctpipe.monitor.decide import Decision
from ctpipe.monitor.state import FAILED, SUCCEEDED, LastRun, MonitorStore, State
from ctpipe.monitor.submit import RunRef, SubmitError, Submitter, short_error
from ctpipe.monitor.triggers import TriggerResult
from ctpipe.rollout.controller import Controller, RolloutStep
from ctpipe.rollout.health import HealthSource, Prometheus
from ctpipe.rollout.state import ROLLED_BACK, Rollout, RolloutStore

if TYPE_CHECKING:
    from ctpipe import drift


def predictions_root(config: Config) -> str:
    return config.monitor.predictions or storage.join(config.state_dir, "predictions")


def labels_root(config: Config) -> str:
    return config.monitor.labels or storage.join(config.state_dir, "labels")


@dataclass
class MonitorOutcome:
    decision: Decision
    triggers: list[TriggerResult]
    record: dict[str, Any]
    record_uri: str
    run: RunRef | None = None
    drift: Any = None  # ctpipe.drift.DriftReport when the window was judged
    report_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    submit_error: str | None = None  # the submission failed: nothing runs; claim released
    submit_cause: BaseException | None = field(default=None, repr=False, compare=False)
    # The rollout's steps this visit: one, or two when a run named a new challenger (its
    # rollout began); the last is where the rollout stands.
    rollout_steps: tuple[RolloutStep, ...] = ()

    @property
    def rollout(self) -> RolloutStep | None:
        return self.rollout_steps[-1] if self.rollout_steps else None

    def summary(self) -> str:
        lines = [f"decision: {self.decision.action.upper()}"]
        shown = [s.summary() for s in self.rollout_steps if s.rollout is not None]
        lines = [*shown, *lines]
        lines += [
            f"  {'FIRED' if t.fired else 'ok   '} {t.name:<13} {t.reason}" for t in self.triggers
        ]
        lines += [f"  - {r}" for r in self.decision.reasons if not r.startswith("fired:")]
        if self.decision.action == decide.BLOCKED:
            lines.append(
                "  BLOCKED: no run is submitted until the cause is fixed; "
                "`ctpipe monitor --manual` submits one anyway"
            )
        if self.submit_error:
            lines.append(f"  submission FAILED: {short_error(self.submit_error, 300)}")
        if self.run:
            lines.append(
                f"  run: {self.run.run_name} ({self.run.backend}: {self.run.url or self.run.run_id})"
            )
            if self.run.failed:
                lines.append(f"  run FAILED: {short_error(self.run.error, 300)}")
            elif self.run.blessed is not None:
                verdict = (
                    f"blessed, registered as v{self.run.champion_version}"
                    if self.run.blessed
                    else "refused by the gate"
                )
                lines.append(f"  challenger: {verdict}")
        if self.report_uri:
            lines.append(f"  drift report: {self.report_uri}")
        lines.append(f"  record: {self.record_uri}")
        return "\n".join(lines)


def champion_as_of(ref: registry.ModelRef) -> datetime:
    """When the champion's knowledge ends: the newest row it was trained on.

    Age, cooldown and "new rows" count from here, so a replay (ctpipe simulate) and a
    live system use the same clock: the data's.
    """
    stamp = ref.tags.get(registry.TAG_DATA_TIME_MAX)
    if stamp:
        return datetime.fromisoformat(stamp)
    return datetime.fromtimestamp(ref.created_at, UTC)


def run_monitor(
    config: Config,
    submitter: Submitter,
    *,
    now: datetime | None = None,
    manual: bool = False,
    note: str = "",
    pushgateway: str | None = None,
    report: bool = True,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda _: None,
    health: HealthSource | None = None,
) -> MonitorOutcome:
    """Advance the rollout of a challenger (ctpipe.rollout), then judge the champion's
    recent traffic and submit a retraining run if warranted. `health` gives the canary's
    error rate and latency (default: deploy.rollout.prometheus when set).

    Raises a CtpipeError (PreflightError, DataError, RegistryError, SubmitError) on bad
    input, a service that does not answer, or a failed submission; nothing is submitted
    then, and the decision record says why (action "error"; a failed submission keeps its
    whole record and releases its claim). A run that was submitted and failed is no
    error: it is recorded (state, decision record, metrics), and the policy backs off and,
    after policy.max_failed_runs in a row, blocks.
    """
    now = now or datetime.now(UTC)
    store = MonitorStore(config.state_dir, config.model_name)
    try:
        preflight.check(config)
        outcome = _visit(
            config,
            submitter,
            store,
            now,
            manual=manual,
            note=note,
            pushgateway=pushgateway,
            report=report,
            dry_run=dry_run,
            say=say,
            health=health,
        )
    except Exception as exc:
        _record_error(config, store, now, exc, say)
        raise
    if outcome.submit_cause is not None:
        if not isinstance(outcome.submit_cause, Exception):
            raise outcome.submit_cause  # KeyboardInterrupt: recorded and released; stop
        raise SubmitError(
            f"{outcome.submit_error}; recorded in {outcome.record_uri}; the claim is released, "
            "so a rerun submits once the cause is fixed"
        ) from outcome.submit_cause
    return outcome


def _visit(
    config: Config,
    submitter: Submitter,
    store: MonitorStore,
    now: datetime,
    *,
    manual: bool,
    note: str,
    pushgateway: str | None,
    report: bool,
    dry_run: bool,
    say: Callable[[str], None],
    health: HealthSource | None,
) -> MonitorOutcome:
    """Roll out, measure, judge, act, record. Only the rollout (its state, aliases and
    InferenceService), measuring (a run's outcome learned, the drift's start) and acting
    (the claim, the run) write state; judging reads; the record is last. A dry run judges
    the rollout's evidence without acting on it: it does not step the rollout."""
    mlflow_client = registry.client(config)
    steps: list[RolloutStep] = []
    controller = None
    if not dry_run:
        if health is None and config.deploy.rollout.prometheus:
            health = Prometheus(config.deploy.rollout.prometheus)
        controller = Controller(
            config,
            predictions_root(config),
            labels_root(config),
            health=health,
            say=say,
            mlflow_client=mlflow_client,
        )
        steps.append(controller.step(now))
    champion = registry.champion(config, mlflow_client)
    if champion is None:
        return _record_no_champion(config, store, now)
    measured = _measure(config, submitter, store, champion, now, say)
    in_progress = steps[-1].rollout if steps else None
    live, moved_past = _rollout_hold(config, mlflow_client, in_progress, measured.current)
    judged = _judge(
        config, measured, now, manual=manual, note=note, rollout=live, moved_past=moved_past
    )
    acted = _act(config, submitter, store, measured, judged.decision, now, dry_run=dry_run, say=say)
    if controller is not None and acted.run is not None and acted.run.blessed:
        # A local run named a challenger: its rollout begins now, after the one it
        # superseded (if any) was ended.
        steps.append(controller.step(now))
        if steps[-1].action == ROLLED_BACK:  # it ended the rollout the new one supersedes
            steps.append(controller.step(now))
    return _record(
        config,
        store,
        measured,
        judged,
        acted,
        now,
        pushgateway=pushgateway,
        report=report,
        rolled=tuple(steps),
    )


def _rollout_hold(
    config: Config, mlflow_client: Any, rollout: Rollout | None, current: pa.Table
) -> tuple[str | None, str | None]:
    """Whether a live rollout holds retraining back, as (what is rolled out, None); or, when
    the world has moved on since the challenger was named, (None, why a run may go).

    A run trained while the challenger still fits the data would learn the world the
    challenger already learned, and each new challenger would restart the rollout: so
    retraining waits for the verdict. But when traffic brings what the challenger's
    training data never had (a category, a month of the year, a column that came alive)
    and the window it was named in did not have either, waiting keeps two models that
    cannot know it: a run may go, and the challenger it blesses supersedes the live one
    (the controller ends its rollout). Drift alone does not count: a challenger trained
    across a change differs from every window after it, and at small windows drift
    verdicts flip with noise; either would restart the rollout at every visit."""
    from ctpipe import drift

    if rollout is None or rollout.final:
        return None, None
    live = f"v{rollout.challenger} in {rollout.phase}"
    # This visit's controller step ended any rollout whose challenger alias moved.
    challenger = registry.version_ref(mlflow_client, config.model_name, rollout.challenger)
    profile = _reference_profile(challenger)
    unseen_now = drift.unseen(profile, predlog.features_table(current))
    if not unseen_now:
        return live, None
    window = timedelta(seconds=parse_duration(config.monitor.window))
    named = predlog.read_predictions(
        predictions_root(config),
        config.model_name,
        since=rollout.started - window,
        until=rollout.started,
    )
    unseen_then = drift.unseen(profile, predlog.features_table(named))
    new = {name: what for name, what in unseen_now.items() if name not in unseen_then}
    if not new:
        return live, None
    return None, (
        f"the data has moved past challenger v{rollout.challenger} ({rollout.phase}): its "
        f"training data never had "
        + "; ".join(f"{name}: {what}" for name, what in new.items())
        + f"; a run may go, and a challenger it blesses supersedes v{rollout.challenger}"
    )


def _reference_profile(model: registry.ModelRef) -> drift.ReferenceProfile:
    from ctpipe import drift

    files = registry.download_reference(model)
    return drift.ReferenceProfile.from_bytes(files.profile.read_bytes())


def _record_no_champion(config: Config, store: MonitorStore, now: datetime) -> MonitorOutcome:
    decision = Decision(
        decide.NONE, ("no champion yet: nothing to monitor; run the pipeline first",), ()
    )
    record = {
        "time": now.isoformat(),
        "model": config.model_name,
        "champion": None,
        **decision.to_dict(),
    }
    return MonitorOutcome(decision, [], record, store.record(record, now))


# ------------------------------------------------------------------------ measure


@dataclass(frozen=True)
class Measurement:
    """What a visit read and computed before judging: the champion's traffic, its
    drift, labelled performance and error stream, and the state as the visit left it
    (a finished run's outcome learned, the drift's start kept)."""

    champion: registry.ModelRef
    as_of: datetime  # the end of the champion's data: age, cooldown and new rows count from it
    age: float  # seconds from as_of to now
    current: pa.Table  # the window's predictions, with their features
    log_rows: int
    drift: Any  # ctpipe.drift.DriftReport when the window was judged, else None
    unlabelled: int
    labelled: int  # the champion's labelled predictions
    newest_labelled: datetime | None
    metric: str  # the metric that judges the champion (performance.metric: the one computed)
    performance: RecentMetric
    test_metrics: dict[str, float]
    sequential_since: datetime  # the sequential detectors and the schedule start here
    sequential_from: str  # "champion" or "last_run"
    sequential_rows: int
    errors: np.ndarray  # per-prediction errors since sequential_since
    new_rows: int  # labelled rows newer than new_rows_since
    new_rows_since: datetime
    drift_since: str | None
    new_predictions: int  # predictions newer than the champion's data
    state: State
    active: str | None  # a run this monitor started that is still active


def _measure(
    config: Config,
    submitter: Submitter,
    store: MonitorStore,
    champion: registry.ModelRef,
    now: datetime,
    say: Callable[[str], None],
) -> Measurement:
    as_of = champion_as_of(champion)
    classes = json.loads(champion.tags.get(registry.TAG_CLASSES, "[]"))
    window = timedelta(seconds=parse_duration(config.monitor.window))
    say(
        f"champion {config.model_name} v{champion.version}, trained on data up to {as_of:%Y-%m-%d %H:%M}"
    )

    # The whole history without its features (counts, the label join), the features of
    # the current window only: a day of traffic is millions of rows, and the pod has 2 GiB.
    log, current = predlog.read_history_and_window(
        predictions_root(config), config.model_name, now=now, window=window
    )
    drift_report = _window_drift(config, champion, current, say)
    joined, mine, metric, measured = _labelled_performance(config, champion, log, classes, window)
    test_metrics = json.loads(champion.tags.get(registry.TAG_TEST_METRICS, "{}"))
    state, active = _refresh_last_run(store, submitter, now, say)

    # Sequential detectors and the schedule start over after the champion's data and after
    # the last run that ran to the end: a refused challenger must not leave the old alarm
    # (or the old age) standing.
    sequential_since, sequential_from = as_of, "champion"
    if state.succeeded_at is not None and state.succeeded_at > as_of:
        sequential_since, sequential_from = state.succeeded_at, "last_run"
    recent = mine.filter(
        pc.greater(mine[predlog.TIMESTAMP], pa.scalar(sequential_since, predlog.TIMESTAMP_TYPE))
    )

    # New training data: labelled rows newer than what the champion learned from and, while
    # the data has drifted, newer than the drift's first window. A run needs labels from
    # the world as it is now; rows from before a change would only teach the old world.
    state, drift_since = _keep_drift_since(store, state, drift_report, now, window)
    since = max(as_of, datetime.fromisoformat(drift_since)) if drift_since else as_of
    return Measurement(
        champion=champion,
        as_of=as_of,
        age=(now - as_of).total_seconds(),
        current=current,
        log_rows=log.num_rows,
        drift=drift_report,
        unlabelled=joined.unlabelled,
        labelled=mine.num_rows,
        newest_labelled=pc.max(mine[predlog.TIMESTAMP]).as_py() if mine.num_rows else None,
        metric=metric,
        performance=measured,
        test_metrics=test_metrics,
        sequential_since=sequential_since,
        sequential_from=sequential_from,
        sequential_rows=recent.num_rows,
        errors=_error_stream(recent, config, test_metrics),
        new_rows=_newer(joined.table, since),
        new_rows_since=since,
        drift_since=drift_since,
        new_predictions=_newer(log, as_of),
        state=state,
        active=active,
    )


def _window_drift(
    config: Config, champion: registry.ModelRef, current: pa.Table, say: Callable[[str], None]
) -> Any:
    """The current window's drift from the champion's reference profile; None when the
    trigger is off or the window has too few rows to judge."""
    from ctpipe import drift

    settings = config.monitor
    drift_report = None
    if settings.triggers.data_drift and current.num_rows >= settings.min_rows:
        profile = _reference_profile(champion)
        drift_report = drift.compare(profile, predlog.features_table(current), settings.drift)
        say(drift_report.summary())
    return drift_report


def _labelled_performance(
    config: Config,
    champion: registry.ModelRef,
    log: pa.Table,
    classes: list[Any],
    window: timedelta,
) -> tuple[predlog.LabelledPredictions, pa.Table, str, RecentMetric]:
    """The delayed labels joined to the log, the champion's labelled predictions, the
    metric that judges it, and that metric on its newest labelled window."""
    labels = predlog.read_labels(labels_root(config), config.model_name)
    joined = predlog.join_labels(log, labels)
    joined.raise_if_unmatched()
    mine = joined.table.filter(pc.equal(joined.table[predlog.MODEL_VERSION], champion.version))
    check_label_domain(mine, config, classes, champion.version)
    triggers_config = config.monitor.triggers
    metric = evaluation.performance_metric(
        config.task, len(classes), triggers_config.performance_metric
    )
    measured = _recent_metric(
        mine, metric, config, classes, window, confidence=triggers_config.performance_confidence
    )
    return joined, mine, metric, measured


def _refresh_last_run(
    store: MonitorStore, submitter: Submitter, now: datetime, say: Callable[[str], None]
) -> tuple[State, str | None]:
    """The state with the last run's outcome, once it is known; and the run still
    active, if any."""
    state = store.load()
    state, active, learned = _last_run_outcome(state, submitter, now)
    if learned:
        store.save(state)
        say(f"last run {state.last_run.run_name if state.last_run else '?'}: {learned}")
    return state, active


def _keep_drift_since(
    store: MonitorStore, state: State, drift_report: Any, now: datetime, window: timedelta
) -> tuple[State, str | None]:
    """When the data started drifting (the first drifted window), kept in the state
    while it drifts; None while it does not."""
    drifting = drift_report is not None and drift_report.drifted
    drift_since = (state.drift_since or (now - window).isoformat()) if drifting else None
    if drift_report is not None and drift_since != state.drift_since:
        state = dataclasses.replace(state, drift_since=drift_since)
        store.save(state)
    return state, drift_since


def _newer(table: pa.Table, since: datetime) -> int:
    """Rows of the log (or of its labelled join) stamped after `since`."""
    after = pa.scalar(since, predlog.TIMESTAMP_TYPE)
    return int(pc.sum(pc.greater(table[predlog.TIMESTAMP], after)).as_py() or 0)


# -------------------------------------------------------------------------- judge


@dataclass(frozen=True)
class Judgement:
    """The triggers, how data drift weighed against performance, and the decision of
    the retraining rules (ctpipe.monitor.decide) on them."""

    triggers: list[TriggerResult]
    weighting: dict[str, Any]
    decision: Decision
    pending: list[PendingChange]  # schema changes waiting for approval when judged


def _judge(
    config: Config,
    measured: Measurement,
    now: datetime,
    *,
    manual: bool,
    note: str,
    rollout: str | None = None,
    moved_past: str | None = None,
) -> Judgement:
    fired, weighting = _triggers(config, measured, now, manual=manual, note=note)
    state = measured.state
    last_run_at = max(
        [
            t
            for t in (measured.as_of, state.last_run.at if state.last_run else None)
            if t is not None
        ]
    )
    # Reasons to submit nothing at all, each "blocked: ..."; too many failed runs in a row
    # add theirs inside the decision rules.
    pending = SchemaStore(config.state_dir, config.model_name).pending()
    decision = decide.decide(
        fired,
        config.monitor.policy,
        now=now,
        new_rows=measured.new_rows,
        last_run_at=last_run_at,
        active_run=measured.active,
        failures=_failures(state),
        blocks=_schema_blocks(pending),
        rollout=rollout,
    )
    notes = ([weighting["explanation"]] if weighting["outranked"] else []) + (
        [moved_past] if moved_past and decision.fired else []
    )
    if notes:
        decision = Decision(decision.action, (*decision.reasons, *notes), decision.fired)
    return Judgement(fired, weighting, decision, pending)


def _triggers(
    config: Config, measured: Measurement, now: datetime, *, manual: bool, note: str
) -> tuple[list[TriggerResult], dict[str, Any]]:
    """Every trigger, in the record's order, and the weighting of data drift against
    performance."""
    rules = config.monitor.triggers
    performance = measured.performance
    performance_result = triggers.performance(
        performance.metric,
        performance.value,
        performance.labelled,
        higher_is_better=METRICS[config.task][performance.metric],
        min_labelled=rules.min_labelled,
        floor=rules.performance_floor,
        champion_value=measured.test_metrics.get(performance.metric),
        margin=rules.performance_margin,
        interval=performance.interval,
    )
    # Labels in time outrank data drift: see triggers.weigh.
    labels_timely = triggers.label_timeliness(
        measured.newest_labelled,
        now,
        performance.labelled,
        min_labelled=rules.min_labelled,
        horizon=rules.label_horizon,
        measured=performance.value is not None,
    )
    drift_result, weighting = triggers.weigh(
        _data_drift_trigger(measured.drift, measured.current.num_rows, config),
        performance_result,
        labels_timely,
        large_share=rules.large_drift_share,
        performance_judged=rules.performance_floor is not None
        or (rules.performance_margin is not None and performance.metric in measured.test_metrics),
    )
    max_age = rules.max_model_age
    fired = [
        triggers.schedule(
            (now - measured.sequential_since).total_seconds(),
            parse_duration(max_age) if max_age else None,
            since_run=measured.sequential_from == "last_run",
        ),
        drift_result,
        performance_result,
        triggers.concept_drift(
            measured.errors,
            rules.page_hinkley_delta,
            rules.page_hinkley_threshold,
            since=measured.sequential_since.isoformat(),
        )
        if rules.concept_drift
        else triggers.off(triggers.CONCEPT_DRIFT),
        triggers.manual(manual, note),
    ]
    return fired, weighting


# ---------------------------------------------------------------------------- act


@dataclass(frozen=True)
class Action:
    """What the visit did: the decision as it finally stands (a dry run, a claim held by
    another monitor or a failed submission adds its reason), the state after it, and the
    run submitted or the submission that failed."""

    decision: Decision
    state: State
    run: RunRef | None = None
    failed: _Submitted | None = None


def _act(
    config: Config,
    submitter: Submitter,
    store: MonitorStore,
    measured: Measurement,
    decision: Decision,
    now: datetime,
    *,
    dry_run: bool,
    say: Callable[[str], None],
) -> Action:
    """Submit what the decision submits, under a claim on the next generation."""
    state = measured.state
    if decision.action != decide.SUBMIT:
        return Action(decision, state)
    if dry_run:
        return Action(
            Decision(
                decide.SKIP, (*decision.reasons, "dry run: nothing submitted"), decision.fired
            ),
            state,
        )
    generation = store.claim(state, now, parse_duration(config.monitor.policy.claim_ttl))
    if generation is None:
        return Action(
            Decision(
                decide.SKIP,
                (*decision.reasons, "another monitor claimed this submission"),
                decision.fired,
            ),
            state,
        )
    submitted = _submit(
        config, submitter, store, state, decision, generation, now, measured.drift_since, say
    )
    if submitted.error is None:
        return Action(decision, submitted.state, submitted.run)
    decision = Decision(
        decision.action,
        (
            *decision.reasons,
            f"submission failed: {short_error(submitted.error, 300)}; the claim "
            f"on generation {generation} is released",
        ),
        decision.fired,
    )
    return Action(decision, submitted.state, submitted.run, submitted)


# ------------------------------------------------------------------------- record


def _record(
    config: Config,
    store: MonitorStore,
    measured: Measurement,
    judged: Judgement,
    acted: Action,
    now: datetime,
    *,
    pushgateway: str | None,
    report: bool,
    rolled: tuple[RolloutStep, ...] = (),
) -> MonitorOutcome:
    """The drift report, the decision record and the metrics push of a judged visit."""
    settings = config.monitor
    champion, current, drift_report = measured.champion, measured.current, measured.drift
    state, run, failed = acted.state, acted.run, acted.failed
    # Blocked after this visit: a block stands, or failed runs reached the limit (a manual
    # run that just failed keeps it; one that ran to the end lifted it).
    still = decide.failure_block(settings.policy, _failures(state))
    pending = judged.pending
    if run is not None:  # it may have proposed a schema change
        pending = SchemaStore(config.state_dir, config.model_name).pending()
    blocked = [*_schema_blocks(pending), *([still] if still else [])]

    outcome_notes: list[str] = []
    report_uri = mlflow_report = None
    if report and drift_report is not None and settings.report_rows > 0:
        report_uri, mlflow_report = _html_report(
            config, champion, current, drift_report, now, outcome_notes
        )

    record = _decision_record(
        config,
        measured,
        judged,
        acted,
        now,
        blocked,
        pending,
        report_uri,
        mlflow_report,
        outcome_notes,
    )
    record["rollout"] = [r for r in map(_rollout_record, rolled) if r is not None]
    record_uri = store.record(record, now)
    if pushgateway:
        _push(
            pushgateway,
            config,
            drift_report,
            acted.decision,
            judged.triggers,
            measured.age,
            measured.metric,
            measured.performance.value,
            current.num_rows,
            outcome_notes,
            blocked=bool(blocked),
            failed_runs=state.failures,
            schema_changes_pending=len(pending),
            rolled=rolled[-1] if rolled else None,
        )
    return MonitorOutcome(
        acted.decision,
        judged.triggers,
        record,
        record_uri,
        run,
        drift_report,
        report_uri,
        outcome_notes,
        submit_error=failed.error if failed else None,
        submit_cause=failed.cause if failed else None,
        rollout_steps=rolled,
    )


def _rollout_record(rolled: RolloutStep | None) -> dict[str, Any] | None:
    if rolled is None or rolled.rollout is None:
        return None
    r = rolled.rollout
    return {
        "challenger": r.challenger,
        "champion": r.champion,
        "action": rolled.action,
        "phase": r.phase,
        "traffic_percent": r.traffic_percent,
        "reasons": list(rolled.reasons),
        "record": rolled.record,
    }


def _decision_record(
    config: Config,
    measured: Measurement,
    judged: Judgement,
    acted: Action,
    now: datetime,
    blocked: list[str],
    pending: list[PendingChange],
    report_uri: str | None,
    mlflow_report: str | None,
    notes: list[str],
) -> dict[str, Any]:
    champion, performance, state = measured.champion, measured.performance, acted.state
    interval = performance.interval
    return {
        "time": now.isoformat(),
        "model": config.model_name,
        "champion": {
            "version": champion.version,
            "as_of": measured.as_of.isoformat(),
            "age_seconds": measured.age,
        },
        "inputs": {
            "window": config.monitor.window,
            "window_rows": measured.current.num_rows,
            "log_rows": measured.log_rows,
            "new_labelled_rows": measured.new_rows,
            "new_rows_since": measured.new_rows_since.isoformat(),
            "drift_since": measured.drift_since,
            "sequential_since": measured.sequential_since.isoformat(),
            "sequential_since_from": measured.sequential_from,
            "sequential_rows": measured.sequential_rows,
            "new_predictions_since_champion": measured.new_predictions,
            "labelled_champion_rows": measured.labelled,
            "unlabelled_rows": measured.unlabelled,
        },
        "statistics": {
            "drift": measured.drift.to_dict() if measured.drift is not None else None,
            "performance": {
                "metric": performance.metric,
                "value": performance.value,
                "labelled": performance.labelled,
                "low": interval.low if interval else None,
                "high": interval.high if interval else None,
                "confidence": interval.confidence if interval else None,
            },
            "champion_test_metrics": measured.test_metrics,
        },
        "triggers": [t.to_dict() for t in judged.triggers],
        "weighting": judged.weighting,
        **acted.decision.to_dict(),
        "run": None if acted.run is None else dataclasses.asdict(acted.run),
        "submission_failure": None
        if acted.failed is None
        else {"error": acted.failed.error, "claim": acted.failed.claim_uri, "claim_released": True},
        "last_run": None if state.last_run is None else dataclasses.asdict(state.last_run),
        "failures": {
            "in_a_row": state.failures,
            "max": config.monitor.policy.max_failed_runs,
            "last_error": state.last_error,
            "last_failure_at": state.last_failure_at,
        },
        "blocked": blocked,
        "schema": {
            "champion_version": champion.tags.get(registry.TAG_SCHEMA_VERSION),
            "champion_changes": json.loads(champion.tags.get(registry.TAG_SCHEMA_CHANGES) or "{}"),
            "pending": [
                {
                    "run_id": c.run_id,
                    "from": c.proposed.parent_version,
                    "changes": list(c.proposed.changes),
                    "accept": c.accept_command,
                }
                for c in pending
            ],
        },
        "drift_report": report_uri,
        "drift_report_mlflow": mlflow_report,
        "notes": notes,
    }


@dataclass(frozen=True)
class _Submitted:
    state: State
    run: RunRef | None
    error: str | None = None  # the submission itself failed: no run exists
    cause: BaseException | None = None
    claim_uri: str | None = None


def _submit(
    config: Config,
    submitter: Submitter,
    store: MonitorStore,
    state: State,
    decision: Decision,
    generation: int,
    now: datetime,
    drift_since: str | None,
    say: Callable[[str], None],
) -> _Submitted:
    """Submit under the claim on `generation`; record the run, or release the claim."""
    run_name = f"{config.model_name}-{decision.run_reason.replace('+', '-')}-{now:%Y%m%d-%H%M%S}"
    say(f"submitting {run_name} ({submitter.backend})")
    try:
        run = submitter.submit(config, decision.run_reason, run_name)
    except (Exception, KeyboardInterrupt) as exc:
        error = _submission_error(exc, run_name, submitter.backend)
        # The state moves past this generation before the claim is released: a monitor
        # that then claims the next one and records its run cannot be overwritten by us.
        state = dataclasses.replace(state, generation=generation, drift_since=drift_since)
        store.save(state)
        claim = store.release(generation, now, error)
        say(f"{error}; claim released ({claim})")
        return _Submitted(state, None, error, exc, claim)
    state = dataclasses.replace(
        state,
        generation=generation,
        last_run=LastRun(
            run.run_id, run.run_name, run.backend, decision.run_reason, now.isoformat(), generation
        ),
        drift_since=drift_since,
    )
    if run.failed:  # a local run ends inside submit(); a KFP run is asked next time
        state = state.with_outcome(FAILED, run.error, now)
        say(f"run {run.run_name} failed: {short_error(run.error)}")
    elif run.finished:
        state = state.with_outcome(SUCCEEDED, None, now)
    store.save(state)
    return _Submitted(state, run)


def _submission_error(exc: BaseException, run_name: str, backend: str) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return f"submitting {run_name} ({backend}) was interrupted"
    text = str(exc) if isinstance(exc, CtpipeError) else f"{type(exc).__name__}: {exc}"
    if text.startswith("submitting "):  # KfpSubmitter's own errors say what they submitted
        return text
    return f"submitting {run_name} ({backend}) failed: {text}"


def _record_error(
    config: Config, store: MonitorStore, now: datetime, exc: Exception, say: Callable[[str], None]
) -> None:
    """The decision record of a visit that stopped on an error, when it can be written."""
    if (
        isinstance(exc, preflight.PreflightError)
        and exc.service == preflight.S3
        and storage.is_s3(config.state_dir)
    ):
        say(f"no decision record: state_dir {config.state_dir} is on the S3 that does not answer")
        return
    decision = Decision(decide.ERROR, (str(exc),), ())
    record = {
        "time": now.isoformat(),
        "model": config.model_name,
        **decision.to_dict(),
        "error": {"type": type(exc).__name__, "message": str(exc)},
    }
    try:
        uri = store.record(record, now)
    except Exception as failure:  # the error itself is what the caller must see
        say(f"no decision record: {failure}")
        return
    say(f"decision: ERROR, recorded in {uri}")


def check_label_domain(
    labelled: pa.Table, config: Config, classes: list[Any], version: str
) -> None:
    """Labels outside the model's classes (or, for regression, not numbers) would be
    scored as wrong answers, or not at all, and a broken label feed would pass as
    labelled traffic: stop and name them."""
    if labelled.num_rows == 0 or (config.task != "regression" and not classes):
        return
    counts = pc.value_counts(labelled[predlog.LABEL])
    values, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    seen = dict(zip(values, numbers, strict=True))
    if config.task == "regression":
        unexpected = {v: n for v, n in seen.items() if not _finite_number(v)}
        rule, expected = "numeric_label", "finite numbers"
        fix = "write the measured values as numbers"
    else:
        # As the metric will match them: the log's spelling of each class, 1 == 1.0.
        from ctpipe.evaluation import class_key

        spelled = [predlog.prediction_text(c) for c in classes]
        known = {class_key(n) for n in spelled}
        unexpected = {v: n for v, n in seen.items() if class_key(v) not in known}
        names = ", ".join(repr(n) for n in spelled)
        rule, expected = "label_domain", f"among the model's classes {names}"
        fix = (
            "write labels with the values the model was trained on (a class it never "
            "learned needs `ctpipe schema infer`, then `ctpipe run`)"
        )
    if not unexpected:
        return
    rows = sum(unexpected.values())
    shown = ", ".join(
        f"{value!r} ({count:,} rows)"
        for value, count in sorted(unexpected.items(), key=lambda item: -item[1])[:5]
    )
    odd = pa.array(list(unexpected), pa.string())
    wrong = labelled.filter(pc.fill_null(pc.is_in(labelled[predlog.LABEL], odd), True))
    ids = ", ".join(wrong[predlog.REQUEST_ID].slice(0, 3).to_pylist())
    raise DataError(
        f"{storage.join(labels_root(config), config.model_name)}: column {predlog.LABEL!r}, "
        f"rule {rule}: {rows:,} of the {labelled.num_rows:,} labelled predictions of "
        f"{config.model_name} v{version} have labels that are not {expected}: {shown} "
        f"(request ids such as {ids}); {fix}"
    )


def _finite_number(text: Any) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except (TypeError, ValueError):
        return False


def _last_run_outcome(
    state: State, submitter: Submitter, now: datetime
) -> tuple[State, str | None, str]:
    """(state, the active run's name or None, what was learned: "" when nothing new).

    A run's outcome is recorded once: a run that failed adds one to the failures in a
    row, one that ran to the end (blessed or refused) resets them."""
    last = state.last_run
    if last is None or last.outcome is not None or last.backend != submitter.backend:
        return state, None, ""
    outcome = submitter.outcome(last.run_id)
    if outcome.active:
        return state, last.run_name, ""
    if outcome.failed:
        state = state.with_outcome(FAILED, outcome.error or outcome.state, now)
        return state, None, f"{outcome.state}: {short_error(outcome.error)}"
    if outcome.succeeded:
        return state.with_outcome(SUCCEEDED, None, now), None, outcome.state
    return state, None, ""  # not visible from here (a local run of another process)


def _failures(state: State) -> decide.Failures:
    return decide.Failures(state.failures, state.last_error, state.failed_at)


def _schema_blocks(waiting: list[PendingChange]) -> tuple[str, ...]:
    """A schema change waiting for approval (validation.evolution: manual) blocks runs:
    each would stop at validation the same way until someone accepts it."""
    if not waiting:
        return ()
    newest = waiting[-1]
    more = f" ({len(waiting)} changes waiting)" if len(waiting) > 1 else ""
    return (
        f"{decide.BLOCKED_PREFIX}schema change needs approval{more}: {newest.describe()}; "
        f"accept it with `{newest.accept_command}`",
    )


def _data_drift_trigger(report: Any, rows: int, config: Config) -> TriggerResult:
    settings = config.monitor
    if not settings.triggers.data_drift:
        return triggers.off(triggers.DATA_DRIFT)
    if report is None:
        return triggers.data_drift(None, False, [], rows, settings.min_rows, settings.drift.share)
    drifted = [c.name for c in report.columns if c.drifted]
    return triggers.data_drift(
        report.drift_share, report.drifted, drifted, rows, settings.min_rows, settings.drift.share
    )


PERFORMANCE_RESAMPLES = 400  # bootstrap resamples of the labelled window
PERFORMANCE_SEED = 0
PERFORMANCE_MAX_ROWS = 20_000  # above this, an m-out-of-n bootstrap bounds the time


@dataclass(frozen=True)
class RecentMetric:
    """The metric on the champion's labelled window, with its bootstrap interval."""

    metric: str  # the one computed (multiclass logs hard predictions: accuracy)
    value: float | None
    labelled: int
    interval: triggers.Interval | None = None


def _recent_metric(
    labelled: pa.Table,
    metric: str,
    config: Config,
    classes: list[Any],
    window: timedelta,
    *,
    confidence: float | None = None,
) -> RecentMetric:
    """The metric on the champion's labelled predictions within one window of the newest
    labelled one (anchored there, not at now, because labels arrive late), and with a
    `confidence` its bootstrap interval."""
    if labelled.num_rows == 0:
        return RecentMetric(metric, None, 0)
    newest = pc.max(labelled[predlog.TIMESTAMP]).as_py()
    recent = labelled.filter(
        pc.greater_equal(
            labelled[predlog.TIMESTAMP], pa.scalar(newest - window, predlog.TIMESTAMP_TYPE)
        )
    )
    scored = evaluation.score_log(metric, config.task, recent, tuple(classes))
    by_score = config.task != "regression" and metric == "roc_auc"
    if by_score and len(set(scored.target.values.tolist()) - {-1}) < 2:
        return RecentMetric(metric, None, recent.num_rows)  # AUC needs both classes
    value = scored.value
    interval = (
        metric_interval(scored.metric, scored.target, scored.scores, confidence=confidence)
        if confidence is not None and value == value
        else None
    )
    return RecentMetric(scored.metric, value, recent.num_rows, interval)


def metric_interval(
    metric: str,
    target: Any,
    scores: np.ndarray,
    *,
    confidence: float,
    samples: int = PERFORMANCE_RESAMPLES,
    seed: int = PERFORMANCE_SEED,
    max_rows: int = PERFORMANCE_MAX_ROWS,
) -> triggers.Interval | None:
    """A percentile bootstrap interval of `metric` (evaluation's resampling weights, seeded).

    Above `max_rows` rows the resamples are drawn from a seeded subsample of `max_rows`
    and their spread is scaled by sqrt(max_rows / rows) around the full point estimate
    (an m-out-of-n bootstrap), which bounds the time and memory. None when too few
    resamples give a finite value (e.g. AUC on resamples with one class).
    """
    rows = len(target.values)
    if rows < 2:
        return None
    function = evaluation.METRIC_FUNCTIONS[metric]
    point = evaluation.metric_value(metric, target, scores)
    centre, scale = point, 1.0
    if rows > max_rows:
        picked = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
        target = evaluation.Target(target.task, target.values[picked], target.classes)
        scores = scores[picked]
        centre = evaluation.metric_value(metric, target, scores)
        scale = float(np.sqrt(max_rows / rows))
    values = np.concatenate(
        [
            function(target, scores, weights)
            for weights in evaluation.bootstrap_weights(len(target.values), samples, seed)
        ]
    )
    values = values[np.isfinite(values)]
    if len(values) < samples // 2:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return triggers.Interval(
        float(point + (low - centre) * scale),
        float(point + (high - centre) * scale),
        confidence,
        len(values),
    )


def _error_stream(labelled: pa.Table, config: Config, test_metrics: dict[str, float]) -> np.ndarray:
    """Per-prediction errors in time order: 0/1 misclassification, or |error| / test RMSE."""
    if labelled.num_rows == 0:
        return np.zeros(0)
    truth = labelled[predlog.LABEL].to_pylist()
    predicted = predlog.logged_predictions(labelled, config.task)
    if config.task == "regression":
        values = np.asarray(truth, dtype=float)
        scale = test_metrics.get("rmse") or float(np.std(values)) or 1.0
        return np.abs(values - predicted) / scale
    return np.array([t != p for t, p in zip(truth, predicted, strict=True)], dtype=float)


def _html_report(
    config: Config,
    champion: registry.ModelRef,
    current: pa.Table,
    report: Any,
    now: datetime,
    notes: list[str],
) -> tuple[str | None, str | None]:
    """The evidently page for people: written next to the decisions and attached to the
    champion's MLflow run. Returns both locations."""
    from ctpipe.drift import ReferenceProfile
    from ctpipe.drift import report as pages

    try:
        files = registry.download_reference(champion)
        trained = ReferenceProfile.from_bytes(files.profile.read_bytes()).rows
        context = pages.PageContext(
            config.model_name,
            champion.version,
            pages.Window.fitted(
                f"champion v{champion.version}'s training data ({trained:,} rows profiled), "
                "a sample kept when it was trained",
                registry.fit_record(champion),
                pages.sample_rows(files.sample),
            ),
            pages.Window.of(
                f"the prediction log's window (monitor.window {config.monitor.window}, "
                f"up to {now:%Y-%m-%d %H:%M})",
                current,
                predlog.TIMESTAMP,
            ),
            verdict=report,
        )
        page = pages.page(
            files.sample,
            predlog.features_table(current),
            {c.name: c.kind for c in report.columns},
            config.monitor.drift,
            config.monitor.report_rows,
            # The page shows the thresholds the verdict used, calibrated ones included.
            column_thresholds={c.name: c.threshold for c in report.columns},
            context=context,
        )
        uri = storage.join(
            MonitorStore(config.state_dir, config.model_name).root,
            "reports",
            f"drift-{now:%Y%m%dT%H%M%SZ}.html",
        )
        storage.write_bytes(uri, page.encode())
        linked = registry.log_monitor_report(
            config, champion, page, f"drift-{now:%Y%m%dT%H%M%SZ}.html"
        )
        return uri, linked
    except Exception as exc:  # the report is for people; the decision stands without it
        notes.append(f"no drift report: {exc}")
        return None, None


def _push(
    gateway: str,
    config: Config,
    report: Any,
    decision: Decision,
    fired: list[TriggerResult],
    age: float,
    metric: str,
    value: float | None,
    rows: int,
    notes: list[str],
    *,
    blocked: bool,
    failed_runs: int,
    schema_changes_pending: int,
    rolled: RolloutStep | None = None,
) -> None:
    from ctpipe.monitor.metrics import MonitorMetrics

    metrics = MonitorMetrics()
    features = (
        {c.name: {k: float(v) for k, v in c.statistics.items() if v == v} for c in report.columns}
        if report
        else {}
    )
    metrics.record(
        config.model_name,
        action=decision.action,
        drift_share=report.drift_share if report is not None else None,
        feature_scores=features,
        triggers={t.name: t.fired for t in fired},
        champion_age_seconds=age,
        labelled_metrics={metric: value} if value is not None else {},
        rows=rows,
        blocked=blocked,
        failed_runs=failed_runs,
        schema_changes_pending=schema_changes_pending,
    )
    if rolled is not None and config.deploy.rollout.strategy == "progressive":
        ended = [r["action"] for r in RolloutStore(config.state_dir, config.model_name).history()]
        current = rolled.rollout
        metrics.record_rollout(
            config.model_name,
            phase=current.phase if current is not None else None,
            traffic_ratio=current.traffic_percent / 100 if current is not None else 0.0,
            rollbacks=ended.count("rolled_back"),
            promotions=ended.count("promoted"),
        )
    result = metrics.push(gateway)
    if not result.pushed:
        notes.append(f"metrics not pushed: {result.message}")
