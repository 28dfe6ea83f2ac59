"""What the prediction log and the labels say about a challenger on live traffic.

Shadow: the champion answered and the challenger scored the same requests, so the
comparison is paired, exactly as the gate's (evaluation.paired_bootstrap). Canary: each
request went to one model, so the two samples are compared as independent
(evaluation.two_sample_bootstrap); the champion's side is its traffic over the same span.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import evaluation, predlog, registry
from ctpipe.config import METRICS, Config
from ctpipe.rollout.state import CANARY, Rollout

_COLUMNS = (
    predlog.REQUEST_ID,
    predlog.TIMESTAMP,
    predlog.MODEL_VERSION,
    predlog.PREDICTION,
    predlog.SCORE,
)


@dataclass(frozen=True)
class LiveComparison:
    """Challenger minus champion on live labelled traffic (positive: better)."""

    kind: str  # "paired" (shadow) or "two-sample" (canary)
    metric: str
    rows: int  # labelled rows on the smaller side
    challenger: float | None = None
    champion: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float = 0.95

    @property
    def judged(self) -> bool:
        return self.low is not None and self.high is not None

    def describe(self) -> str:
        if not self.judged:
            return f"{self.kind} {self.metric}: {self.rows} labelled rows so far"
        pct = round(self.confidence * 100)
        return (
            f"{self.kind} {self.metric} on {self.rows} labelled rows: challenger {self.challenger:.4f} "
            f"vs champion {self.champion:.4f}, {pct}% CI of the difference [{self.low:+.4f}, {self.high:+.4f}]"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    config: Config,
    rollout: Rollout,
    predictions_root: str,
    labels_root: str,
    champion: registry.ModelRef,
    *,
    until: datetime | None = None,
) -> LiveComparison:
    """The live comparison for the rollout's phase, from the log since the phase began
    (shadow: since the rollout began; canary: since the canary began)."""
    settings = config.deploy.rollout
    classes = tuple(json.loads(champion.tags.get(registry.TAG_CLASSES, "[]")))
    metric = evaluation.performance_metric(
        config.task, len(classes), config.monitor.triggers.performance_metric
    )
    confidence = settings.confidence or config.gate.confidence
    canary = rollout.phase == CANARY
    since = rollout.since if canary else rollout.started
    role = predlog.ROLE_CANARY if canary else predlog.ROLE_SHADOW
    labels = predlog.read_labels(labels_root, config.model_name)

    def labelled(role: str, version: str) -> pa.Table:
        # One read per role: the log keeps one row per request id and role.
        log = predlog.read_predictions(
            predictions_root,
            config.model_name,
            since=since,
            until=until,
            columns=_COLUMNS,
            roles=(role,),
        )
        log = log.filter(pc.equal(log[predlog.MODEL_VERSION], version))
        return predlog.join_labels(log, labels).table  # labels of other rows: no error

    mine = labelled(predlog.ROLE_CHAMPION, rollout.champion)
    theirs = labelled(role, rollout.challenger)
    kind = "two-sample" if canary else "paired"
    if not canary:
        common = pc.is_in(mine[predlog.REQUEST_ID], value_set=theirs[predlog.REQUEST_ID])
        mine = mine.filter(common)
        theirs = _aligned(theirs, mine[predlog.REQUEST_ID])
    rows = min(mine.num_rows, theirs.num_rows)
    if rows < settings.min_labelled:
        return LiveComparison(kind, metric, rows, confidence=confidence)
    higher = METRICS[config.task].get(metric, True)
    ours = evaluation.score_log(metric, config.task, mine, classes)
    challenger = evaluation.score_log(metric, config.task, theirs, classes)
    seed, samples = config.gate.seed, settings.bootstrap_samples
    if canary:
        result = evaluation.two_sample_bootstrap(
            ours.metric,
            (challenger.target, challenger.scores),
            (ours.target, ours.scores),
            higher_is_better=higher,
            samples=samples,
            confidence=confidence,
            seed=seed,
            champion_version=rollout.champion,
        )
    else:
        result = evaluation.paired_bootstrap(
            ours.metric,
            ours.target,
            challenger.scores,
            ours.scores,
            higher_is_better=higher,
            samples=samples,
            confidence=confidence,
            seed=seed,
            champion_version=rollout.champion,
        )
    if not (np.isfinite(result.low) and np.isfinite(result.high)):
        return LiveComparison(kind, ours.metric, rows, confidence=confidence)
    return LiveComparison(
        kind,
        ours.metric,
        rows,
        result.challenger,
        result.champion,
        result.low,
        result.high,
        confidence,
    )


def _aligned(table: pa.Table, ids: pa.ChunkedArray) -> pa.Table:
    """`table`'s rows in the order of `ids` (every id is in it once)."""
    order = pc.index_in(ids, value_set=table[predlog.REQUEST_ID])
    return table.take(order)
