"""Metrics against scikit-learn, the paired bootstrap, the gate and the evaluation record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ctpipe import evaluation
from ctpipe.config import METRICS, Gate
from ctpipe.evaluation import (
    METRIC_FUNCTIONS,
    Comparison,
    Evaluation,
    Outputs,
    Target,
    align,
    bootstrap_weights,
    decide,
    metric_value,
    paired_bootstrap,
)
from tests.conftest import make_config

# ------------------------------------------------------------------------ test data


def binary_case(seed: int, rows: int = 300) -> tuple[Target, np.ndarray]:
    """Labels 0/1 and probabilities on a coarse grid (many ties, never exactly 0 or 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    # Informative but imperfect, rounded to one decimal: ties everywhere, including 0.5.
    p1 = np.clip(np.round(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, rows), 1), 0.1, 0.9)
    proba = np.column_stack([1 - p1, p1])
    return Target("classification", y, (0, 1)), proba


def multiclass_case(seed: int, rows: int = 300, k: int = 3) -> tuple[Target, np.ndarray]:
    """Rows draw one of a few probability vectors, so every column is full of ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, rows)
    palette = rng.dirichlet(np.ones(k), 6)
    proba = palette[rng.integers(0, len(palette), rows)]
    # Make it a little informative: half the rows get a vector favouring their label.
    favour = np.full((k, k), 0.15 / (k - 1)) + np.eye(k) * (0.85 - 0.15 / (k - 1))
    informative = rng.random(rows) < 0.5
    proba[informative] = favour[y[informative]]
    return Target("classification", y, tuple(range(k))), proba


def regression_case(seed: int, rows: int = 300) -> tuple[Target, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.round(rng.normal(10, 3, rows), 1)
    prediction = np.round(y + rng.normal(0, 1.5, rows), 0)  # ties in predictions too
    return Target("regression", y), prediction


def sklearn_metric(
    name: str, target: Target, scores: np.ndarray, weight: np.ndarray | None = None
) -> float:
    y = target.values
    if target.task == "classification":
        labels = list(range(scores.shape[1]))
        predicted = scores.argmax(axis=1)
        binary = scores.shape[1] == 2
        if name == "accuracy":
            return skm.accuracy_score(y, predicted, sample_weight=weight)
        if name == "f1":
            average = "binary" if binary else "macro"
            return skm.f1_score(
                y, predicted, labels=labels, average=average, sample_weight=weight, zero_division=0
            )
        if name == "roc_auc":
            if binary:
                return skm.roc_auc_score(y, scores[:, 1], sample_weight=weight)
            return skm.roc_auc_score(
                y, scores, multi_class="ovr", average="macro", labels=labels, sample_weight=weight
            )
        if name == "log_loss":
            return skm.log_loss(y, scores, labels=labels, sample_weight=weight)
    else:
        if name == "rmse":
            return skm.root_mean_squared_error(y, scores, sample_weight=weight)
        if name == "mae":
            return skm.mean_absolute_error(y, scores, sample_weight=weight)
        if name == "r2":
            return skm.r2_score(y, scores, sample_weight=weight)
    raise AssertionError(f"no reference for {name}")


CASES = {
    "binary": binary_case,
    "multiclass": multiclass_case,
    "regression": regression_case,
}


def cases_for(name: str) -> list[str]:
    return ["binary", "multiclass"] if name in METRICS["classification"] else ["regression"]


METRIC_CASES = [(name, case) for name in METRIC_FUNCTIONS for case in cases_for(name)]


def test_metric_functions_cover_every_configurable_metric() -> None:
    configurable = {m for task in METRICS.values() for m in task}
    assert set(METRIC_FUNCTIONS) == configurable


# ------------------------------------------------------------------ metric values


@pytest.mark.parametrize(("name", "case"), METRIC_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unweighted_metric_matches_sklearn(name: str, case: str, seed: int) -> None:
    target, scores = CASES[case](seed)
    assert metric_value(name, target, scores) == pytest.approx(
        sklearn_metric(name, target, scores), rel=1e-9, abs=1e-12
    )


@pytest.mark.parametrize(("name", "case"), METRIC_CASES)
def test_count_weights_match_sklearn_sample_weight_and_repeated_rows(name: str, case: str) -> None:
    target, scores = CASES[case](5)
    counts = np.random.default_rng(11).integers(0, 4, len(target.values)).astype(float)
    ours = float(METRIC_FUNCTIONS[name](target, scores, counts[None, :])[0])
    assert ours == pytest.approx(
        sklearn_metric(name, target, scores, weight=counts), rel=1e-9, abs=1e-12
    )

    repeat = counts.astype(int)
    repeated = Target(target.task, np.repeat(target.values, repeat), target.classes)
    assert ours == pytest.approx(
        sklearn_metric(name, repeated, np.repeat(scores, repeat, axis=0)), rel=1e-9, abs=1e-12
    )


@pytest.mark.parametrize(("name", "case"), METRIC_CASES)
def test_bootstrap_rows_each_match_sklearn(name: str, case: str) -> None:
    target, scores = CASES[case](3)
    block = next(bootstrap_weights(len(target.values), 8, seed=4))
    values = METRIC_FUNCTIONS[name](target, scores, block)
    assert values.shape == (8,)
    for row, value in zip(block, values, strict=True):
        assert value == pytest.approx(
            sklearn_metric(name, target, scores, weight=row), rel=1e-9, abs=1e-12
        )
    # Not all equal: the resamples really differ.
    assert np.ptp(values) > 0


def test_roc_auc_with_all_scores_tied_is_one_half() -> None:
    target = Target("classification", np.array([0, 1, 0, 1, 1]), (0, 1))
    scores = np.full((5, 2), 0.5)
    assert metric_value("roc_auc", target, scores) == pytest.approx(0.5)


def test_roc_auc_with_one_class_is_nan_not_an_error() -> None:
    target = Target("classification", np.array([1, 1, 1]), (0, 1))
    scores = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert math.isnan(metric_value("roc_auc", target, scores))


def test_r2_of_constant_labels_is_nan() -> None:
    target = Target("regression", np.array([3.0, 3.0, 3.0]))
    assert math.isnan(metric_value("r2", target, np.array([3.0, 2.0, 4.0])))


def test_all_metrics_lists_the_task_metrics() -> None:
    target, scores = binary_case(0)
    assert set(evaluation.all_metrics(target, scores)) == set(METRICS["classification"])
    target, scores = regression_case(0)
    assert set(evaluation.all_metrics(target, scores)) == set(METRICS["regression"])


# ----------------------------------------------------------------- classes, labels


def test_align_reorders_classes_and_fills_unknown_with_zeros() -> None:
    proba = np.array([[0.1, 0.9], [0.7, 0.3]])
    outputs = Outputs(np.array(["b", "a"], dtype=object), proba, ("a", "b"))
    aligned = align(outputs, ("b", "c", "a"))
    np.testing.assert_array_equal(aligned, [[0.9, 0.0, 0.1], [0.3, 0.0, 0.7]])


@pytest.mark.parametrize("label", [1, 1.0, "1", np.int64(1), np.float64(1.0)])
def test_labels_1_and_1_0_and_text_1_are_the_same_class(label: object) -> None:
    target = Target.of([label, 0, label], "classification", (0, 1))
    np.testing.assert_array_equal(target.values, [1, 0, 1])
    outputs = Outputs(np.array([0]), np.array([[0.25, 0.75]]), ("0", label))
    np.testing.assert_array_equal(align(outputs, (0, 1)), [[0.25, 0.75]])
    np.testing.assert_array_equal(align(outputs, ("0", "1")), [[0.25, 0.75]])


def test_a_label_no_model_knows_is_wrong_but_does_not_crash() -> None:
    target = Target.of([0, 1, 2], "classification", (0, 1))
    np.testing.assert_array_equal(target.values, [0, 1, -1])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert metric_value("accuracy", target, scores) == pytest.approx(2 / 3)
    assert metric_value("log_loss", target, scores) > 10  # the unknown row costs -log(eps)


# --------------------------------------------------------------------- bootstrap


def test_bootstrap_weight_rows_sum_to_the_row_count_and_are_reproducible() -> None:
    rows, samples = 57, 250
    first = list(bootstrap_weights(rows, samples, seed=3))
    again = list(bootstrap_weights(rows, samples, seed=3))
    other = list(bootstrap_weights(rows, samples, seed=4))
    stacked = np.vstack(first)
    assert stacked.shape == (samples, rows)
    assert [len(b) for b in first] == [100, 100, 50]
    np.testing.assert_array_equal(stacked.sum(axis=1), np.full(samples, rows))
    assert (stacked >= 0).all() and np.array_equal(stacked, np.round(stacked))
    np.testing.assert_array_equal(stacked, np.vstack(again))
    assert not np.array_equal(stacked, np.vstack(other))
    # Replicates are not copies of one another.
    assert len({row.tobytes() for row in stacked}) == samples


def _bootstrap(
    metric: str, target: Target, challenger: np.ndarray, champion: np.ndarray, higher: bool
) -> Comparison:
    return paired_bootstrap(
        metric,
        target,
        challenger,
        champion,
        higher_is_better=higher,
        samples=300,
        confidence=0.95,
        seed=0,
        champion_version="3",
    )


def _scored(seed: int, rows: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, rows))))
    return y, np.column_stack([1 - p1, p1])


def test_identical_models_give_a_zero_interval() -> None:
    target, scores = binary_case(0)
    comparison = _bootstrap("roc_auc", target, scores, scores.copy(), True)
    assert comparison.low == 0.0 and comparison.high == 0.0 and comparison.improvement == 0.0
    assert comparison.samples == 300
    assert comparison.champion_version == "3"


def test_a_clearly_better_challenger_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    target = Target("classification", y, (0, 1))
    noise = rng.normal(0, 1, 400)
    strong = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + noise)))
    weak = 1 / (1 + np.exp(-(0.2 * (2 * y - 1) + noise)))
    challenger, champion = np.column_stack([1 - strong, strong]), np.column_stack([1 - weak, weak])
    better = _bootstrap("roc_auc", target, challenger, champion, True)
    assert better.improvement > 0.1
    assert 0 < better.low <= better.improvement <= better.high
    assert better.challenger == pytest.approx(metric_value("roc_auc", target, challenger))
    assert better.champion == pytest.approx(metric_value("roc_auc", target, champion))

    worse = _bootstrap("roc_auc", target, champion, challenger, True)
    assert worse.high < -Gate().margin
    assert worse.improvement == pytest.approx(-better.improvement)


def test_lower_is_better_metrics_are_oriented_so_positive_means_better() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    target = Target("classification", y, (0, 1))
    good = np.where(y == 1, 0.8, 0.2)
    bad = np.full(400, 0.5)
    challenger, champion = np.column_stack([1 - good, good]), np.column_stack([1 - bad, bad])
    comparison = _bootstrap("log_loss", target, challenger, champion, False)
    assert comparison.challenger < comparison.champion  # lower log loss...
    assert comparison.improvement == pytest.approx(comparison.champion - comparison.challenger)
    assert comparison.improvement > 0 and comparison.low > 0  # ...reads as an improvement

    regression = Target("regression", np.linspace(0, 10, 200))
    close, far = regression.values + 0.1, regression.values + 3.0
    comparison = _bootstrap("rmse", regression, far, close, False)
    assert comparison.improvement == pytest.approx(-2.9)
    assert comparison.high < 0


def test_comparison_describe_names_the_metric_and_champion() -> None:
    target, scores = binary_case(0)
    text = _bootstrap("accuracy", target, scores, scores, True).describe()
    assert "accuracy" in text and "champion v3" in text and "95% CI" in text


# -------------------------------------------------------------------------- gate


def _comparison(low: float, high: float = 0.05) -> Comparison:
    return Comparison("roc_auc", 0.8, 0.8, (low + high) / 2, low, high, 0.95, 1000, "7")


def test_first_model_meeting_thresholds_is_blessed() -> None:
    gate = Gate(thresholds={"roc_auc": 0.7, "log_loss": 0.6})
    decision = decide(
        gate, "classification", {"roc_auc": 0.75, "log_loss": 0.5, "accuracy": 0.7, "f1": 0.7}, None
    )
    assert decision.blessed
    assert decision.comparison is None
    assert [(c.metric, c.kind, c.passed) for c in decision.thresholds] == [
        ("roc_auc", "floor", True),
        ("log_loss", "ceiling", True),
    ]
    assert any("no champion" in r for r in decision.reasons)


def test_failing_a_floor_refuses() -> None:
    gate = Gate(thresholds={"roc_auc": 0.7})
    decision = decide(gate, "classification", {"roc_auc": 0.65}, None)
    assert not decision.blessed
    assert any("roc_auc" in r and ">=" in r and "FAILED" in r for r in decision.reasons)


def test_failing_a_ceiling_refuses_even_when_better_than_the_champion() -> None:
    gate = Gate(thresholds={"log_loss": 0.5})
    decision = decide(gate, "classification", {"log_loss": 0.6}, _comparison(0.02, 0.08))
    assert not decision.blessed
    assert decision.thresholds[0].kind == "ceiling"
    assert any("log_loss" in r and "<=" in r and "FAILED" in r for r in decision.reasons)


def test_regression_ceiling_and_floor() -> None:
    gate = Gate(thresholds={"rmse": 2.0, "r2": 0.5})
    assert decide(gate, "regression", {"rmse": 1.9, "r2": 0.6}, None).blessed
    assert not decide(gate, "regression", {"rmse": 2.1, "r2": 0.6}, None).blessed
    assert not decide(gate, "regression", {"rmse": 1.9, "r2": 0.4}, None).blessed


def test_non_inferior_within_the_margin_is_blessed() -> None:
    gate = Gate(margin=0.01)
    decision = decide(gate, "classification", {"roc_auc": 0.8}, _comparison(-0.009, 0.01))
    assert decision.blessed
    assert decision.comparison is not None
    assert any("margin" in r and "not worse" in r for r in decision.reasons)
    # Exactly at the margin still passes: the rule is low >= -margin.
    assert decide(gate, "classification", {"roc_auc": 0.8}, _comparison(-0.01, 0.01)).blessed


def test_worse_beyond_the_margin_is_refused() -> None:
    gate = Gate(margin=0.01, thresholds={"roc_auc": 0.5})
    decision = decide(gate, "classification", {"roc_auc": 0.8}, _comparison(-0.02, -0.001))
    assert not decision.blessed
    assert decision.thresholds[0].passed  # refused by the comparison, not the threshold
    assert any(
        "margin" in r and "worse than the champion beyond the margin" in r and "not worse" not in r
        for r in decision.reasons
    )


def test_note_replaces_the_no_champion_reason() -> None:
    decision = decide(Gate(), "classification", {}, None, note="champion v2 could not score")
    assert decision.blessed
    assert decision.reasons == ("champion v2 could not score",)


# -------------------------------------------------------------------- evaluate()


def _classification_frame(
    seed: int = 0, rows: int = 240
) -> tuple[pd.DataFrame, np.ndarray, Outputs, Outputs]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    region = np.array(["north", "south", "east"], dtype=object)[
        rng.choice(3, rows, p=[0.5, 0.45, 0.05])
    ]
    region[:3] = None  # three nulls: a group too small to report
    frame = pd.DataFrame({"region": region, "num_0": rng.normal(size=rows)})
    strong = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1, rows))))
    weak = 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + rng.normal(0, 1, rows))))
    # The challenger knows classes as ints, the champion as text and in the other order.
    challenger = Outputs((strong > 0.5).astype(int), np.column_stack([1 - strong, strong]), (0, 1))
    champion = Outputs((weak > 0.5).astype(int), np.column_stack([weak, 1 - weak]), ("1", "0"))
    return frame, y.astype(float), challenger, champion


def test_evaluate_first_model_end_to_end(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    frame, y, challenger, _ = _classification_frame()
    result = evaluation.evaluate(config, frame, y, challenger, None, None)

    assert result.task == "classification" and result.rows == len(y)
    assert result.metric == "roc_auc"
    assert set(result.metrics) == set(METRICS["classification"])
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, challenger.proba[:, 1]))
    assert result.blessed and result.champion_metrics is None and result.decision.comparison is None

    counts = {g: int((frame["region"] == g).sum()) for g in ("north", "south", "east")}
    reported = {(s.column, s.group): s for s in result.slices}
    assert set(reported) == {
        ("region", g) for g, n in counts.items() if n >= evaluation.MIN_SLICE_ROWS
    }
    assert ("region", "(null)") not in reported and ("region", "east") not in reported
    for (_, group), s in reported.items():
        mask = (frame["region"] == group).to_numpy()
        assert s.rows == counts[group]
        assert s.metrics["accuracy"] == pytest.approx(
            skm.accuracy_score(y[mask], challenger.proba[mask].argmax(axis=1))
        )

    assert result.confusion is not None
    matrix = np.array(result.confusion["matrix"])
    assert result.confusion["categories"] == ["0", "1"]
    assert matrix.shape == (2, 2) and matrix.sum() == len(y)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y, challenger.proba.argmax(axis=1)))

    assert result.roc is not None
    fpr, tpr, thresholds = result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"]
    assert len(fpr) == len(tpr) == len(thresholds) > 2
    assert all(0.0 <= v <= 1.0 for v in [*fpr, *tpr, *thresholds])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    # The area under the coarse curve is close to the exact AUC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(result.metrics["roc_auc"], abs=0.02)


def test_evaluate_against_a_champion_and_round_trip(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    frame, y, challenger, champion = _classification_frame(1)
    result = evaluation.evaluate(config, frame, y, challenger, champion, "4")

    assert result.champion_metrics is not None
    # The champion's columns were put back in class order before scoring.
    weak = champion.proba[:, 0]
    assert result.champion_metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, weak))
    comparison = result.decision.comparison
    assert comparison is not None and comparison.champion_version == "4"
    assert comparison.samples == config.gate.bootstrap_samples
    assert comparison.low > 0 and result.blessed

    restored = Evaluation.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result
    assert Evaluation.from_dict(result.to_dict()) == result

    text = result.markdown()
    assert "## Gate: challenger blessed" in text
    assert "### Decision" in text and "### Paired bootstrap" in text
    assert all(reason in text for reason in result.decision.reasons)
    assert "| region | north |" in text


def test_evaluate_refuses_a_worse_challenger_and_says_why(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    frame, y, strong, weak = _classification_frame(2)
    result = evaluation.evaluate(
        config, frame, y, Outputs(weak.prediction, weak.proba, weak.classes), strong, "9"
    )
    assert not result.blessed
    assert "REFUSED" in result.summary()
    text = result.markdown()
    assert "## Gate: challenger refused" in text
    assert "worse than the champion beyond the margin" in text
    assert Evaluation.from_dict(result.to_dict()).blessed is False


def test_evaluate_multiclass_with_a_class_only_the_champion_knows(tmp_path: Path) -> None:
    config = make_config(tmp_path, gate={"thresholds": {}})
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    frame = pd.DataFrame({"region": ["north"] * 150})
    challenger = Outputs(np.zeros(150), rng.dirichlet(np.ones(2), 150), (0, 1))
    champion = Outputs(np.zeros(150), rng.dirichlet(np.ones(3), 150), (2, 1, 0))
    result = evaluation.evaluate(config, frame, y, challenger, champion, "1")
    assert result.roc is None  # three classes: no binary ROC
    assert result.confusion is not None
    assert result.confusion["categories"] == ["0", "1", "2"]
    assert np.array(result.confusion["matrix"]).sum() == 150
    assert np.array(result.confusion["matrix"])[:, 2].sum() == 0  # the challenger never predicts 2


def test_evaluate_regression(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        task="regression",
        gate={"thresholds": {"rmse": 5.0}},
        sensitive_columns=[],
        search={"candidates": [{"family": "linear", "params": {"alpha": 1.0}}]},
    )
    target, prediction = regression_case(4)
    frame = pd.DataFrame({"num_0": np.zeros(len(prediction))})
    result = evaluation.evaluate(config, frame, target.values, Outputs(prediction), None, None)
    assert result.metric == "rmse"
    assert result.metrics["rmse"] == pytest.approx(
        skm.root_mean_squared_error(target.values, prediction)
    )
    assert result.confusion is None and result.roc is None and result.slices == ()
    assert result.blessed
    assert "rmse" in result.markdown()
    assert Evaluation.from_dict(json.loads(json.dumps(result.to_dict()))) == result
