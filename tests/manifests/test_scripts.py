"""The bootstrap scripts: lint-clean, executable, and pinned to releases."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.manifests.conftest import ROOT, tool

SHELL_SCRIPTS = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci/run"]


def test_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian package `shellcheck`; .ci/run installs it)")
    result = subprocess.run(
        [shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_executable_bash(path: os.PathLike[str]) -> None:
    assert os.access(path, os.X_OK)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_cluster_up_pins_its_releases() -> None:
    text = (ROOT / "scripts/cluster-up.sh").read_text()
    pins = dict(re.findall(r'^(\w+_VERSION)="\$\{\w+:-([^}]+)\}"', text, re.M))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["KFP_VERSION"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins["KSERVE_VERSION"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins["CERT_MANAGER_VERSION"])
    assert "env/platform-agnostic?ref=${KFP_VERSION}" in text
    assert "skaffold run -p kind" in text
