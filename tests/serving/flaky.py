"""An estimator that answers differently inside the serving runtime than in-process, as
a model does when the serving image's libraries differ from the training image's.
Infra validation must catch exactly this kind of model."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


def _in_the_predictor() -> bool:
    """True inside `python -m ctpipe.serving` (a test process may import the serving
    modules too, so their presence proves nothing)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "ctpipe.serving.__main__"


class DiffersWhenServed(ClassifierMixin, BaseEstimator):
    def __init__(self, offset: float = 0.2) -> None:
        self.offset = offset

    def fit(self, x: Any, y: Any) -> DiffersWhenServed:
        self.inner_ = LogisticRegression(max_iter=500).fit(x, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        proba = self.inner_.predict_proba(x)
        served = _in_the_predictor()
        positive = np.clip(proba[:, 1] + (self.offset if served else 0.0), 0.0, 1.0)
        return np.column_stack([1 - positive, positive])

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(x).argmax(axis=1)]
