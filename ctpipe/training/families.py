"""Model families: their estimators, and how many threads a training step may use.

Which families exist and the parameters each accepts are static tables in ctpipe.options,
below the config that checks them.
"""

from __future__ import annotations

import os
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
