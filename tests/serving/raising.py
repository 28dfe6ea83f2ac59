"""A classifier that raises on absurd inputs (any value above 1e5 after preprocessing),
as a challenger with a bug on rare input would. As a shadow it must never change an
answer. Importable (not a test file) so that the serving subprocess can unpickle it:
cloudpickle stores the class by reference."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

LIMIT = 1e5


class RaisesOnAbsurdInput(ClassifierMixin, BaseEstimator):
    def fit(self, x: Any, y: Any) -> RaisesOnAbsurdInput:
        self.inner_ = LogisticRegression(max_iter=500).fit(x, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        if (np.abs(np.asarray(x, dtype=float)) > LIMIT).any():
            raise RuntimeError("this code path has a bug")
        return np.asarray(self.inner_.predict_proba(x))

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(x).argmax(axis=1)]
