"""Fixtures for the unit tests that need a registry with a champion in it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ctpipe.config import Config
from ctpipe.pipelines.in_process import run_in_process
from tests.conftest import make_config


@pytest.fixture
def champion_config(tmp_path: Path) -> Config:
    """A config whose registry holds a blessed champion v1 (one cheap candidate)."""
    config = make_config(tmp_path / "state")
    config = config.replace(
        search=dataclasses.replace(config.search, candidates=config.search.candidates[:1])
    )
    run = run_in_process(config, tmp_path / "v1", infra=False)
    assert run.registration is not None and run.registration.version == "1"
    return config
