"""The network behind the torch MLP estimators, and its training loop.

Imported only when a torch model is fitted, loaded or moved: everything else in ctpipe
stays free of torch (importing it costs seconds in every fresh pipeline step).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset


class TabularMLP(nn.Module):
    """Numeric columns plus one embedding per categorical feature, then an MLP.

    A categorical feature arrives one-hot encoded (the ColumnTransformer's output), as a
    block of columns `[start, stop)`. Its embedding is a bias-free linear map of that block:
    for a one-hot row this selects one row of the weight matrix, which is exactly an
    embedding lookup. A row with no 1 in the block (a category the encoder never saw, when
    it has no "infrequent" column) gets the zero vector rather than some other category's.
    """

    numeric_index: torch.Tensor  # a buffer: moves with the module

    def __init__(
        self,
        n_features: int,
        groups: list[tuple[int, int]],
        embedding_dims: list[int],
        hidden_units: int,
        hidden_layers: int,
        dropout: float,
        n_outputs: int,
    ) -> None:
        super().__init__()
        grouped = {c for start, stop in groups for c in range(start, stop)}
        numeric = [c for c in range(n_features) if c not in grouped]
        self.groups = [(int(a), int(b)) for a, b in groups]
        self.all_numeric = not self.groups
        # Not in the state dict: it follows from the layout, which the estimator stores.
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long), False)
        embeddings = [
            nn.Linear(stop - start, dim, bias=False)
            for (start, stop), dim in zip(self.groups, embedding_dims, strict=True)
        ]
        for embedding in embeddings:
            nn.init.normal_(embedding.weight)  # nn.Embedding's init: on the scale of z-scores
        self.embeddings = nn.ModuleList(embeddings)
        width = len(numeric) + sum(embedding_dims)
        layers: list[nn.Module] = []
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_units), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_units
        layers.append(nn.Linear(width, n_outputs))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_numeric:
            return self.body(x)
        parts = [x.index_select(1, self.numeric_index)]
        parts += [
            embedding(x[:, start:stop])
            for (start, stop), embedding in zip(self.groups, self.embeddings, strict=True)
        ]
        return self.body(torch.cat(parts, dim=1))


def resolve_device(spec: str, *, fallback: bool) -> torch.device:
    """ "auto" -> cuda when torch sees a GPU, else cpu.

    An explicit "cuda" without a GPU is an error when training (`fallback=False`) and
    becomes cpu when loading, so that a model trained on a GPU still loads on a CPU server.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        if fallback:
            return torch.device("cpu")
        raise ValueError(
            f"device={spec!r} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); use device='auto' or 'cpu'"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype on a GPU: bfloat16 where supported (no loss scaling), else float16."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def cpu_threads(n_threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the duration (it is process-wide state)."""
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU, restoring the caller's setting afterwards.

    Not on CUDA: there it needs CUBLAS_WORKSPACE_CONFIG set before cuBLAS starts, and
    AMP training is not bitwise repeatable anyway.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@dataclass
class Settings:
    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    amp: bool
    seed: int


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 when training stopped before the first epoch ended
    best_validation_loss: float | None = None


def _loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int, pin: bool
) -> DataLoader[Any]:
    dataset = TensorDataset(x, y)
    # Whole batches are gathered by one fancy index: collating rows one by one is far
    # slower. The sampler's own generator keeps the global RNG untouched.
    order: Any = (
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        if shuffle
        else range(len(dataset))
    )
    batches = BatchSampler(order, batch_size=batch_size, drop_last=False)
    return DataLoader(dataset, sampler=batches, batch_size=None, pin_memory=pin)


def fit_network(
    network: TabularMLP,
    x: np.ndarray,
    y: np.ndarray,
    holdout: tuple[np.ndarray, np.ndarray] | None,
    settings: Settings,
    device: torch.device,
    classification: bool,
) -> History:
    """Train in place (AdamW), stopping early on the holdout's loss; keeps the best weights."""
    network.to(device)
    y_dtype = torch.long if classification else torch.float32
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classification else nn.MSELoss()
    pin = device.type == "cuda"
    train = _loader(
        torch.from_numpy(x),
        torch.from_numpy(y).to(y_dtype),
        settings.batch_size,
        True,
        settings.seed,
        pin,
    )
    held = (
        _loader(
            torch.from_numpy(holdout[0]),
            torch.from_numpy(holdout[1]).to(y_dtype),
            max(settings.batch_size, 4096),
            False,
            0,
            pin,
        )
        if holdout is not None
        else None
    )
    dtype = amp_dtype(device, settings.amp)
    # float16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = torch.optim.AdamW(
        network.parameters(),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
        fused=device.type == "cuda",  # one kernel per step instead of one per tensor
    )

    def outputs(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = network(batch)
        out = out.float()
        return out if classification else out.squeeze(1)

    history = History()
    best_state: dict[str, torch.Tensor] | None = None
    waited = 0
    for epoch in range(1, settings.max_epochs + 1):
        network.train()
        total = torch.zeros((), device=device)
        for xb, yb in train:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            loss = loss_fn(outputs(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach() * len(xb)
        history.train_loss.append(float(total.item()) / len(x))  # one sync per epoch
        if held is None:
            history.best_epoch = epoch
            continue
        loss_value = evaluate_loss(network, held, outputs, loss_fn, device)
        history.validation_loss.append(loss_value)
        if history.best_validation_loss is None or loss_value < history.best_validation_loss:
            history.best_validation_loss = loss_value
            history.best_epoch = epoch
            best_state = copy.deepcopy(network.state_dict())
            waited = 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return history


def evaluate_loss(
    network: nn.Module, batches: DataLoader[Any], outputs: Any, loss_fn: nn.Module, device: Any
) -> float:
    network.eval()
    total = torch.zeros((), device=device)
    rows = 0
    with torch.inference_mode():
        for xb, yb in batches:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            total += loss_fn(outputs(xb), yb) * len(xb)
            rows += len(xb)
    return float(total.item()) / max(rows, 1)


def predict_raw(
    network: TabularMLP, x: np.ndarray, device: torch.device, batch_size: int, amp: bool
) -> np.ndarray:
    """Network outputs (logits, or the scaled regression value) as float32, batch by batch."""
    dtype = amp_dtype(device, amp)
    network.eval()
    source = torch.from_numpy(x)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = source[start : start + batch_size]
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                out = network(batch)
            chunks.append(out.float().cpu())
    return torch.cat(chunks).numpy()


def dump_weights(network: nn.Module) -> bytes:
    """The state dict (tensors only, on CPU) in torch's zip format."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_weights(payload: bytes) -> dict[str, torch.Tensor]:
    """Tensors only: `weights_only=True` refuses any pickled object that is not plain data."""
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise TypeError(f"expected a dict of tensors, got {type(state).__name__}")
    return state


def torch_version() -> str:
    return str(torch.__version__)
