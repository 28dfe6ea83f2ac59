"""A rollout that fails takes the champion alias back, and the run's summary tells the truth.

Found in issue 15: `deploy.apply: always` on a machine without a cluster moved the champion
alias (6 -> 9) while the summary said "nothing was promoted"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.deploy import DeployError
from ctpipe.pipelines.in_process import run_in_process
from ctpipe.pipelines.local import LocalRun, summary


def test_a_failed_deploy_moves_the_alias_back(
    champion_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # An immediate rollout: register moves the champion and the deploy step applies it
    # (under the default progressive rollout the controller applies, tested in tests/rollout).
    deploy = champion_config.deploy
    config = champion_config.replace(
        deploy=dataclasses.replace(
            deploy,
            apply="always",
            rollout=dataclasses.replace(deploy.rollout, strategy="immediate"),
        )
    )
    with pytest.raises(DeployError, match=r"no cluster is reachable.*champion alias is back to v1"):
        run_in_process(config, tmp_path / "v2", infra=False)
    assert registry.champion(config).version == "1"
    assert registry.version_ref(registry.client(config), config.model_name, "2")  # kept

    failed = LocalRun(ok=False, run_dir=tmp_path, seconds=1.0, failed_step="deploy")
    failed.registered_version = "2"
    said = summary(failed, config)
    assert "v2 was registered but not promoted; the champion is v1" in said
    assert "nothing was promoted" not in said


def test_undo_of_a_first_champion_unsets_the_alias(champion_config: Config) -> None:
    assert registry.undo_promotion(champion_config, "1") is None
    assert registry.champion(champion_config) is None
    # Nothing moves for a version that is not the champion (another run promoted since).
    assert registry.undo_promotion(champion_config, "7") is None
