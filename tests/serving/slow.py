"""An estimator that answers correctly but slowly, as a challenger with a costlier model
or a slower library would. Infra validation must refuse it next to a normal champion.

It lives in an importable module (not a test file) so that the serving subprocess can
unpickle it: cloudpickle stores the class by reference."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class SlowToAnswer(ClassifierMixin, BaseEstimator):
    def __init__(self, delay_seconds: float = 0.05) -> None:
        self.delay_seconds = delay_seconds

    def fit(self, x: Any, y: Any) -> SlowToAnswer:
        self.inner_ = LogisticRegression(max_iter=500).fit(x, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        time.sleep(self.delay_seconds)
        return np.asarray(self.inner_.predict_proba(x))

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(x).argmax(axis=1)]
