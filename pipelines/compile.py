"""Compile the pipeline to the YAML that users upload to the Kubeflow dashboard.

    python -m ctpipe.pipelines.compile                       # both checked-in files
    python -m ctpipe.pipelines.compile --profile gpu --registry ghcr.io/me --tag 1.2.0 -o gpu.yaml

`ctpipe compile` takes the same options. Both honour CTPIPE_IMAGE_REGISTRY and CTPIPE_IMAGE_TAG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMPILED_DIR = Path(__file__).parent / "compiled"
COMPILED_PATH = COMPILED_DIR / "continuous_training.yaml"
COMPILED_GPU_PATH = COMPILED_DIR / "continuous_training-gpu.yaml"
COMPILED_PATHS = {"cpu": COMPILED_PATH, "gpu": COMPILED_GPU_PATH}


def compile_pipeline(
    path: str | Path = COMPILED_PATH,
    profile: str = "cpu",
    registry: str | None = None,
    tag: str | None = None,
) -> Path:
    """Write the pipeline for `profile` to `path`; registry and tag default to
    CTPIPE_IMAGE_REGISTRY and CTPIPE_IMAGE_TAG, then to none and the ctpipe version."""
    from kfp import compiler

    from ctpipe.pipelines.continuous_training import build

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build(profile, registry=registry, tag=tag)
    compiler.Compiler().compile(pipeline, package_path=str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ctpipe.pipelines.compile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--profile",
        choices=("cpu", "gpu", "all"),
        default="all",
        help="which pipeline to write (default: both checked-in files)",
    )
    parser.add_argument("--registry", help="image registry (default: $CTPIPE_IMAGE_REGISTRY)")
    parser.add_argument("--tag", help="image tag (default: $CTPIPE_IMAGE_TAG or the version)")
    parser.add_argument("-o", "--output", help="where to write (one profile only)")
    args = parser.parse_args(argv)
    profiles = list(COMPILED_PATHS) if args.profile == "all" else [args.profile]
    if args.output and len(profiles) > 1:
        parser.error("--output needs --profile cpu or --profile gpu")
    for profile in profiles:
        path = args.output or COMPILED_PATHS[profile]
        target = compile_pipeline(path, profile, registry=args.registry, tag=args.tag)
        print(f"wrote {target} ({profile})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
