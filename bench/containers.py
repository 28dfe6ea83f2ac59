"""The container path's costs: image builds (cold, unchanged, after a code change) and what
running a step in a container adds over a plain process.

    python bench/containers.py            # warm builds and per-step overhead (about a minute)
    python bench/containers.py --cold     # plus a cold build in a throwaway podman store (minutes)

Every number is measured in this run. The ratios compare a rebuild after a one-line code
change with a no-change build (the layering target: seconds, not minutes) and a step's
start in the base image with the same start as a process on this machine. Needs podman
(or docker) and the images' build inputs; builds go through scripts/images.py, exactly
as `make images` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", ".dockerignore")
TREES = ("ctpipe", "components", "pipelines", "images", "scripts")
# What a step does first: import the stage functions (and with them numpy, pyarrow, sklearn).
STEP_START = "import ctpipe.stages"


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def build(root: Path, env: dict[str, str] | None = None) -> float:
    script = root / "scripts" / "images.py"
    return timed([sys.executable, str(script), "--roles", "base,serving"], env=env, cwd=root)


def scratch_copy(into: Path) -> Path:
    """The build inputs in a scratch folder, so that a code change can be made there."""
    for name in CONTEXT:
        shutil.copy2(ROOT / name, into / name)
    for tree in TREES:
        shutil.copytree(
            ROOT / tree, into / tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return into


def cold_build(env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory(prefix="ctpipe-cold-", dir="/var/tmp") as tmp:
        conf = Path(tmp) / "storage.conf"
        conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/graph"\nrunroot = "{tmp}/run"\n'
        )
        seconds = build(ROOT, {**env, "CONTAINERS_STORAGE_CONF": str(conf)})
        subprocess.run(
            ["podman", "system", "reset", "--force"],
            env={**env, "CONTAINERS_STORAGE_CONF": str(conf)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return seconds


def step_starts(image: str, repeats: int, env: dict[str, str]) -> tuple[float, float]:
    """Median seconds to start a step: in the image, and as a process here."""
    container = [
        "podman", "run", "--rm", "--network", "host", image, "python", "-c", STEP_START,
    ]  # fmt: skip
    process = [sys.executable, "-c", STEP_START]
    timed(container, env)  # first start pays for mounting the image's layers
    inside = statistics.median(timed(container, env) for _ in range(repeats))
    here = statistics.median(timed(process, env) for _ in range(repeats))
    return inside, here


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also time a build from nothing")
    parser.add_argument("--repeats", type=int, default=5, help="starts timed per side")
    args = parser.parse_args()
    if shutil.which("podman") is None:
        print("podman is not installed (as root: apt-get install -y podman runc debootstrap)")
        return 1
    env = {**os.environ}
    env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "podman" / "containers.conf"))
    from ctpipe import __version__

    image = f"localhost/ctpipe/base:{__version__}"  # what podman calls scripts/images.py's build
    print("bench/containers.py: image builds and per-step overhead (podman)", flush=True)
    if args.cold:
        print(f"  cold build (empty store, stand-in base included): {cold_build(env):.1f}s")
    first = build(ROOT, env)  # brings the store up to date with this tree
    unchanged = build(ROOT, env)
    print(f"  build, nothing changed:   {unchanged:6.1f}s   (first call: {first:.1f}s)")
    with tempfile.TemporaryDirectory(prefix="ctpipe-build-") as tmp:
        copy = scratch_copy(Path(tmp))
        with (copy / "ctpipe" / "__init__.py").open("a") as handle:
            handle.write(f"# bench {time.time_ns()}\n")
        changed = build(copy, env)
    print(f"  build after a code change: {changed:6.1f}s")
    print(f"  ratio code change / unchanged: {changed / unchanged:.2f}")
    inside, here = step_starts(image, args.repeats, env)
    print(f"  step start ({STEP_START!r}), median of {args.repeats}:")
    print(f"    in {image}: {inside:.2f}s   here: {here:.2f}s")
    print(
        f"    overhead per step: {inside - here:+.2f}s   ratio container / process: {inside / here:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
