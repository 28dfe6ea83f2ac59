"""The search space, candidate round trips, choosing the best, and the family tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ctpipe.errors import ConfigError
from ctpipe.options import FAMILIES
from ctpipe.training import families
from ctpipe.training.families import THREADS_ENV, build_estimator, training_threads
from ctpipe.training.search import Candidate, TrainResult, best, expand, leaderboard
from tests.conftest import make_config

# ------------------------------------------------------------------------ expand


def test_expand_gives_the_grid_in_config_order_with_stable_ids(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        search={
            "candidates": [
                {
                    "family": "random_forest",
                    "params": {"n_estimators": [10, 20], "min_samples_leaf": [1, 5]},
                },
                {"family": "linear", "params": {"C": [0.1, 1.0]}},
                {"family": "hist_gradient_boosting", "params": {"max_iter": 50}},
            ]
        },
    )
    candidates = expand(config)
    assert [c.id for c in candidates] == [
        "random_forest-0",
        "random_forest-1",
        "random_forest-2",
        "random_forest-3",
        "linear-0",
        "linear-1",
        "hist_gradient_boosting-0",
    ]
    # Within a family the axes vary in name order, the last one fastest.
    assert [c.params for c in candidates[:4]] == [
        {"min_samples_leaf": 1, "n_estimators": 10},
        {"min_samples_leaf": 1, "n_estimators": 20},
        {"min_samples_leaf": 5, "n_estimators": 10},
        {"min_samples_leaf": 5, "n_estimators": 20},
    ]
    assert [c.params for c in candidates[4:]] == [{"C": 0.1}, {"C": 1.0}, {"max_iter": 50}]
    assert [c.family for c in candidates] == ["random_forest"] * 4 + ["linear"] * 2 + [
        "hist_gradient_boosting"
    ]
    # The same config (even one that went through a dict and back) gives the same ids.
    again = make_config(tmp_path, search=config.to_dict()["search"])
    assert expand(again) == candidates


def test_expand_with_no_params_gives_one_default_candidate(tmp_path: Path) -> None:
    config = make_config(tmp_path, search={"candidates": [{"family": "linear"}]})
    assert expand(config) == [Candidate("linear-0", "linear", {})]


def test_too_many_candidates_is_a_config_error(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        search={
            "max_candidates": 3,
            "candidates": [{"family": "linear", "params": {"C": [0.1, 1.0, 10.0, 100.0]}}],
        },
    )
    with pytest.raises(ConfigError, match=r"4 candidates.*max_candidates \(3\)"):
        expand(config)
    exactly = make_config(
        tmp_path,
        search={
            "max_candidates": 4,
            "candidates": [{"family": "linear", "params": {"C": [0.1, 1.0, 10.0, 100.0]}}],
        },
    )
    assert len(expand(exactly)) == 4


def test_a_family_listed_twice_gets_distinct_ids(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        search={
            "candidates": [
                {"family": "linear", "params": {"C": [0.1, 1.0]}},
                {"family": "random_forest", "params": {"n_estimators": 10}},
                {"family": "linear", "params": {"C": [10.0, 100.0]}},
                {"family": "linear", "params": {"tol": 0.01}},
            ]
        },
    )
    candidates = expand(config)
    ids = [c.id for c in candidates]
    assert len(set(ids)) == len(ids) == 6
    assert ids[:3] == ["linear-0", "linear-1", "random_forest-0"]
    assert [c.params for c in candidates if c.family == "linear"] == [
        {"C": 0.1},
        {"C": 1.0},
        {"C": 10.0},
        {"C": 100.0},
        {"tol": 0.01},
    ]


# --------------------------------------------------------------------- candidates


def test_candidate_from_dict_restores_integers_sent_as_doubles() -> None:
    raw = {
        "id": "random_forest-0",
        "family": "random_forest",
        "params": {
            "n_estimators": 200.0,
            "min_samples_leaf": 5.0,
            "max_features": 0.5,
            "bootstrap": True,
        },
    }
    candidate = Candidate.from_dict(raw)
    assert candidate.params == {
        "n_estimators": 200,
        "min_samples_leaf": 5,
        "max_features": 0.5,
        "bootstrap": True,
    }
    assert type(candidate.params["n_estimators"]) is int
    assert type(candidate.params["bootstrap"]) is bool
    # And sklearn accepts the result.
    build_estimator("random_forest", "classification", candidate.params, seed=0)._validate_params()


def test_candidate_round_trips_through_json() -> None:
    candidate = Candidate(
        "hist_gradient_boosting-1",
        "hist_gradient_boosting",
        {"learning_rate": 0.05, "max_iter": 100},
    )
    assert Candidate.from_dict(json.loads(json.dumps(candidate.to_dict()))) == candidate
    assert candidate.describe() == "hist_gradient_boosting-1 (learning_rate=0.05, max_iter=100)"
    assert Candidate("linear-0", "linear", {}).describe() == "linear-0"


@pytest.mark.parametrize("param", ["max_features", "max_samples"])
def test_a_fraction_of_one_stays_a_fraction(param: str) -> None:
    # For these parameters 1.0 means "all of them" and 1 means "one": not the same model.
    candidate = Candidate.from_dict(
        {"id": "random_forest-0", "family": "random_forest", "params": {param: 1.0}}
    )
    assert candidate.params[param] == 1.0 and type(candidate.params[param]) is float
    # A whole number above one can only be a count.
    candidate = Candidate.from_dict(
        {"id": "random_forest-0", "family": "random_forest", "params": {param: 3.0}}
    )
    assert type(candidate.params[param]) is int


# --------------------------------------------------------------------------- best


def result(index: int, score: float, metric: str = "roc_auc") -> TrainResult:
    candidate = Candidate(f"linear-{index}", "linear", {"C": float(index)})
    return TrainResult(candidate, metric, score, train_rows=1000, validation_rows=200, seconds=1.5)


def test_best_picks_the_maximum_when_higher_is_better() -> None:
    assert best([result(0, 0.7), result(1, 0.9), result(2, 0.8)], higher_is_better=True) == 1


def test_best_picks_the_minimum_when_lower_is_better() -> None:
    assert best([result(0, 0.7), result(1, 0.9), result(2, 0.6)], higher_is_better=False) == 2


@pytest.mark.parametrize("higher", [True, False])
def test_ties_go_to_the_earlier_candidate(higher: bool) -> None:
    assert best(
        [result(0, 0.5), result(1, 0.8), result(2, 0.8), result(3, 0.5)], higher_is_better=higher
    ) == (1 if higher else 0)


@pytest.mark.parametrize("higher", [True, False])
def test_nan_never_wins(higher: bool) -> None:
    nan = float("nan")
    assert best([result(0, nan), result(1, 0.3), result(2, nan)], higher_is_better=higher) == 1
    assert best([result(0, 0.3), result(1, nan)], higher_is_better=higher) == 0
    worst = -math.inf if higher else math.inf
    assert best([result(0, nan), result(1, worst)], higher_is_better=higher) == 1


def test_best_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no trained candidates"):
        best([], higher_is_better=True)


def test_leaderboard_lists_every_candidate_best_first_and_marks_the_chosen() -> None:
    results = [result(0, 0.7), result(1, 0.9), result(2, 0.8)]
    chosen = best(results, higher_is_better=True)
    text = leaderboard(results, chosen, higher_is_better=True)
    assert "validation roc_auc, higher is better" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3
    assert [row.split(" | ")[1] for row in rows] == [
        "linear-1 **(chosen)**",
        "linear-2",
        "linear-0",
    ]
    assert text.count("(chosen)") == 1
    assert "0.9000" in rows[0] and "1,000" in rows[0]

    lower = leaderboard(results, 0, higher_is_better=False)
    assert "lower is better" in lower
    assert [
        line.split(" | ")[1]
        for line in lower.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ] == [
        "linear-0 **(chosen)**",
        "linear-2",
        "linear-1",
    ]


def test_train_result_metadata_round_trip() -> None:
    original = result(3, 0.8125)
    meta = json.loads(json.dumps(original.metadata()))
    restored = TrainResult.from_metadata(meta)
    assert restored == original
    assert "linear-3" in restored.describe() and "0.8125" in restored.describe()


# ---------------------------------------------------------------- family tables


FAMILY_TASKS = [(name, task) for name in FAMILIES for task in ("classification", "regression")]


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_every_listed_param_is_accepted_by_the_real_estimator(family: str, task: str) -> None:
    accepted = FAMILIES[family].params_for(task)
    assert accepted, f"{family} lists no parameters for {task}"
    assert len(set(accepted)) == len(accepted)
    real = build_estimator(family, task, {}, seed=0).get_params()
    missing = [p for p in accepted if p not in real]
    assert not missing, f"{family} ({task}) lists params its estimator does not have: {missing}"


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_build_estimator_is_the_right_kind(family: str, task: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    estimator = build_estimator(family, task, {}, seed=0)
    assert is_classifier(estimator) if task == "classification" else is_regressor(estimator)


def test_build_estimator_passes_seed_threads_and_params() -> None:
    forest = build_estimator(
        "random_forest", "classification", {"n_estimators": 7}, seed=13, threads=3
    )
    assert forest.get_params()["random_state"] == 13
    assert forest.get_params()["n_jobs"] == 3
    assert forest.get_params()["n_estimators"] == 7
    regressor = build_estimator("random_forest", "regression", {}, seed=2, threads=4)
    assert (regressor.random_state, regressor.n_jobs) == (2, 4)
    for task in ("classification", "regression"):
        boosting = build_estimator(
            "hist_gradient_boosting", task, {"learning_rate": 0.2}, seed=5, threads=2
        )
        assert boosting.random_state == 5 and boosting.learning_rate == 0.2
    linear = build_estimator("linear", "classification", {}, seed=0)
    assert linear.max_iter == 1000
    assert build_estimator("linear", "classification", {"max_iter": 50}, seed=0).max_iter == 50
    assert build_estimator("linear", "regression", {"alpha": 3.0}, seed=0).alpha == 3.0


def test_build_estimator_refuses_an_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown model family 'svm'"):
        build_estimator("svm", "classification", {}, seed=0)


def test_same_seed_same_forest() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + rng.normal(0, 1, 120) > 0).astype(int)
    first = build_estimator("random_forest", "classification", {"n_estimators": 5}, seed=3).fit(
        x, y
    )
    second = build_estimator("random_forest", "classification", {"n_estimators": 5}, seed=3).fit(
        x, y
    )
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))


def test_training_threads_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert training_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "0")
    assert training_threads() == 1


def test_training_threads_defaults_to_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from joblib import cpu_count

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert training_threads() == max(1, cpu_count(only_physical_cores=False))
    monkeypatch.setenv(THREADS_ENV, "")
    assert training_threads() == max(1, cpu_count(only_physical_cores=False))
    assert families.THREADS_ENV == "CTPIPE_TRAIN_THREADS"
