"""Fit one candidate on rows of a table, and score a model on others: the one way every
step (train, refit, final refit, the window backtest) fits and scores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ctpipe.config import Config

if TYPE_CHECKING:
    from ctpipe.data.schema import Schema
    from ctpipe.training.search import Candidate


def features_and_labels(
    table: pa.Table, schema: Schema, extra: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """Features (a pandas DataFrame, as the model sees them) and labels of some rows."""
    from ctpipe.data.schema import label_values

    available = set(table.column_names)
    wanted = [c for c in dict.fromkeys([*schema.feature_names, *extra]) if c in available]
    labels = table.column(schema.target)
    if schema.task == "classification":
        labels = label_values(labels)
    return table.select(wanted).to_pandas(), labels.to_numpy(zero_copy_only=False)


def sample_weights(table: pa.Table, config: Config) -> np.ndarray | None:
    """train.half_life decay weights for time-ordered rows, or None (equal weights)."""
    if config.train.half_life is None:
        return None
    from ctpipe import options
    from ctpipe.training import windows

    times = np.asarray(table.column(config.timestamp).cast(pa.int64()).to_numpy())
    return windows.decay_weights(times, options.parse_span(config.train.half_life))


@dataclass(frozen=True)
class Fitted:
    model: Any
    rows: int
    start: str | None  # first and last timestamp of the rows it learned from
    end: str | None
    seconds: float
    weighted: bool


def fit(
    candidate: Candidate, table: pa.Table, schema: Schema, config: Config, threads: int
) -> Fitted:
    """A fresh pipeline (features + estimator) for `candidate`, fitted on `table`."""
    import pyarrow.compute as pc
    from threadpoolctl import threadpool_limits

    from ctpipe import features
    from ctpipe.training.families import build_estimator

    ordered = table.sort_by([(config.timestamp, "ascending")])
    x, y = features_and_labels(ordered, schema)
    weights = sample_weights(ordered, config)
    started = time.perf_counter()
    estimator = build_estimator(
        candidate.family, config.task, candidate.params, config.search.seed, threads
    )
    model = features.build_model(schema, estimator)
    extra = {} if weights is None else {"model__sample_weight": weights}
    # OpenMP (gradient boosting) and BLAS pools spin-wait: oversubscribed, they crawl.
    with threadpool_limits(limits=threads):
        model.fit(x, y, **extra)
    times = ordered.column(config.timestamp)
    return Fitted(
        model,
        ordered.num_rows,
        pc.min(times).as_py().isoformat() if ordered.num_rows else None,
        pc.max(times).as_py().isoformat() if ordered.num_rows else None,
        time.perf_counter() - started,
        weights is not None,
    )


def score(model: Any, table: pa.Table, schema: Schema, config: Config, metric: str) -> float:
    """`metric` of `model` on the rows of `table`."""
    from ctpipe import evaluation

    x, y = features_and_labels(table, schema)
    outputs = evaluation.model_outputs(model, x, config.task)
    target = evaluation.Target.of(y, config.task, outputs.classes or ())
    return evaluation.metric_value(metric, target, evaluation.scores_for(outputs, target))
