"""Throughput of the torch MLP candidate (ctpipe.training.torch_mlp): CPU against GPU.

The data is ctpipe's synthetic table passed through ctpipe's own ColumnTransformer, so the
network sees what it sees in the pipeline: standardised numeric columns and one-hot
categoricals (which it embeds). For each batch size from 256 to 8192 it measures

  train    samples/s = rows x epochs / seconds of fit()  (data transfer included, no early stop)
  predict  samples/s = rows / seconds of predict_proba()  (best of --repeats)

on the CPU (float32, torch's default thread count) and, when torch sees a GPU, on the GPU
with AMP off (float32) and on (bfloat16, or float16 with loss scaling), and prints each
GPU/CPU ratio, all measured in this one run. A warm-up fit runs on each device first.

    python bench/train_torch.py [--quick] [--rows N] [--epochs E]

It needs numpy, pyarrow, scikit-learn and torch, and no network; from a checkout without
ctpipe installed: PYTHONPATH=. python3 bench/train_torch.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout

from ctpipe import config as config_module
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_preprocessor
from ctpipe.training.torch_mlp import TorchMLPClassifier

BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class Setup:
    name: str  # column heading
    device: str
    amp: bool


@dataclass(frozen=True)
class Result:
    train: float  # samples/s
    predict: float


def features(rows: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, str]:
    """The transformed matrix and labels, as the estimator sees them inside the model."""
    table = synthetic.generate(rows, seed=seed, numeric=16, categorical=4)
    config = config_module.from_dict(
        {"task": "classification", "target": "label", "timestamp": "event_time"}
    )
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    x = build_preprocessor(schema).fit_transform(frame[schema.feature_names], frame["label"])
    note = (
        f"{len(schema.numeric_features)} numeric + {len(schema.categorical_features)} "
        f"categorical features -> {x.shape[1]} columns"
    )
    return np.ascontiguousarray(x, dtype=np.float32), frame["label"].to_numpy(), note


def estimator(setup: Setup, batch: int, epochs: int, hidden: int) -> TorchMLPClassifier:
    return TorchMLPClassifier(
        hidden_units=hidden,
        batch_size=batch,
        predict_batch_size=batch,
        max_epochs=epochs,
        validation_fraction=0.0,  # a fixed amount of work: no early stopping
        device=setup.device,
        amp=setup.amp,
        random_state=0,
    )


def measure(
    setup: Setup, x: np.ndarray, y: np.ndarray, epochs: int, repeats: int, hidden: int
) -> dict[int, Result]:
    # Warm-up: CUDA context, cuBLAS handles, kernel selection, thread pools.
    estimator(setup, 1024, 1, hidden).fit(x[:8192], y[:8192]).predict_proba(x[:8192])
    out = {}
    for batch in BATCH_SIZES:
        model = estimator(setup, batch, epochs, hidden)
        started = time.perf_counter()
        model.fit(x, y)
        train = len(x) * epochs / (time.perf_counter() - started)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict_proba(x)  # returns numpy: the GPU has finished
            best = min(best, time.perf_counter() - started)
        out[batch] = Result(train, len(x) / best)
        print(
            f"  {setup.name:<12} batch {batch:>5}: train {train:>12,.0f}/s  predict {len(x) / best:>13,.0f}/s",
            flush=True,
        )
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> tuple[list[Setup], list[str]]:
    import sklearn
    import torch

    lines = [
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA build: {torch.version.cuda or 'none'}), numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}",
        f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"torch threads {torch.get_num_threads()}",
    ]
    setups = [Setup("cpu fp32", "cpu", False)]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        lines.append(
            f"gpu: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, capability {props.major}.{props.minor}; "
            f"TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}; "
            "pinned-memory batches"
        )
        setups += [Setup("cuda fp32", "cuda", False), Setup(f"cuda amp/{amp}", "cuda", True)]
    else:
        reason = "torch was built without CUDA" if torch.version.cuda is None else "no GPU visible"
        lines.append(f"gpu: none ({reason}): GPU columns and ratios are skipped")
    return setups, lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k rows, 1 epoch, 1 repeat")
    parser.add_argument("--rows", type=int, help="default 200000 (10000 with --quick)")
    parser.add_argument("--epochs", type=int, help="default 2 (1 with --quick)")
    parser.add_argument("--repeats", type=int, help="predict repeats, default 3 (1 with --quick)")
    parser.add_argument("--hidden-units", type=int, default=128, help="default 128 (the family's)")
    parser.add_argument("--cpu-threads", type=int, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.cpu_threads:
        import torch

        torch.set_num_threads(args.cpu_threads)
    rows = args.rows or (10_000 if args.quick else 200_000)
    epochs = args.epochs or (1 if args.quick else 2)
    repeats = args.repeats or (1 if args.quick else 3)

    setups, lines = environment()
    x, y, note = features(rows)
    for line in lines:
        print(line)
    probe = estimator(setups[0], 256, 1, args.hidden_units).fit(x[:2000], y[:2000])
    params = sum(int(p.numel()) for p in probe.network_.parameters())
    print(
        f"data: {rows:,} rows; {note}; embeddings {probe.embedding_dims_} for one-hot blocks "
        f"{probe.categorical_groups_}"
    )
    print(
        f"network: {probe.hidden_layers} x {args.hidden_units} hidden, {params:,} parameters; "
        f"{epochs} epoch(s) per fit, predict best of {repeats}"
    )

    results: dict[str, dict[int, Result]] = {}
    for setup in setups:
        results[setup.name] = measure(setup, x, y, epochs, repeats, args.hidden_units)

    print()
    print(table("train samples/s", setups, results, lambda r: r.train))
    print()
    print(table("predict samples/s", setups, results, lambda r: r.predict))
    if len(setups) > 1:
        print()
        print(ratios(setups, results))
    else:
        print("\nGPU/CPU ratio: n/a (no GPU)")


def table(title: str, setups: list[Setup], results: dict[str, dict[int, Result]], pick: Any) -> str:
    head = f"{title:<20}" + "".join(f"{s.name:>16}" for s in setups)
    rows = [head, "-" * len(head)]
    for batch in BATCH_SIZES:
        rows.append(
            f"batch {batch:<14}"
            + "".join(f"{pick(results[s.name][batch]):>16,.0f}" for s in setups)
        )
    return "\n".join(rows)


def ratios(setups: list[Setup], results: dict[str, dict[int, Result]]) -> str:
    cpu = setups[0].name
    gpus = setups[1:]
    head = f"{'GPU/CPU ratio':<20}" + "".join(
        f"{'train ' + g.name.removeprefix('cuda '):>18}{'predict ' + g.name.removeprefix('cuda '):>18}"
        for g in gpus
    )
    rows = [head, "-" * len(head)]
    for batch in BATCH_SIZES:
        base = results[cpu][batch]
        cells = ""
        for g in gpus:
            r = results[g.name][batch]
            cells += f"{r.train / base.train:>17.2f}x{r.predict / base.predict:>17.2f}x"
        rows.append(f"batch {batch:<14}" + cells)
    best = max(
        (results[g.name][b].train / results[cpu][b].train, g.name, b)
        for g in gpus
        for b in BATCH_SIZES
    )
    rows.append(f"best training ratio: {best[0]:.2f}x ({best[1]}, batch {best[2]})")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
