"""Metrics, the paired bootstrap against the champion, and the blessing decision.

Every metric is written once, for a matrix of row weights: one row of ones gives the
point estimate, a thousand rows of bootstrap counts give the resampled values. The
challenger and the champion are scored on the same resamples of the same test rows,
which is what makes the comparison paired.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ctpipe.config import METRICS, Config, Gate

BOOTSTRAP_CHUNK = (
    100  # replicates per block: bounds memory at ~chunk x rows x 8 bytes a few times over
)
_EPS = 1e-15


# ------------------------------------------------------------------ model outputs


@dataclass(frozen=True)
class Outputs:
    """What a model says about the test rows."""

    prediction: np.ndarray
    proba: np.ndarray | None = None  # rows x classes, in the order of `classes`
    classes: tuple[Any, ...] | None = None


def model_outputs(model: Any, frame: Any, task: str) -> Outputs:
    if task == "classification":
        proba = np.asarray(model.predict_proba(frame), dtype=float)
        classes = tuple(model.classes_.tolist())
        prediction = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        return Outputs(prediction, proba, classes)
    return Outputs(np.asarray(model.predict(frame), dtype=float))


def align(outputs: Outputs, classes: tuple[Any, ...]) -> np.ndarray:
    """Probabilities re-ordered to `classes`; a class the model never saw gets 0."""
    assert outputs.proba is not None and outputs.classes is not None
    index = {class_key(c): i for i, c in enumerate(outputs.classes)}
    columns = [
        outputs.proba[:, index[class_key(c)]]
        if class_key(c) in index
        else np.zeros(len(outputs.proba))
        for c in classes
    ]
    return np.column_stack(columns)


def class_key(label: Any) -> str:
    # 1, 1.0 and "1" are the same class whichever file format they came through.
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return str(label)


# ----------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Target:
    """The test labels, encoded once for all metrics."""

    task: str
    values: np.ndarray  # class index per row (classification) or the value (regression)
    classes: tuple[Any, ...] = ()

    @classmethod
    def of(cls, y: Any, task: str, classes: tuple[Any, ...] = ()) -> Target:
        if task == "regression":
            return cls(task, np.asarray(y, dtype=float))
        index = {class_key(c): i for i, c in enumerate(classes)}
        encoded = np.array([index.get(class_key(v), -1) for v in y], dtype=np.int64)
        return cls(task, encoded, classes)


Scores = np.ndarray  # classification: rows x classes probabilities; regression: predictions
MetricFn = Callable[[Target, Scores, np.ndarray], np.ndarray]


def _accuracy(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    correct = (p.argmax(axis=1) == t.values).astype(float)
    return (w @ correct) / w.sum(axis=1)


def _f1(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    predicted = p.argmax(axis=1)
    # Binary: F1 of the positive (second) class; multiclass: macro average.
    classes = [1] if p.shape[1] == 2 else range(p.shape[1])
    scores = []
    for k in classes:
        tp = w @ ((predicted == k) & (t.values == k)).astype(float)
        fp = w @ ((predicted == k) & (t.values != k)).astype(float)
        fn = w @ ((predicted != k) & (t.values == k)).astype(float)
        denominator = 2 * tp + fp + fn
        scores.append(np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0))
    return np.mean(scores, axis=0)


def _log_loss(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    known = t.values >= 0
    picked = np.full(len(t.values), _EPS)
    picked[known] = p[np.flatnonzero(known), t.values[known]]
    losses = -np.log(np.clip(picked, _EPS, 1.0))
    return (w @ losses) / w.sum(axis=1)


def _auc_binary(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (ties count half), for every row of weights at once."""
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    is_pos = positive[order].astype(float)
    weights = w[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    pos = np.add.reduceat(weights * is_pos, starts, axis=1)
    neg = np.add.reduceat(weights * (1.0 - is_pos), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    return np.divide(numerator, denominator, out=np.full(len(w), np.nan), where=denominator > 0)


def _roc_auc(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    if p.shape[1] == 2:
        return _auc_binary(t.values == 1, p[:, 1], w)
    # Multiclass: one-vs-rest, macro average over the classes present.
    per_class = [
        _auc_binary(t.values == k, p[:, k], w) for k in range(p.shape[1]) if (t.values == k).any()
    ]
    return np.nanmean(per_class, axis=0)


def _rmse(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    return np.sqrt((w @ (t.values - p) ** 2) / w.sum(axis=1))


def _mae(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    return (w @ np.abs(t.values - p)) / w.sum(axis=1)


def _r2(t: Target, p: Scores, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1)
    mean = (w @ t.values) / total
    residual = w @ (t.values - p) ** 2
    spread = (w * (t.values[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return 1.0 - np.divide(residual, spread, out=np.full(len(w), np.nan), where=spread > 0)


METRIC_FUNCTIONS: dict[str, MetricFn] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "roc_auc": _roc_auc,
    "log_loss": _log_loss,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}


def scores_for(outputs: Outputs, target: Target) -> Scores:
    if target.task == "classification":
        return align(outputs, target.classes)
    return outputs.prediction


def metric_value(name: str, target: Target, scores: Scores) -> float:
    return float(METRIC_FUNCTIONS[name](target, scores, np.ones((1, len(target.values))))[0])


def all_metrics(target: Target, scores: Scores) -> dict[str, float]:
    return {name: metric_value(name, target, scores) for name in METRICS[target.task]}


# ------------------------------------------------------------ labelled predictions


# Metrics that rank scores: two models' scores are not on one scale, so rows that
# different versions scored are scored per version (or per batch), never pooled.
RANKING_METRICS = frozenset({"roc_auc"})


def performance_metric(task: str, classes: int, chosen: str | None = None) -> str:
    """The metric that judges a model on its labelled predictions: `chosen` when set,
    else rmse (regression), ROC AUC (two classes) or accuracy."""
    if chosen:
        return chosen
    if task == "regression":
        return "rmse"
    return "roc_auc" if classes == 2 else "accuracy"


@dataclass(frozen=True)
class LabelledScore:
    """A metric of labelled predictions, with the target and scores it was computed on
    (for a bootstrap interval, or a check of which classes the labels hold)."""

    metric: str  # the one computed: hard predictions score accuracy
    value: float  # nan where the metric is undefined (ROC AUC of one class)
    target: Target
    scores: Scores


def score_labelled(
    metric: str,
    task: str,
    truth: Any,
    predicted: Any = None,
    *,
    positive: Any = None,
    classes: tuple[Any, ...] = (),
) -> LabelledScore:
    """Score predictions as they are kept after serving: the label, the predicted value
    or class, and for ROC AUC the positive class's probability.

    Regression scores `predicted` as numbers. ROC AUC scores `positive` (only that is
    needed) against `classes`, whose second is the positive class. Every other
    classification metric is accuracy of the predicted classes: nothing more than the
    predicted class is kept for more than two classes. Without `classes`, the labels
    seen are the classes.
    """
    if task == "regression":
        target = Target.of(np.asarray(truth, dtype=float), "regression")
        scores = np.asarray(predicted, dtype=float)
    elif metric == "roc_auc":
        target = Target.of(truth, "classification", classes)
        probability = np.asarray(positive, dtype=float)
        scores = np.column_stack([1.0 - probability, probability])
    else:
        metric = "accuracy"
        names = classes or tuple(sorted(set(truth)))
        target = Target.of(truth, "classification", names)
        hard = Target.of(predicted, "classification", names).values
        scores = np.eye(len(names))[np.clip(hard, 0, None)]
    return LabelledScore(metric, metric_value(metric, target, scores), target, scores)


def score_log(metric: str, task: str, table: Any, classes: tuple[Any, ...]) -> LabelledScore:
    """`score_labelled` on rows of the prediction log joined with their labels (a pyarrow
    table): the monitor's labelled window and the rollout's live comparison. Each column is
    read only when the metric needs it: a window can be millions of rows."""
    from ctpipe import predlog

    by_score = task != "regression" and metric == "roc_auc"
    return score_labelled(
        metric,
        task,
        table[predlog.LABEL].to_pylist(),
        None if by_score else predlog.logged_predictions(table, task),
        positive=table[predlog.SCORE].to_numpy(zero_copy_only=False) if by_score else None,
        classes=tuple(predlog.prediction_text(c) for c in classes),
    )


# ------------------------------------------------------------------------ bootstrap


@dataclass(frozen=True)
class Comparison:
    """Challenger minus champion, oriented so that positive always means 'better'."""

    metric: str
    challenger: float
    champion: float
    improvement: float
    low: float
    high: float
    confidence: float
    samples: int
    champion_version: str

    def describe(self) -> str:
        pct = round(self.confidence * 100)
        return (
            f"{self.metric}: challenger {self.challenger:.4f} vs champion v{self.champion_version} "
            f"{self.champion:.4f}; improvement {self.improvement:+.4f}, {pct}% CI [{self.low:+.4f}, {self.high:+.4f}]"
        )


def bootstrap_weights(rows: int, samples: int, seed: int) -> Any:
    """Yield blocks of resampling counts (replicates x rows), reproducibly."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        block = min(BOOTSTRAP_CHUNK, samples - done)
        picks = rng.integers(0, rows, (block, rows)) + (np.arange(block) * rows)[:, None]
        yield np.bincount(picks.ravel(), minlength=block * rows).reshape(block, rows).astype(float)
        done += block


def paired_bootstrap(
    metric: str,
    target: Target,
    challenger: Scores,
    champion: Scores,
    *,
    higher_is_better: bool,
    samples: int,
    confidence: float,
    seed: int,
    champion_version: str,
) -> Comparison:
    fn = METRIC_FUNCTIONS[metric]
    sign = 1.0 if higher_is_better else -1.0
    deltas = []
    for weights in bootstrap_weights(len(target.values), samples, seed):
        deltas.append(sign * (fn(target, challenger, weights) - fn(target, champion, weights)))
    return _comparison(
        metric,
        (target, challenger),
        (target, champion),
        sign,
        np.concatenate(deltas),
        confidence,
        champion_version,
    )


def two_sample_bootstrap(
    metric: str,
    challenger: tuple[Target, Scores],
    champion: tuple[Target, Scores],
    *,
    higher_is_better: bool,
    samples: int,
    confidence: float,
    seed: int,
    champion_version: str,
) -> Comparison:
    """As `paired_bootstrap`, for two models that scored different rows (a canary and the
    champion beside it): each side is resampled on its own, so the interval is wider."""
    fn = METRIC_FUNCTIONS[metric]
    sign = 1.0 if higher_is_better else -1.0

    def replicates(target: Target, scores: Scores, side_seed: int) -> np.ndarray:
        return np.concatenate(
            [
                fn(target, scores, w)
                for w in bootstrap_weights(len(target.values), samples, side_seed)
            ]
        )

    delta = sign * (replicates(*challenger, seed) - replicates(*champion, seed + 1))
    return _comparison(metric, challenger, champion, sign, delta, confidence, champion_version)


def _comparison(
    metric: str,
    challenger: tuple[Target, Scores],
    champion: tuple[Target, Scores],
    sign: float,
    delta: np.ndarray,
    confidence: float,
    champion_version: str,
) -> Comparison:
    """The point estimates and the percentile interval of the resampled differences."""
    delta = delta[np.isfinite(delta)]
    tail = (1.0 - confidence) / 2.0
    challenger_value = metric_value(metric, *challenger)
    champion_value = metric_value(metric, *champion)
    return Comparison(
        metric=metric,
        challenger=challenger_value,
        champion=champion_value,
        improvement=sign * (challenger_value - champion_value),
        low=float(np.quantile(delta, tail)) if len(delta) else float("nan"),
        high=float(np.quantile(delta, 1.0 - tail)) if len(delta) else float("nan"),
        confidence=confidence,
        samples=len(delta),
        champion_version=champion_version,
    )


# ------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class ThresholdCheck:
    metric: str
    value: float
    bound: float
    kind: str  # "floor" or "ceiling"
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    reasons: tuple[str, ...]
    thresholds: tuple[ThresholdCheck, ...] = ()
    comparison: Comparison | None = None


def decide(
    gate: Gate, task: str, metrics: dict[str, float], comparison: Comparison | None, note: str = ""
) -> GateDecision:
    """Bless when every absolute threshold holds and the challenger is not worse than
    the champion beyond the margin (the interval's lower end stays above -margin)."""
    checks = []
    for metric, bound in gate.thresholds.items():
        higher = METRICS[task][metric]
        value = metrics[metric]
        passed = bool(value >= bound) if higher else bool(value <= bound)
        checks.append(
            ThresholdCheck(metric, value, bound, "floor" if higher else "ceiling", passed)
        )
    reasons = []
    for check in checks:
        relation = ">=" if check.kind == "floor" else "<="
        verdict = "ok" if check.passed else "FAILED"
        reasons.append(
            f"threshold {check.metric} {check.value:.4f} {relation} {check.bound} {verdict}"
        )
    thresholds_ok = all(c.passed for c in checks)
    if comparison is None:
        reasons.append(
            note or "no champion yet: the first model that meets the thresholds is blessed"
        )
        return GateDecision(thresholds_ok, tuple(reasons), tuple(checks), None)
    non_inferior = comparison.low >= -gate.margin
    relation = ">=" if non_inferior else "<"
    reasons.append(
        f"vs champion: CI lower bound {comparison.low:+.4f} {relation} -margin {-gate.margin:+.4f} "
        f"({'not worse' if non_inferior else 'worse'} than the champion beyond the margin)"
    )
    return GateDecision(thresholds_ok and non_inferior, tuple(reasons), tuple(checks), comparison)


# ----------------------------------------------------------------- the evaluation


@dataclass(frozen=True)
class SliceMetrics:
    column: str
    group: str
    rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    task: str
    rows: int
    metric: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    decision: GateDecision
    slices: tuple[SliceMetrics, ...] = ()
    confusion: dict[str, Any] | None = None  # {"categories": [...], "matrix": [[...]]}
    roc: dict[str, list[float]] | None = None  # {"fpr", "tpr", "thresholds"}
    notes: tuple[str, ...] = field(default=())
    # Why the champion could not be scored, when gate.on_champion_error let the run go on.
    champion_error: str | None = None

    @property
    def blessed(self) -> bool:
        return self.decision.blessed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Evaluation:
        decision = raw["decision"]
        comparison = Comparison(**decision["comparison"]) if decision.get("comparison") else None
        return cls(
            **{
                **raw,
                "decision": GateDecision(
                    decision["blessed"],
                    tuple(decision["reasons"]),
                    tuple(ThresholdCheck(**c) for c in decision["thresholds"]),
                    comparison,
                ),
                "slices": tuple(SliceMetrics(**s) for s in raw.get("slices", ())),
                "notes": tuple(raw.get("notes", ())),
            }
        )

    def summary(self) -> str:
        verdict = "BLESSED" if self.blessed else "REFUSED"
        comparison = self.decision.comparison
        versus = f"; {comparison.describe()}" if comparison else "; no champion to compare with"
        if self.champion_error:
            versus = f"; NOT COMPARED WITH THE CHAMPION: {self.champion_error}"
        return f"gate {verdict}: {self.metric} {self.metrics[self.metric]:.4f} on {self.rows:,} newest rows{versus}"

    def gate_figures(self) -> dict[str, float]:
        """The paired comparison as metrics (none without a champion)."""
        c = self.decision.comparison
        if c is None:
            return {}
        return {"gate_improvement": c.improvement, "gate_ci_low": c.low, "gate_ci_high": c.high}

    def evidence(self) -> dict[str, Any]:
        """The gate's figures, flat: what the blessing signs and the run logs."""
        comparison = self.decision.comparison
        return {
            "blessed": self.blessed,
            "summary": self.summary(),
            "metric": self.metric,
            "value": round(self.metrics[self.metric], 6),
            "rows": self.rows,
            "champion_version": comparison.champion_version if comparison else None,
            "improvement": round(comparison.improvement, 6) if comparison else None,
            "ci_low": round(comparison.low, 6) if comparison else None,
            "ci_high": round(comparison.high, 6) if comparison else None,
            "champion_error": self.champion_error,
        }

    def markdown(self) -> str:
        verdict = "blessed" if self.blessed else "refused"
        lines = [f"## Gate: challenger {verdict}", ""]
        if self.champion_error:
            lines += [
                '<p style="color:#c00;font-weight:bold">NOT COMPARED WITH THE CHAMPION: '
                f"{html.escape(self.champion_error)}. Blessed on the thresholds alone "
                "(gate.on_champion_error: thresholds).</p>",
                "",
            ]
        lines += [self.summary(), "", "### Metrics on the test slice", ""]
        if self.champion_metrics is not None:
            lines += ["| metric | challenger | champion |", "|---|---|---|"]
            lines += [
                f"| {k} | {v:.4f} | {self.champion_metrics.get(k, float('nan')):.4f} |"
                for k, v in self.metrics.items()
            ]
        else:
            lines += ["| metric | challenger |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in self.metrics.items()]
        comparison = self.decision.comparison
        if comparison:
            lines += [
                "",
                "### Paired bootstrap",
                "",
                f"{comparison.samples} resamples of the same {self.rows:,} test rows. "
                f"Improvement in {comparison.metric} (positive = challenger better): "
                f"{comparison.improvement:+.4f}, {round(comparison.confidence * 100)}% interval "
                f"[{comparison.low:+.4f}, {comparison.high:+.4f}].",
            ]
        lines += ["", "### Decision", ""] + [f"- {r}" for r in self.decision.reasons]
        if self.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        if self.slices:
            lines += [
                "",
                "### Slices",
                "",
                "| column | group | rows | " + " | ".join(self.metrics) + " |",
            ]
            lines.append("|---|---|---|" + "---|" * len(self.metrics))
            for s in self.slices:
                values = " | ".join(f"{s.metrics.get(k, float('nan')):.4f}" for k in self.metrics)
                lines.append(f"| {s.column} | {s.group} | {s.rows:,} | {values} |")
        return "\n".join(lines)


MIN_SLICE_ROWS = 30


def evaluate(
    config: Config,
    frame: Any,
    y: Any,
    challenger: Outputs,
    champion: Outputs | None,
    champion_version: str | None,
    notes: tuple[str, ...] = (),
    champion_error: str | None = None,
) -> Evaluation:
    """Score the challenger (and champion) on the same test rows and apply the gate.

    `champion_error`: why a champion exists but could not be scored, when the config lets
    the gate judge on thresholds anyway (gate.on_champion_error: thresholds)."""
    task = config.task
    classes = challenger.classes or ()
    if task == "classification" and champion is not None and champion.classes:
        classes = tuple(
            dict.fromkeys([*classes, *champion.classes])
        )  # union, challenger's order first
    target = Target.of(y, task, classes)
    challenger_scores = scores_for(challenger, target)
    metrics = all_metrics(target, challenger_scores)
    metric = config.gate_metric
    comparison = None
    champion_metrics = None
    if champion is not None and champion_version is not None:
        champion_scores = scores_for(champion, target)
        champion_metrics = all_metrics(target, champion_scores)
        comparison = paired_bootstrap(
            metric,
            target,
            challenger_scores,
            champion_scores,
            higher_is_better=config.higher_is_better(metric),
            samples=config.gate.bootstrap_samples,
            confidence=config.gate.confidence,
            seed=config.gate.seed,
            champion_version=champion_version,
        )
    note = notes[0] if notes and champion is None else ""
    if champion_error:
        note = (
            f"NOT COMPARED WITH THE CHAMPION ({champion_error}): judged on the thresholds alone, "
            "as gate.on_champion_error: thresholds asks"
        )
    decision = decide(config.gate, task, metrics, comparison, note=note)
    return Evaluation(
        task=task,
        rows=len(target.values),
        metric=metric,
        metrics=metrics,
        champion_metrics=champion_metrics,
        decision=decision,
        slices=_slices(config, frame, target, challenger_scores),
        confusion=_confusion(target, challenger_scores) if task == "classification" else None,
        roc=_roc(target, challenger_scores)
        if task == "classification" and len(classes) == 2
        else None,
        notes=notes,
        champion_error=champion_error,
    )


def _slices(config: Config, frame: Any, target: Target, scores: Scores) -> tuple[SliceMetrics, ...]:
    out = []
    for column in config.sensitive_columns:
        if column not in frame:
            continue
        groups = (
            frame[column]
            .astype("object")
            .where(frame[column].notna(), "(null)")
            .astype(str)
            .to_numpy()
        )
        for group in sorted(set(groups)):
            mask = groups == group
            if mask.sum() < MIN_SLICE_ROWS:
                continue
            sub = Target(target.task, target.values[mask], target.classes)
            out.append(SliceMetrics(column, group, int(mask.sum()), all_metrics(sub, scores[mask])))
    return tuple(out)


def _confusion(target: Target, scores: Scores) -> dict[str, Any]:
    k = scores.shape[1]
    predicted = scores.argmax(axis=1)
    known = target.values >= 0
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (target.values[known], predicted[known]), 1)
    return {"categories": [str(c) for c in target.classes], "matrix": matrix.tolist()}


def _roc(target: Target, scores: Scores, points: int = 101) -> dict[str, list[float]]:
    """The ROC curve at evenly spaced thresholds, small enough for the KFP UI."""
    positive = target.values == 1
    score = scores[:, 1]
    thresholds = np.linspace(1.0, 0.0, points)
    tp = (score[None, :] >= thresholds[:, None]) & positive[None, :]
    fp = (score[None, :] >= thresholds[:, None]) & ~positive[None, :]
    tpr = tp.sum(axis=1) / max(int(positive.sum()), 1)
    fpr = fp.sum(axis=1) / max(int((~positive).sum()), 1)
    return {
        "fpr": fpr.round(6).tolist(),
        "tpr": tpr.round(6).tolist(),
        "thresholds": thresholds.round(6).tolist(),
    }
