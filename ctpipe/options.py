"""What some settings may name, kept below the config that checks them.

- The model families a search may use and the parameters each accepts. The tables are
  static so that checking a config never imports scikit-learn (each KFP step is a fresh
  process, and that import costs seconds). A unit test keeps them in step with the real
  estimators' `get_params()`; ctpipe.training.families builds the estimators.
- Durations ('90d'), spans (rows, a share, a duration) and `train.window` specs;
  ctpipe.training.windows turns a spec into the rows a retrain learns from.

Nothing here imports the rest of ctpipe: config imports it, and so does training, so the
arrows run one way (config never imports training).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'90d' -> seconds. Units: s, m, h, d, w."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as '90d' or '12h', got {text!r}")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


EXPANDING = "expanding"
SLIDING = "sliding"
AUTO = "auto"

_ROWS = re.compile(r"^\d+$")
_SHARE = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


@dataclass(frozen=True)
class Span:
    """A length back from the newest row: a row count, a share of the rows, or seconds."""

    rows: int | None = None
    share: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class WindowSpec:
    kind: str  # expanding | sliding | auto
    span: Span | None = None  # for sliding
    text: str = EXPANDING

    def __str__(self) -> str:
        return self.text


def parse_span(text: str | int, *, allow_share: bool = True) -> Span:
    """'5000' -> rows, '25%' -> share, '90d' -> seconds."""
    raw = str(text).strip()
    if _ROWS.match(raw):
        rows = int(raw)
        if rows < 1:
            raise ValueError(f"expected at least 1 row, got {raw!r}")
        return Span(rows=rows)
    share = _SHARE.match(raw)
    if share:
        if not allow_share:
            raise ValueError(f"expected rows (5000) or a duration (30d), got {raw!r}")
        value = float(share.group(1)) / 100
        if not 0 < value <= 1:
            raise ValueError(f"expected a share in (0%, 100%], got {raw!r}")
        return Span(share=value)
    try:
        seconds = parse_duration(raw)
    except ValueError:
        shapes = "rows (5000), a share (25%) or a duration (90d)"
        if not allow_share:
            shapes = "rows (5000) or a duration (30d)"
        raise ValueError(f"expected {shapes}, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {raw!r}")
    return Span(seconds=seconds)


def parse_window(text: str) -> WindowSpec:
    """'expanding', 'auto' or 'sliding <rows | share% | duration>'."""
    raw = " ".join(str(text).split())
    if raw in (EXPANDING, AUTO):
        return WindowSpec(raw, None, raw)
    head, _, rest = raw.partition(" ")
    if head == SLIDING and rest:
        return WindowSpec(SLIDING, parse_span(rest), raw)
    raise ValueError(
        f"expected expanding, auto, or sliding followed by rows (5000), a share (25%) or "
        f"a duration (90d), got {text!r}"
    )


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

_BOOSTING_PARAMS = (
    "learning_rate",
    "max_iter",
    "max_depth",
    "max_leaf_nodes",
    "min_samples_leaf",
    "l2_regularization",
    "early_stopping",
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
            classification=(*_BOOSTING_PARAMS, "class_weight"),
            regression=(*_BOOSTING_PARAMS, "loss"),
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
