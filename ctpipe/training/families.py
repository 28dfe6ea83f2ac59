"""Model families a search may use, and the parameters each accepts.

The tables are static so that checking a config never imports scikit-learn (each KFP
step is a fresh process, and that import costs seconds). A unit test keeps them in step
with the real estimators' `get_params()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

THREADS_ENV = "CTPIPE_TRAIN_THREADS"


def training_threads() -> int:
    """Threads one training step may use.

    CTPIPE_TRAIN_THREADS when set (`ctpipe run` sets it, since kfp.local runs two steps at
    once on one machine), else the CPUs this process may use, cgroup limits included, so
    that a pod with a 2-CPU limit on a 64-core node does not start 64 OpenMP threads.
    """
    configured = os.environ.get(THREADS_ENV)
    if configured:
        return max(1, int(configured))
    from joblib import cpu_count

    return max(1, int(cpu_count(only_physical_cores=False)))


@dataclass(frozen=True)
class Family:
    name: str
    classification: tuple[str, ...]  # accepted params for each task
    regression: tuple[str, ...]

    def params_for(self, task: str) -> tuple[str, ...]:
        return self.classification if task == "classification" else self.regression


# ctpipe.training.torch_mlp; `device` ("auto", "cpu", "cuda") lets a config pin a candidate.
_TORCH_MLP_PARAMS = (
    "hidden_units",
    "hidden_layers",
    "dropout",
    "embedding_dim",
    "learning_rate",
    "weight_decay",
    "batch_size",
    "max_epochs",
    "patience",
    "validation_fraction",
    "amp",
    "device",
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "linear",
            classification=("C", "max_iter", "class_weight", "tol"),
            regression=("alpha", "tol"),
        ),
        Family(
            "random_forest",
            classification=(
                "n_estimators",
                "max_depth",
                "min_samples_leaf",
                "max_features",
                "class_weight",
                "bootstrap",
                "max_samples",
            ),
            regression=(
                "n_estimators",
                "max_depth",
                "min_samples_leaf",
                "max_features",
                "bootstrap",
                "max_samples",
            ),
        ),
        Family(
            "hist_gradient_boosting",
            classification=(
                "learning_rate",
                "max_iter",
                "max_depth",
                "max_leaf_nodes",
                "min_samples_leaf",
                "l2_regularization",
                "early_stopping",
                "class_weight",
            ),
            regression=(
                "learning_rate",
                "max_iter",
                "max_depth",
                "max_leaf_nodes",
                "min_samples_leaf",
                "l2_regularization",
                "early_stopping",
                "loss",
            ),
        ),
        Family(
            "torch_mlp",
            classification=_TORCH_MLP_PARAMS,
            regression=_TORCH_MLP_PARAMS,
        ),
    )
}


# Families whose fit() takes sample_weight (train.half_life); the torch MLP does not.
WEIGHTED_FAMILIES = frozenset({"linear", "random_forest", "hist_gradient_boosting"})


def build_estimator(
    family: str, task: str, params: dict[str, Any], seed: int, threads: int = 1
) -> Any:
    """A fresh, unfitted scikit-learn estimator for one candidate (torch_mlp included)."""
    if family == "linear":
        if task == "classification":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(**{"max_iter": 1000, **params})
        from sklearn.linear_model import Ridge

        return Ridge(**params)
    if family == "random_forest":
        from sklearn import ensemble

        forest = (
            ensemble.RandomForestClassifier
            if task == "classification"
            else ensemble.RandomForestRegressor
        )
        return forest(**{"n_jobs": threads, "random_state": seed, **params})
    if family == "hist_gradient_boosting":
        from sklearn import ensemble

        boosting = (
            ensemble.HistGradientBoostingClassifier
            if task == "classification"
            else ensemble.HistGradientBoostingRegressor
        )
        # Early stopping holds out a random 10% internally; fixing the seed keeps runs repeatable.
        return boosting(**{"random_state": seed, **params})
    if family == "torch_mlp":
        # Imports scikit-learn but not torch: torch loads when fit() runs, in this step only.
        from ctpipe.training import torch_mlp

        network = (
            torch_mlp.TorchMLPClassifier
            if task == "classification"
            else torch_mlp.TorchMLPRegressor
        )
        return network(**{"random_state": seed, "n_threads": threads, **params})
    raise ValueError(f"unknown model family {family!r}")
