"""A classifier that fails on part of its input, as a challenger with a bug in a rare code
path would: the predictor answers 500 for those requests. Importable (not a test file) so
that the serving subprocess can unpickle it: cloudpickle stores the class by reference."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class FailsAboveThreshold(ClassifierMixin, BaseEstimator):
    def __init__(self, column: int = 0, threshold: float = 1.0) -> None:
        self.column = column
        self.threshold = threshold

    def fit(self, x: Any, y: Any) -> FailsAboveThreshold:
        self.inner_ = LogisticRegression(max_iter=500).fit(x, y)
        self.classes_ = self.inner_.classes_
        return self

    def _check(self, x: Any) -> None:
        values = np.asarray(x, dtype=float)[:, self.column]
        if (values > self.threshold).any():
            raise RuntimeError("this code path has a bug")

    def predict_proba(self, x: Any) -> np.ndarray:
        self._check(x)
        return np.asarray(self.inner_.predict_proba(x))

    def predict(self, x: Any) -> np.ndarray:
        self._check(x)
        return np.asarray(self.inner_.predict(x))
