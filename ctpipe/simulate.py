"""Replay a time-ordered dataset as a stream, with the real monitor and the real pipeline.

For each batch, in time order:
    1. the champion predicts the batch (before anyone has seen its labels),
    2. the predictions go to the prediction log,
    3. the labels of the batch `label_delay` batches back are revealed,
    4. the monitor runs, with the batch's end as "now",
    5. when it submits, the real pipeline (kfp.local) trains on the labelled rows known
       so far, gates against the champion on the newest of them, and promotes the winner.
       A run that fails is part of the replay too: it is recorded, the champion stays,
       and the monitor backs off (or, after too many in a row, blocks) as it would live.
    6. under deploy.rollout.strategy progressive, a blessed challenger is rolled out as
       the predictor and KServe would: it scores each batch in shadow (logged as shadow
       rows), then answers deploy.canary_traffic_percent of the rows as the canary, and
       the monitor's rollout controller promotes or rolls it back on those answers.

So the prequential metric is honest: every prediction is made by a model that never saw
its label. Users run this on their own data to choose a policy.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import config as config_module
from ctpipe import evaluation, registry
from ctpipe.config import Config
from ctpipe.data import tables
from ctpipe.errors import ConfigError, DataError
from ctpipe.monitor.submit import RunRef, SubmitError, Submitter, short_error

POLICIES = ("never", "schedule:K", "drift", "performance", "auto")
# `auto` is every trigger, as the shipped config runs them: data drift, performance and
# concept drift, with the schedule (max_model_age) as a backstop at this many batches. A
# champion that no trigger faults still ages: seasons it never saw, slow drift that stays
# under every threshold.
AUTO_BACKSTOP_BATCHES = 8
# What a monitor visit's rollout step did, when it moved (waiting and idle are not moves).
ROLLOUT_MOVES = ("began", "canary", "promoted", "rolled_back")
ROLLOUT_TIMEOUT_BATCHES = 6


@dataclass(frozen=True)
class ReplayStrategy:
    """Which triggers the replayed monitor runs: one `--policy` value."""

    kind: str  # never | schedule | drift | performance | auto
    every: int = 0  # batches, for schedule

    @classmethod
    def parse(cls, text: str) -> ReplayStrategy:
        if text in ("never", "drift", "performance", "auto"):
            return cls(text)
        if text.startswith("schedule:"):
            try:
                every = int(text.split(":", 1)[1])
            except ValueError:
                every = 0
            if every >= 1:
                return cls("schedule", every)
        raise ConfigError(
            f"--policy: expected one of never, schedule:K (K >= 1 batches), drift, performance, auto; got {text!r}"
        )

    def __str__(self) -> str:
        return f"schedule:{self.every}" if self.kind == "schedule" else self.kind


@dataclass
class BatchRecord:
    batch: int
    start: str
    rows: int
    drift_share: float | None
    fired: list[str]
    action: str
    champion: str  # version that predicted this batch
    champion_after: str
    metric: float | None = None  # on this batch's predictions, once its labels are known
    run: str | None = None
    blessed: bool | None = None
    registered: str | None = None  # the version a blessed run registered
    failed: bool = False  # the submitted run failed; the champion stayed
    error: str | None = None  # why it failed (short), or why the monitor is blocked
    # The rollout as this batch was served: "shadow", "canary", or None; and what the
    # monitor's rollout step decided after it: wait, canary, promoted, rolled_back (or None).
    served_as: str | None = None
    challenger: str | None = None  # the version in shadow or canary while this batch was served
    rollout: str | None = None
    rollout_reason: str | None = None


@dataclass
class Simulation:
    out_dir: Path
    policy: str
    metric_name: str
    drift_threshold: float = 0.25
    batches: list[BatchRecord] = field(default_factory=list)
    retrains: int = 0  # runs submitted, failed ones included
    promotions: int = 0
    rollbacks: int = 0  # challengers rolled back on live traffic
    failed_runs: int = 0
    prequential: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    title: str = ""  # the timeline plot's title; "" for "ctpipe simulate (<policy>)"

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "batches": len(self.batches),
            "rows": sum(b.rows for b in self.batches),
            "prequential": self.prequential,
            "retrains": self.retrains,
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
            "failed_runs": self.failed_runs,
            "compute_seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "timeline": [dataclasses.asdict(b) for b in self.batches],
        }


def load_stream(path: str, time_column: str) -> pa.Table:
    """Any CSV / Parquet / JSON Lines file, sorted by its timestamp column."""
    from ctpipe import storage
    from ctpipe.data.ingest import FORMATS_BY_SUFFIX, normalise_timestamp, read_file

    files = storage.list_files(path, tuple(FORMATS_BY_SUFFIX))
    if not files:
        raise DataError(f"{path}: no data file found")
    table = pa.concat_tables([read_file(f) for f in files], promote_options="permissive")
    rows = table.num_rows
    table = table.append_column(tables.FILE_COLUMN, pa.array([path] * rows)).append_column(
        tables.ROW_COLUMN, pa.array(np.arange(1, rows + 1))
    )
    table = normalise_timestamp(table, time_column).drop_columns(list(tables.PROVENANCE))
    return table.sort_by([(time_column, "ascending")])


def prepare_config(
    base: Config,
    out_dir: Path,
    strategy: ReplayStrategy,
    batch_span: float,
    batch: int,
    delay: int,
) -> Config:
    """The config the replay runs with: state under out_dir, triggers set by the strategy.

    Durations are in the data's own time: the monitor's window is one batch, and a
    schedule of K batches is K batch-spans of model age.
    """
    monitor = base.monitor

    def span(batches: float) -> str:
        return f"{batches * batch_span / 3600:.2f}h"

    triggers = dataclasses.replace(
        monitor.triggers,
        max_model_age=(
            span(strategy.every + delay - 0.5)
            if strategy.kind == "schedule"
            else span(AUTO_BACKSTOP_BATCHES + delay - 0.5)
            if strategy.kind == "auto"
            else None
        ),
        data_drift=strategy.kind in ("drift", "auto"),
        concept_drift=strategy.kind == "auto",
        min_labelled=min(monitor.triggers.min_labelled, batch),
        # The newest labels are `delay` batches old at a check: with a delay of 0 or 1
        # they are in time (performance decides), from 2 on data drift may act alone.
        # A config's null (drift always acts alone) stays null.
        label_horizon=span(1.5) if monitor.triggers.label_horizon is not None else None,
    )
    if strategy.kind not in ("performance", "auto"):
        triggers = dataclasses.replace(triggers, performance_floor=None, performance_margin=None)
    rules = dataclasses.replace(
        monitor.policy,
        cooldown=span(2.5 if strategy.kind == "auto" else 0.5),
        min_new_rows=2 * batch if strategy.kind != "schedule" else 0,
        retry_backoff=span(0.5),  # after a failed run: the next batch, then 1, 2, 4 batches on
        max_retry_backoff=span(8.0),
    )
    monitor = dataclasses.replace(
        monitor,
        predictions=str(out_dir / "predictions"),
        labels=str(out_dir / "labels"),
        window=span(1.0),
        min_rows=min(monitor.min_rows, batch),
        triggers=triggers,
        policy=rules,
        report_rows=0,  # one report at the end instead of one per run (evidently takes seconds)
    )
    data = dataclasses.replace(
        base.data, uri=str(out_dir / "train" / "data.parquet"), window=config_module.Window()
    )
    # A rollout in batches: one labelled batch of canary rows (its random share of the
    # batch, so about half the expected count to be safe) is enough evidence, and a
    # challenger without a verdict after ROLLOUT_TIMEOUT_BATCHES is rolled back. A replay
    # never touches a cluster.
    rollout = base.deploy.rollout
    canary_rows = batch * base.deploy.canary_traffic_percent // 100
    deploy = dataclasses.replace(
        base.deploy,
        apply="never",
        rollout=dataclasses.replace(
            rollout,
            timeout=span(ROLLOUT_TIMEOUT_BATCHES),
            min_labelled=min(rollout.min_labelled, max(10, (canary_rows or batch) // 2)),
            min_requests=min(rollout.min_requests, max(1, canary_rows or batch)),
        ),
    )
    return base.replace(state_dir=str(out_dir / "state"), data=data, monitor=monitor, deploy=deploy)


def run(
    stream: pa.Table,
    base: Config,
    *,
    out_dir: Path,
    batch: int,
    label_delay: int,
    policy: str,
    initial_batches: int = 4,
    train_window: int | None = None,
    say: Callable[[str], None] = print,
    submitter_for: Callable[[IO[str]], Submitter],
    title: str = "",
) -> Simulation:
    """Replay `stream` in batches under the strategy `policy` (a `--policy` value), with
    everything written under out_dir. `title` heads the timeline plot (e.g. "ctpipe demo";
    by default "ctpipe simulate (<policy>)").

    `submitter_for` makes the submitter of the replay's runs from the file their
    logs go to (the wiring's local submitter: the core never imports the pipeline)."""
    strategy = ReplayStrategy.parse(policy)
    count = _check_replay(stream, base, batch, label_delay, initial_batches)
    stream, base = _with_request_ids(stream, base)
    batch_span = _batch_span(stream, base, batch, count)
    config = prepare_config(base, out_dir, strategy, batch_span, batch, label_delay)
    (out_dir / "train").mkdir(parents=True, exist_ok=True)
    log_file = (out_dir / "pipeline-runs.log").open("w")
    submitter = submitter_for(log_file)
    replay = _Replay(
        stream,
        config,
        submitter,
        Simulation(
            out_dir,
            str(strategy),
            "",
            drift_threshold=config.monitor.drift.share,
            title=title or f"ctpipe simulate ({strategy})",
        ),
        batch=batch,
        label_delay=label_delay,
        first=initial_batches,
        count=count,
        # By default a retrain sees every labelled row so far, as a config without data.window
        # does: a window shorter than a season forgets what the season before taught.
        train_window=train_window or stream.num_rows,
        say=say,
    )
    first = replay.train_first_champion()
    if first.failed:  # nothing to replay without a champion
        log_file.close()
        raise SubmitError(
            f"the first training run failed: {first.error}; see {out_dir / 'pipeline-runs.log'}"
        )
    if not first.blessed:
        raise DataError("the first champion was not blessed; check gate.thresholds for this data")
    say(f"champion v{first.champion_version} is live")
    replay.start_timeline()
    for index in range(initial_batches, count):
        replay.step(index)
    for late in range(max(initial_batches, count - label_delay), count):
        replay.score(late)
    log_file.close()
    sim = replay.finish()
    _final_report(
        config,
        base.monitor.report_rows,
        replay.rows(count - 1, count),
        out_dir / "drift-report.html",
        trained_on=_champion_rows(replay),
    )
    return sim


def _check_replay(
    stream: pa.Table, base: Config, batch: int, label_delay: int, initial_batches: int
) -> int:
    """The number of whole batches, once the options and the data allow a replay."""
    if batch < 10:
        raise ConfigError(f"--batch: expected at least 10 rows, got {batch}")
    if label_delay < 0:
        raise ConfigError(f"--label-delay: expected 0 or more batches, got {label_delay}")
    count = stream.num_rows // batch
    if count < initial_batches + 2:
        raise DataError(
            f"{stream.num_rows:,} rows make {count} batches of {batch}; the replay needs at least "
            f"{initial_batches + 2} ({initial_batches} to train the first champion, then some to replay)"
        )
    for column in (base.target, base.timestamp):
        if column not in stream.column_names:
            raise DataError(
                f"column {column!r} is not in the data (columns: {', '.join(stream.column_names)})"
            )
    return count


def _with_request_ids(stream: pa.Table, base: Config) -> tuple[pa.Table, Config]:
    """The stream with an id column, and the config naming it: the log joins labels by
    request id."""
    id_column = base.id_column or "request_id"
    if id_column not in stream.column_names:
        ids = pa.array([f"row-{i:08d}" for i in range(stream.num_rows)])
        stream = stream.append_column(id_column, ids)
    return stream, base.replace(id_column=id_column)


def _batch_span(stream: pa.Table, config: Config, batch: int, count: int) -> float:
    """Seconds of data time per batch: the median time from one batch's start to the next."""
    times = stream.column(config.timestamp).cast(pa.int64()).to_numpy() / 1e6
    return float(np.median(np.diff(times[: count * batch : batch]))) if count > 1 else 3600.0


class ReplayHealth:
    """The replay as the predictors' /metrics would show it: requests and failed requests of
    each version, cumulative (a rollout.health.HealthSource for the canary's guardrails).
    A replay predicts a batch at once, so it has no request latency: p95 is not measured
    (infra validation timed single requests before registration), and the timeline stays
    the same on any machine."""

    def __init__(self) -> None:
        from ctpipe.rollout.health import Counters

        self.counters: dict[str, Counters] = {}

    def count(self, version: str, rows: int, errors: int = 0) -> None:
        from ctpipe.rollout.health import Counters

        self.counters[version] = self.counters.get(version, Counters()) + Counters(
            float(rows), float(errors)
        )

    def baseline(self, model: str) -> dict[str, Any]:
        return {version: c.to_dict() for version, c in self.counters.items()}

    def measure(self, model: str, since: datetime, now: datetime, baseline: Any) -> dict[str, Any]:
        from ctpipe.rollout.health import Counters

        return {
            version: (c - Counters.from_dict(baseline.get(version, {}))).health()
            for version, c in self.counters.items()
        }


@dataclass
class _Replay:
    """A replay in progress: the stream cut into batches, the champions' predictions so
    far, the timeline and the clocks."""

    stream: pa.Table
    config: Config
    submitter: Submitter
    sim: Simulation
    batch: int
    label_delay: int
    first: int  # the batches before this one train the first champion
    count: int
    train_window: int  # rows a retrain sees, the newest labelled ones
    say: Callable[[str], None]
    models: dict[str, Any] = field(default_factory=dict)
    # batch -> (champion version, answers, scores, which rows the canary answered)
    predicted: dict[int, tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )
    clock: dict[str, float] = field(
        default_factory=lambda: {"pipeline": 0.0, "monitor": 0.0, "predict": 0.0}
    )
    started: float = field(default_factory=time.perf_counter)
    health: ReplayHealth = field(default_factory=ReplayHealth)

    def rows(self, first: int, last: int) -> pa.Table:
        return self.stream.slice(first * self.batch, (last - first) * self.batch)

    def write_training(self, last_labelled_batch: int) -> None:
        labelled = self.rows(0, last_labelled_batch + 1)
        tables.write(
            labelled.slice(max(0, labelled.num_rows - self.train_window)),
            self.config.data.uri or "",
        )

    def train_first_champion(self) -> RunRef:
        self.say(
            f"training the first champion on batches 0-{self.first - 1} ({self.first * self.batch:,} rows)"
        )
        self.write_training(self.first - 1)
        tick = time.perf_counter()
        run = self.submitter.submit(self.config, "initial", f"{self.config.model_name}-initial")
        self.clock["pipeline"] += time.perf_counter() - tick
        return run

    def start_timeline(self) -> None:
        config = self.config
        # The default rule, whatever monitor.triggers.performance_metric says: a replay
        # keeps the predicted class and one probability, enough for rmse, ROC AUC or accuracy.
        classes = (
            0
            if config.task == "regression"
            else len(pc.unique(self.stream.column(config.target).drop_null()))
        )
        self.sim.metric_name = evaluation.performance_metric(config.task, classes)
        metric_column = self.sim.metric_name[:7]
        self.say(
            f"{'batch':>5}  {'starts':<16} {'rows':>6}  {'drift':>6}  {metric_column:>7}  {'champion':>8}  action"
        )
        self.say(f"{'':<41}({metric_column}: of the batch whose labels just arrived)")

    def step(self, index: int) -> None:
        """One batch: the champion (and a challenger in rollout) predicts it, the labels
        `label_delay` batches back arrive, the monitor runs with the batch's end as now."""
        from ctpipe.monitor.runner import run_monitor

        config = self.config
        part = self.rows(index, index + 1)
        champion = registry.champion(config)
        assert champion is not None
        names, scores, served_as, challenger, canary = self.serve(index, part, champion)
        self.predicted[index] = (champion.version, names, scores, canary)
        revealed = index - self.label_delay
        if revealed >= self.first:
            _reveal_labels(config, self.rows(revealed, revealed + 1))
        if revealed >= 0:
            self.write_training(revealed)
        now = part.column(config.timestamp)[-1].as_py() + timedelta(microseconds=1)
        tick = time.perf_counter()
        outcome = run_monitor(config, self.submitter, now=now, report=False, health=self.health)
        record = self.record(index, part, champion.version, outcome, time.perf_counter() - tick)
        if served_as is not None:
            record.served_as, record.challenger = served_as, challenger
        self.sim.batches.append(record)
        if revealed >= self.first:
            self.score(revealed)
        self.say(_timeline_line(record, self.sim.batches, self.first, self.label_delay, outcome))

    def serve(
        self, index: int, part: pa.Table, champion: registry.ModelRef
    ) -> tuple[np.ndarray, np.ndarray, str | None, str | None, np.ndarray]:
        """Answer the batch as production would, and log it: the champion alone; beside a
        challenger in shadow; or with the canary answering its share of the rows. Returns
        the answers callers got, how the batch was served, the challenger's version and
        which rows the canary answered."""
        from ctpipe import predlog
        from ctpipe.rollout.state import CANARY, SHADOW, RolloutStore

        config = self.config
        names, scores = self.predict(champion, part)
        rollout = RolloutStore(config.state_dir, config.model_name).load()
        live = rollout is not None and rollout.phase in (SHADOW, CANARY)
        if not live or rollout is None:
            _log_predictions(config, part, champion.version, names, scores)
            self.health.count(champion.version, part.num_rows)
            return names, scores, None, None, np.zeros(part.num_rows, bool)
        version = rollout.challenger
        challenger = registry.version_ref(registry.client(config), config.model_name, version)
        try:
            theirs = self.predict(challenger, part)
        except Exception:  # a challenger that cannot answer: its requests fail
            theirs = None
        canary = np.zeros(part.num_rows, bool)
        if rollout.phase == CANARY:
            picked = np.random.default_rng([index, 7]).random(part.num_rows)
            canary = picked < rollout.traffic_percent / 100
        ours = ~canary
        kept = pa.array(ours)
        _log_predictions(config, part.filter(kept), champion.version, names[ours], scores[ours])
        self.health.count(champion.version, int(ours.sum()))
        if theirs is None:
            self.health.count(version, int(canary.sum()), errors=int(canary.sum()))
            # failed canary rows: the champion answers a retry
            return names, scores, rollout.phase, version, np.zeros(part.num_rows, bool)
        their_names, their_scores = theirs
        # The champion's revision keeps the challenger in shadow through the canary.
        _log_predictions(
            config,
            part.filter(kept),
            version,
            their_names[ours],
            their_scores[ours],
            predlog.ROLE_SHADOW,
        )
        if canary.any():
            _log_predictions(
                config,
                part.filter(pa.array(canary)),
                version,
                their_names[canary],
                their_scores[canary],
                predlog.ROLE_CANARY,
            )
            self.health.count(version, int(canary.sum()))
        served_names = np.where(canary, their_names, names)
        served_scores = np.where(canary, their_scores, scores)
        return served_names, served_scores, rollout.phase, version, canary

    def predict(self, model: registry.ModelRef, part: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        if model.version not in self.models:
            self.models[model.version] = registry.load_model(model)
        tick = time.perf_counter()
        names, scores = _predict(self.models[model.version], part, self.config)
        self.clock["predict"] += time.perf_counter() - tick
        return names, scores

    def record(
        self, index: int, part: pa.Table, champion: str, outcome: Any, elapsed: float
    ) -> BatchRecord:
        """The batch's timeline entry; the monitor's time counts as pipeline time when it
        submitted a run (which ran inside it)."""
        after = registry.champion(self.config)
        record = BatchRecord(
            batch=index,
            start=part.column(self.config.timestamp)[0].as_py().strftime("%Y-%m-%d %H:%M"),
            rows=part.num_rows,
            drift_share=outcome.drift.drift_share if outcome.drift is not None else None,
            fired=list(outcome.decision.fired),
            action=outcome.decision.action,
            champion=champion,
            champion_after=after.version if after else champion,
        )
        sim = self.sim
        sim.promotions += int(record.champion_after != champion)
        for rolled in outcome.rollout_steps:
            # A verdict, a step to canary or a wait is what the batch shows; a rollout that
            # began in the same visit shows in the next batch's serving.
            if rolled.rollout is not None and rolled.action in (*ROLLOUT_MOVES[1:], "wait"):
                record.rollout = rolled.action
                record.rollout_reason = rolled.reasons[-1] if rolled.reasons else None
                record.challenger = rolled.rollout.challenger
                sim.rollbacks += int(rolled.action == "rolled_back")
        if outcome.run is not None:
            self.clock["pipeline"] += elapsed
            sim.retrains += 1
            record.run, record.blessed = outcome.run.run_name, outcome.run.blessed
            if outcome.run.blessed:
                record.registered = outcome.run.champion_version
            if outcome.run.failed:
                record.failed, record.error = True, short_error(outcome.run.error, 500)
                sim.failed_runs += 1
        else:
            if outcome.decision.action == "blocked":
                record.error = short_error("; ".join(outcome.decision.blocked_by))
            self.clock["monitor"] += elapsed
        return record

    def score(self, index: int) -> None:
        """The metric of batch `index`'s predictions, once its labels are known."""
        self.sim.batches[index - self.first].metric = _batch_metric(
            self.sim.metric_name,
            self.config,
            self.rows(index, index + 1),
            *self.predicted[index][1:],
        )

    def finish(self) -> Simulation:
        """The prequential metrics and the clocks; summary.json and the timeline plot."""
        sim = self.sim
        sim.prequential = _prequential(
            self.config,
            self.stream.slice(self.first * self.batch, (self.count - self.first) * self.batch),
            self.predicted,
            self.first,
            self.count,
        )
        self.clock["total"] = time.perf_counter() - self.started
        sim.seconds = self.clock
        (sim.out_dir / "summary.json").write_text(json.dumps(sim.summary(), indent=2, default=str))
        plot(sim, sim.out_dir / "timeline.png")
        return sim


def _final_report(
    config: Config,
    report_rows: int,
    last: pa.Table,
    path: Path,
    trained_on: pa.Table | None = None,
) -> None:
    """The evidently page for the last batch against the final champion's training data,
    headed by the model, both windows and ctpipe's own drift check of the batch.
    `trained_on`: the rows the champion's run was offered, for the reference's dates."""
    from ctpipe.drift import ReferenceProfile, compare, report

    if report_rows == 0:
        return
    champion = registry.champion(config)
    if champion is None:
        return
    files = registry.download_reference(champion)
    profile = ReferenceProfile.from_bytes(files.profile.read_bytes())
    try:
        verdict = compare(profile, last, config.monitor.drift)
    except DataError:  # the page still shows what evidently sees
        verdict = None
    start, end = (
        report.time_range(trained_on, config.timestamp) if trained_on is not None else (None, None)
    )
    context = report.PageContext(
        config.model_name,
        champion.version,
        report.Window(
            f"champion v{champion.version}'s training data ({profile.rows:,} rows, out of "
            "the rows offered to its run, dated below), a sample kept when it was trained",
            report.sample_rows(files.sample),
            start,
            end,
        ),
        report.Window.of("the replay's last batch", last, config.timestamp),
        verdict=verdict,
    )
    path.write_text(
        report.page(
            files.sample,
            last,
            profile.kinds,
            config.monitor.drift,
            report_rows,
            column_thresholds=(
                {c.name: c.threshold for c in verdict.columns} if verdict is not None else None
            ),
            context=context,
        )
    )


def _champion_rows(replay: _Replay) -> pa.Table | None:
    """The rows the final champion's run was offered: the first run's batches, or the
    labelled rows as of the batch whose run promoted it (its train.window may have used
    fewer)."""
    final = registry.champion(replay.config)
    promoted = [b for b in replay.sim.batches if final and b.registered == final.version]
    if not promoted:
        return replay.rows(0, replay.first)
    labelled = replay.rows(0, max(promoted[-1].batch - replay.label_delay, 0) + 1)
    return labelled.slice(max(0, labelled.num_rows - replay.train_window))


def _predict(model: Any, part: pa.Table, config: Config) -> tuple[np.ndarray, np.ndarray]:
    frame = part.to_pandas()
    if config.task == "regression":
        values = np.asarray(model.predict(frame), dtype=float)
        return values.astype(str), values
    proba = np.asarray(model.predict_proba(frame), dtype=float)
    classes = np.asarray(model.classes_)
    names = classes[proba.argmax(axis=1)]
    scores = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return names, scores


def _log_predictions(
    config: Config,
    part: pa.Table,
    version: str,
    names: np.ndarray,
    scores: np.ndarray,
    role: str = "champion",
) -> None:
    from ctpipe import predlog

    if part.num_rows == 0:
        return
    reserved = {config.target, config.timestamp, config.id_column}
    feature_names = [c for c in part.column_names if c not in reserved]
    features = part.select(feature_names).to_pylist()
    ids = part.column(config.id_column or "request_id").to_pylist()
    stamps = part.column(config.timestamp).to_pylist()
    records = [
        predlog.Prediction(
            str(i),
            t,
            version,
            predlog.prediction_text(n.item() if hasattr(n, "item") else n),
            float(s),
            f,
            role,
        )
        for i, t, n, s, f in zip(ids, stamps, names, scores, features, strict=True)
    ]
    with predlog.PredictionLogWriter(
        config.monitor.predictions or "", config.model_name, max_rows=len(records) + 1
    ) as writer:
        writer.append(records)


def _reveal_labels(config: Config, part: pa.Table) -> None:
    from ctpipe import predlog

    ids = part.column(config.id_column or "request_id").to_pylist()
    labels = part.column(config.target).to_pylist()
    predlog.write_labels(
        config.monitor.labels or "",
        config.model_name,
        [
            predlog.Label(str(i), predlog.prediction_text(v))
            for i, v in zip(ids, labels, strict=True)
            if v is not None
        ],
    )


def _batch_metric(
    metric: str,
    config: Config,
    part: pa.Table,
    names: np.ndarray,
    scores: np.ndarray,
    canary: np.ndarray,
) -> float | None:
    """The batch's metric. A batch the canary shared is scored per version, weighted by
    rows, when the metric ranks scores: one ROC AUC over both versions' scores would
    measure a ranking across models that no caller got, and mark any canary down."""
    truth = part.column(config.target).to_numpy(zero_copy_only=False)
    if metric not in evaluation.RANKING_METRICS:
        return _replay_score(metric, config.task, truth, names, scores)
    by_version = [
        (
            int(rows.sum()),
            _replay_score(metric, config.task, truth[rows], names[rows], scores[rows]),
        )
        for rows in (~canary, canary)
        if rows.any()
    ]
    scored = [(n, value) for n, value in by_version if value is not None]
    if not scored:
        return None
    return float(sum(n * value for n, value in scored) / sum(n for n, _ in scored))


def _prequential(
    config: Config,
    replayed: pa.Table,
    predicted: dict[int, tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    first: int,
    count: int,
) -> dict[str, float]:
    names = np.concatenate([predicted[i][1] for i in range(first, count)])
    scores = np.concatenate([predicted[i][2] for i in range(first, count)])
    truth = replayed.column(config.target).to_numpy(zero_copy_only=False)
    metrics = ("rmse",) if config.task == "regression" else ("accuracy", "roc_auc")
    scored = {m: _replay_score(m, config.task, truth, names, scores) for m in metrics}
    return {m: value for m, value in scored.items() if value is not None}


def _replay_score(
    metric: str, task: str, truth: np.ndarray, names: np.ndarray, scores: np.ndarray
) -> float | None:
    """`metric` of replayed predictions: `names` the predicted classes, `scores` the
    predicted values (regression) or the probability of the second of the classes seen.
    None for ROC AUC unless labels and predictions hold exactly two classes."""
    if task == "regression":
        return evaluation.score_labelled(metric, task, truth, scores).value
    classes = _class_order(set(truth.tolist()) | set(names.tolist()))
    if metric == "roc_auc" and len(classes) != 2:
        return None
    return evaluation.score_labelled(
        metric, task, truth, names, positive=scores, classes=classes
    ).value


def _class_order(classes: set[Any]) -> tuple[Any, ...]:
    """The classes in the order of a fitted model's `classes_` (np.unique: numbers by value,
    text by characters), so that the second is the class `_predict`'s scores are the
    probability of. Ordering by text would put 10 before 2 and turn ROC AUC upside down."""
    try:
        return tuple(sorted(classes))
    except TypeError:  # mixed types, which no fitted model has: any stable order will do
        return tuple(sorted(classes, key=str))


def _timeline_line(
    record: BatchRecord, done: list[BatchRecord], first: int, delay: int, outcome: Any
) -> str:
    drift = f"{record.drift_share:.0%}" if record.drift_share is not None else "-"
    shown = done[record.batch - first - delay].metric if record.batch - first - delay >= 0 else None
    metric = f"{shown:.3f}" if shown is not None else "-"
    line = f"{record.batch:>5}  {record.start:<16} {record.rows:>6}  {drift:>6}  {metric:>7}  {'v' + record.champion:>8}  "
    if record.served_as is not None:
        line += f"[v{record.challenger} in {record.served_as}] "
    return line + _monitor_words(record, outcome) + _rollout_words(record)


def _monitor_words(record: BatchRecord, outcome: Any) -> str:
    if record.action == "submit":
        if record.failed:
            verdict = f"run failed: {short_error(record.error, 140)}, champion stays"
        elif record.blessed and record.champion_after == record.registered:
            verdict = f"challenger blessed -> champion switched to v{record.champion_after}"
        elif record.blessed:
            verdict = f"challenger v{record.registered} blessed -> rolled out (shadow first)"
        else:
            verdict = "challenger refused by the gate, champion stays"
        return f"{' + '.join(record.fired)} detected -> run submitted -> {verdict}"
    if record.action == "blocked":
        fired = f"{' + '.join(record.fired)} fired, " if record.fired else ""
        return f"{fired}{short_error(record.error, 140)} -> nothing submitted"
    if record.action == "skip":
        held = next(
            (r for r in reversed(outcome.decision.reasons) if not r.startswith("fired:")), ""
        )
        return f"{' + '.join(record.fired)} fired, held back ({held})"
    return "-"


def _rollout_words(record: BatchRecord) -> str:
    if record.rollout in (None, "began"):
        return ""
    verdict = {
        "wait": "waiting",
        "canary": "to canary",
        "promoted": f"PROMOTED (champion now v{record.champion_after})",
        "rolled_back": "ROLLED BACK",
    }[record.rollout]
    return f"; rollout v{record.challenger}: {verdict} ({short_error(record.rollout_reason, 160)})"


def plot(sim: Simulation, path: Path) -> None:
    """The timeline (`figure`) as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(sim)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# What the timeline marks, each with its legend entry: a run's outcome (a vertical line on
# both panels) and the monitor holding back or being blocked (a marker on the drift panel).
RUN_MARKS = {
    "blessed": ("green", "--", "run submitted: challenger blessed"),
    "refused": ("red", "--", "run submitted: challenger refused by the gate"),
    "failed": ("black", ":", "run submitted and failed: champion stays"),
}
# A rollout: the batches served with the challenger in shadow or as the canary (shaded),
# and its verdict (a solid line).
ROLLOUT_SPANS = {
    "shadow": ("#9467bd", "challenger in shadow"),
    "canary": ("#ff7f0e", "challenger as canary"),
}
ROLLOUT_MARKS = {
    "promoted": ("green", "rollout: promoted to champion"),
    "rolled_back": ("red", "rollout: rolled back"),
}
HELD_MARKS = {
    "skip": ("v", "grey", "trigger fired, held back (cooldown, too few rows, a rollout)"),
    "blocked": ("x", "black", "monitor blocked: nothing submitted"),
}


def figure(sim: Simulation) -> Any:
    """Metric per batch, drift share, and what the monitor did, over the batches' start
    dates: a matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dates = [_start(b.start) for b in sim.batches]
    metric = [b.metric if b.metric is not None else np.nan for b in sim.batches]
    drift = [b.drift_share if b.drift_share is not None else np.nan for b in sim.batches]
    spacing = np.median(np.diff(mdates.date2num(dates))) if len(dates) > 1 else 1 / 24
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[2, 1])
    top.plot(dates, metric, marker="o", color="#1f77b4", label=f"prequential {sim.metric_name}")
    top.set_ylabel(sim.metric_name)
    top.set_title(
        f"{sim.title or f'ctpipe simulate ({sim.policy})'}\npolicy {sim.policy}: "
        f"{_count(sim.retrains, 'retrain')}, {_count(sim.promotions, 'promotion')}"
        + (f", {_count(sim.rollbacks, 'rollback')}" if sim.rollbacks else "")
        + (f", {_count(sim.failed_runs, 'failed run')}" if sim.failed_runs else ""),
        fontsize=11,
    )
    bottom.bar(dates, drift, width=0.8 * spacing, color="#ff7f0e", label="drift share")
    bottom.set_ylabel("drift share")
    bottom.set_xlabel("batch start")
    bottom.set_ylim(0, 1.05)
    bottom.axhline(
        sim.drift_threshold, color="grey", linestyle=":", label="dataset drift threshold"
    )
    locator = mdates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    seen: set[str] = set()
    finite = [m for m in metric if np.isfinite(m)]
    top_value = max(finite) if finite else 1.0
    for at, b in zip(dates, sim.batches, strict=True):
        if b.served_as in ROLLOUT_SPANS:
            colour, label = ROLLOUT_SPANS[b.served_as]
            middle = mdates.date2num(at)
            top.axvspan(
                middle - spacing / 2,
                middle + spacing / 2,
                color=colour,
                alpha=0.15,
                linewidth=0,
                label=label if b.served_as not in seen else None,
            )
            seen.add(b.served_as)
        if b.rollout in ROLLOUT_MARKS:
            colour, label = ROLLOUT_MARKS[b.rollout]
            for axis in (top, bottom):
                axis.axvline(
                    at,
                    color=colour,
                    linestyle="-",
                    linewidth=2,
                    alpha=0.8,
                    label=label if axis is top and b.rollout not in seen else None,
                )
            seen.add(b.rollout)
        if b.action in HELD_MARKS:
            shape, colour, label = HELD_MARKS[b.action]
            bottom.plot(
                [at],
                [1.0],
                marker=shape,
                color=colour,
                linestyle="none",
                label=label if b.action not in seen else None,
            )
            seen.add(b.action)
        if b.action != "submit":
            continue
        kind = "failed" if b.failed else "blessed" if b.blessed else "refused"
        colour, style, label = RUN_MARKS[kind]
        for axis in (top, bottom):
            axis.axvline(
                at,
                color=colour,
                linestyle=style,
                alpha=0.7,
                label=label if axis is top and kind not in seen else None,
            )
        seen.add(kind)
        top.annotate(
            {
                "blessed": f"v{b.registered or b.champion_after}",
                "refused": "refused",
                "failed": "failed",
            }[kind],
            (at, top_value),
            fontsize=8,
            rotation=90,
            va="top",
        )
    top.legend(loc="lower left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _start(text: str) -> datetime:
    """A BatchRecord's start ("%Y-%m-%d %H:%M", or ISO)."""
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M")
    except ValueError:
        return datetime.fromisoformat(text)
