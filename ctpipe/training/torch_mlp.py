"""A tabular MLP in PyTorch, as scikit-learn estimators: `TorchMLPClassifier`, `TorchMLPRegressor`.

They sit after ctpipe's ColumnTransformer in the same sklearn Pipeline, so they see the
transformed dense matrix: standardised numeric columns, then one one-hot block per
categorical feature.

Embeddings. With `categorical_groups="auto"` the estimator finds the one-hot blocks in
the training matrix (contiguous 0/1 columns whose every row sums to exactly 1: what
OneHotEncoder produces on the data it was fitted on) and gives each categorical feature
its own embedding of `embedding_dim` dimensions (default: min(16, round(1.6 * n ** 0.56))
for n categories). The embedding is a bias-free linear map of the one-hot block, which
for a one-hot row is exactly a table lookup; an unseen category (all zeros) maps to the
zero vector. The embeddings are concatenated with the numeric columns and fed to the
MLP. `embedding_dim=0` (or `categorical_groups=None`) feeds the one-hot columns straight
in. Pass explicit `(start, stop)` column ranges instead of "auto" for other layouts.

Training: AdamW on mini-batches; early stopping on the last `validation_fraction` of the
rows as given (ctpipe's slices are in time order, so that is the newest data), keeping the
best epoch's weights. Seeded, and on CPU deterministic: the same seed, data and thread count
give bitwise identical weights. On a GPU: automatic mixed precision (bfloat16 where the GPU
supports it, else float16 with loss scaling) and pinned-memory batches; GPU training is
seeded but not bitwise repeatable.

Persistence. Pickling never pickles a torch module: the network's state dict travels as
bytes in torch's format, with its SHA-256, and is read back with
`torch.load(weights_only=True)` into a network rebuilt from the hyperparameters. Loading
places the network on a GPU when one is present (and `device` allows), on CPU otherwise;
`move_to_device(model, device)` moves a loaded model, or a Pipeline holding one.

This module does not import torch: `ctpipe.training.torch_net` does, when a network is
actually built, trained, loaded or moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ctpipe.errors import CtpipeError

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 (pyproject allows 1.5)

    def validate_data(
        _estimator: Any, /, X: Any = "no_validation", y: Any = "no_validation", **kw: Any
    ) -> Any:
        return _estimator._validate_data(X, y, **kw)


if TYPE_CHECKING:
    from ctpipe.training import torch_net

AUTO = "auto"
MAX_EMBEDDING_DIM = 16


class ModelWeightsError(CtpipeError):
    """Stored network weights are damaged or are not plain tensors; nothing was loaded."""


def one_hot_groups(x: np.ndarray, min_size: int = 2) -> list[tuple[int, int]]:
    """Column ranges `[start, stop)` that look like one-hot blocks in a training matrix.

    A block is a run of adjacent 0/1 columns in which every row has exactly one 1. The
    scan is greedy from the left; on OneHotEncoder output (fitted on these rows, so every
    column is used) it finds each feature's block exactly. Standardised numeric columns
    are never 0/1, except a constant zero one, which can only join a block harmlessly.
    """
    n_rows, n_columns = x.shape
    if n_rows == 0:
        return []
    binary = np.all((x == 0) | (x == 1), axis=0)
    groups: list[tuple[int, int]] = []
    start = 0
    while start < n_columns:
        stop = None
        total = np.zeros(n_rows)
        for column in range(start, n_columns):
            if not binary[column]:
                break
            total += x[:, column]
            if np.any(total > 1):
                break
            if np.all(total == 1):
                stop = column + 1
                break
        if stop is not None and stop - start >= min_size:
            groups.append((start, stop))
            start = stop
        else:
            start += 1
    return groups


def default_embedding_dim(categories: int) -> int:
    # fast.ai's rule of thumb, capped: tabular categoricals rarely need more.
    return int(min(MAX_EMBEDDING_DIM, max(1, round(1.6 * categories**0.56))))


class _TorchMLP(BaseEstimator):
    """Shared by the classifier and the regressor; the module docstring tells the design.

    Parameters
    ----------
    hidden_units, hidden_layers, dropout: the MLP after the inputs (ReLU, dropout after each).
    embedding_dim: dimensions per categorical embedding; None: by category count; 0: none.
    categorical_groups: "auto" (find the one-hot blocks), None, or (start, stop) ranges.
    learning_rate, weight_decay, batch_size: AdamW on shuffled mini-batches.
    max_epochs, patience, validation_fraction: early stopping on the last rows; 0: off.
    predict_batch_size: rows per forward pass when predicting.
    device: "auto" (a GPU when torch sees one), "cpu", "cuda" or "cuda:N".
    amp: mixed precision on a GPU (ignored on CPU).
    n_threads: torch CPU threads while fitting (None: torch's own setting).
    random_state: seed for initialisation, shuffling and dropout.

    Fitted attributes: `network_` (the torch module), `device_` (where it is now),
    `train_device_` (where it was trained, e.g. "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"),
    `amp_dtype_`, `categorical_groups_`, `embedding_dims_`, `n_iter_` (epochs run),
    `best_epoch_`, `loss_curve_`, `validation_loss_curve_`, `best_validation_loss_`, and
    `classes_` (classifier) or `y_mean_`/`y_scale_` (regressor).
    """

    def __init__(
        self,
        *,
        hidden_units: int = 128,
        hidden_layers: int = 2,
        dropout: float = 0.1,
        embedding_dim: int | None = None,
        categorical_groups: str | Sequence[tuple[int, int]] | None = AUTO,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 10,
        validation_fraction: float = 0.1,
        predict_batch_size: int = 8192,
        device: str = AUTO,
        amp: bool = True,
        n_threads: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self.categorical_groups = categorical_groups
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.predict_batch_size = predict_batch_size
        self.device = device
        self.amp = amp
        self.n_threads = n_threads
        self.random_state = random_state

    # ------------------------------------------------------------------ subclass hooks

    def _encode_target(self, y: Any) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    _classification = False

    # -------------------------------------------------------------------------- fitting

    def fit(self, X: Any, y: Any) -> _TorchMLP:
        """Train on (X, y); returns self. See the module docstring for early stopping."""
        from ctpipe.training import torch_net

        self._check_params()
        x, y = validate_data(self, X, y, dtype=np.float32, y_numeric=not self._classification)
        target = self._encode_target(y)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        groups, dims = self._layout(x)
        n_holdout = round(len(x) * self.validation_fraction)
        holdout = None
        if n_holdout >= 1 and len(x) - n_holdout >= 1:
            holdout = (x[-n_holdout:], target[-n_holdout:])
            x, target = x[:-n_holdout], target[:-n_holdout]
        device = torch_net.resolve_device(self.device, fallback=False)
        settings = torch_net.Settings(
            learning_rate=float(self.learning_rate),
            weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs),
            patience=int(self.patience),
            amp=bool(self.amp),
            seed=seed,
        )
        import torch

        with (
            torch_net.cpu_threads(self.n_threads),
            torch_net.deterministic(device),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(seed)
            network = self._new_network(groups, dims)
            history = torch_net.fit_network(
                network,
                np.ascontiguousarray(x),
                target,
                holdout,
                settings,
                device,
                self._classification,
            )
        self.network_ = network
        self.categorical_groups_ = groups
        self.embedding_dims_ = dims
        self.train_device_ = torch_net.describe_device(device)
        self.device_ = str(device)
        amp = torch_net.amp_dtype(device, bool(self.amp))
        self.amp_dtype_ = str(amp).removeprefix("torch.") if amp is not None else None
        self.n_iter_ = len(history.train_loss)
        self.best_epoch_ = history.best_epoch
        self.loss_curve_ = history.train_loss
        self.validation_loss_curve_ = history.validation_loss
        self.best_validation_loss_ = history.best_validation_loss
        return self

    def _check_params(self) -> None:
        positive = {
            "hidden_units": self.hidden_units,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "predict_batch_size": self.predict_batch_size,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.hidden_layers, int | np.integer) and self.hidden_layers >= 0):
            raise ValueError(f"hidden_layers must be an integer >= 0, got {self.hidden_layers!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}"
            )
        if self.embedding_dim is not None and (
            not isinstance(self.embedding_dim, int | np.integer) or self.embedding_dim < 0
        ):
            raise ValueError(
                f"embedding_dim must be None or an integer >= 0, got {self.embedding_dim!r}"
            )
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")

    def _layout(self, x: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
        if self.categorical_groups is None or self.embedding_dim == 0:
            return [], []
        if isinstance(self.categorical_groups, str):
            if self.categorical_groups != AUTO:
                raise ValueError(
                    f"categorical_groups must be 'auto', None or (start, stop) column ranges, "
                    f"got {self.categorical_groups!r}"
                )
            groups = one_hot_groups(x)
        else:
            groups = [(int(a), int(b)) for a, b in self.categorical_groups]
            taken: set[int] = set()
            for start, stop in groups:
                span = set(range(start, stop))
                if not (0 <= start < stop <= x.shape[1]) or span & taken:
                    raise ValueError(
                        f"categorical_groups: ({start}, {stop}) is not a column range of the "
                        f"{x.shape[1]} input columns, or overlaps another group"
                    )
                taken |= span
        dims = [
            int(self.embedding_dim)
            if self.embedding_dim is not None
            else default_embedding_dim(stop - start)
            for start, stop in groups
        ]
        return groups, dims

    def _new_network(self, groups: list[tuple[int, int]], dims: list[int]) -> torch_net.TabularMLP:
        from ctpipe.training import torch_net

        return torch_net.TabularMLP(
            n_features=int(self.n_features_in_),
            groups=groups,
            embedding_dims=dims,
            hidden_units=int(self.hidden_units),
            hidden_layers=int(self.hidden_layers),
            dropout=float(self.dropout),
            n_outputs=self._n_outputs(),
        )

    # ------------------------------------------------------------------------ inference

    def _raw(self, X: Any) -> np.ndarray:
        from ctpipe.training import torch_net

        check_is_fitted(self, "network_")
        x = validate_data(self, X, reset=False, dtype=np.float32)
        import torch

        # Not n_threads: that is the training step's share of its machine. A server sets
        # torch's thread count for itself (it is process-wide, and requests run concurrently).
        return torch_net.predict_raw(
            self.network_,
            np.ascontiguousarray(x),
            torch.device(self.device_),
            int(self.predict_batch_size),
            bool(self.amp),
        )

    # ---------------------------------------------------------------- device and pickle

    def to_device(self, device: str = AUTO) -> _TorchMLP:
        """Move the fitted network ("auto": a GPU when torch sees one, else CPU); returns self."""
        from ctpipe.training import torch_net

        check_is_fitted(self, "network_")
        target = torch_net.resolve_device(device, fallback=False)
        self.network_.to(target)
        self.device_ = str(target)
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: the default is __dict__ itself
        network = state.pop("network_", None)
        if network is not None:
            from ctpipe.training import torch_net

            payload = torch_net.dump_weights(network)
            state["_weights"] = payload
            state["_weights_sha256"] = hashlib.sha256(payload).hexdigest()
            state.pop("device_", None)  # where it lives is decided again at load time
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        payload = state.pop("_weights", None)
        recorded = state.pop("_weights_sha256", None)
        super().__setstate__(state)
        if payload is None:
            return
        name = type(self).__name__
        actual = hashlib.sha256(payload).hexdigest()
        if actual != recorded:
            raise ModelWeightsError(
                f"{name}: the stored network weights are corrupted: their SHA-256 is "
                f"{actual[:16]}…, but {str(recorded)[:16]}… was recorded when the model was "
                "saved. Refusing to load them."
            )
        from ctpipe.training import torch_net

        try:
            weights = torch_net.load_weights(payload)
        except Exception as exc:
            raise ModelWeightsError(
                f"{name}: the stored network weights are not a plain state dict of tensors "
                f"(torch.load with weights_only=True refused them: {exc}). Refusing to load them."
            ) from exc
        network = self._new_network(self.categorical_groups_, self.embedding_dims_)
        try:
            network.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ModelWeightsError(
                f"{name}: the stored weights do not fit the network its hyperparameters "
                f"describe: {exc}"
            ) from exc
        device = torch_net.resolve_device(self.device, fallback=True)
        network.to(device).eval()
        self.network_ = network
        self.device_ = str(device)


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    """Tabular MLP classifier (binary or multiclass, softmax output)."""

    _classification = True

    def _encode_target(self, y: Any) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class ({classes[0]!r})"
            )
        self.classes_ = classes
        return np.asarray(encoded, dtype=np.int64)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in `classes_` order."""
        logits = self._raw(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.asarray(np.log(self.predict_proba(X)))

    def predict(self, X: Any) -> np.ndarray:
        winners = self._raw(X).argmax(axis=1)  # first: it checks that the model is fitted
        return np.asarray(self.classes_[winners])


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    """Tabular MLP regressor (one target, trained on its z-score, MSE loss)."""

    def _encode_target(self, y: Any) -> np.ndarray:
        y = column_or_1d(y, warn=True).astype(np.float64)
        self.y_mean_ = float(y.mean())
        scale = float(y.std())
        self.y_scale_ = scale if scale > 0 else 1.0
        return np.asarray((y - self.y_mean_) / self.y_scale_, dtype=np.float32)

    def _n_outputs(self) -> int:
        return 1

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self._raw(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_)


def move_to_device(model: Any, device: str = AUTO) -> Any:
    """Move every torch MLP in `model` (an estimator or a sklearn Pipeline) to `device`.

    "auto" picks a GPU when torch sees one. Models without a torch step are returned
    untouched, and torch is not imported for them. Returns `model`.
    """
    for step in _steps(model):
        if isinstance(step, _TorchMLP):
            step.to_device(device)
    return model


def _steps(model: Any) -> list[Any]:
    steps = getattr(model, "steps", None)
    if steps is None:
        return [model]
    return [s for _, inner in steps for s in _steps(inner)]


def train_device(model: Any) -> str | None:
    """The device a model's torch MLP was trained on (e.g. "cuda:0 (NVIDIA H100 …)"), if any."""
    for step in _steps(model):
        recorded = getattr(step, "train_device_", None)
        if recorded is not None:
            return str(recorded)
    return None
