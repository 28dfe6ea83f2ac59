"""Compile the pipeline to the YAML that users upload to the Kubeflow dashboard."""

from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).parent / "compiled"
COMPILED_PATH = COMPILED_DIR / "continuous_training.yaml"


def compile_pipeline(path: str | Path = COMPILED_PATH) -> Path:
    from kfp import compiler

    from ctpipe.pipelines.continuous_training import continuous_training

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(continuous_training, package_path=str(target))
    return target
