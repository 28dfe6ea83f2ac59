"""The container tier: the images built from images/Dockerfile, one target each (podman, or
docker where an engine answers), and podman's Docker-compatible socket for kfp.local's
DockerRunner.

Skipped, with the reason, where podman is not installed or cannot run containers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
image_builder = load_script("images")  # scripts/images.py: what `make images` runs

INSTALL_HINT = "as root: apt-get install -y podman runc debootstrap"
REGISTRY = "localhost"  # what podman calls images built here


def podman(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal as the tier goes (build times, overheads), not captured."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[containers] {line}")


@pytest.fixture(scope="session")
def podman_ready() -> None:
    if shutil.which("podman") is None:
        pytest.skip(f"podman is not installed ({INSTALL_HINT})")
    image_builder.podman_environment()  # CONTAINERS_CONF: this sandbox's settings
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("podman info did not answer within 60 s")
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class Images:
    base: str
    serving: str
    tag: str


@pytest.fixture(scope="session")
def built_images(
    podman_ready: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Images:
    """`make images` for the CPU roles: a no-op when the layers are cached, a few seconds
    after a code change, minutes on a cold machine."""
    log = tmp_path_factory.mktemp("images") / "build.log"
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "images.py"), "--engine", "podman",
             "--roles", "base,serving"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False,
        )  # fmt: skip
    text = log.read_text()
    assert result.returncode == 0, f"make images failed; the end of {log}:\n{text[-4000:]}"
    report(request, f"images built in {time.monotonic() - started:.1f}s (log: {log})")
    tag = image_builder.version()
    return Images(
        base=image_builder.reference("base", REGISTRY, tag),
        serving=image_builder.reference("serving", REGISTRY, tag),
        tag=tag,
    )


@pytest.fixture(scope="session")
def docker_host(podman_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """podman's Docker-compatible API on a unix socket, for kfp.local's DockerRunner."""
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    url = f"unix://{socket}"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("podman system service did not open its socket")
            time.sleep(0.1)
        yield url
    finally:
        service.terminate()
        service.wait(timeout=30)


def env_flags(env: dict[str, Any]) -> list[str]:
    return [flag for name, value in env.items() for flag in ("-e", f"{name}={value}")]
