"""The gate fails closed: a champion that cannot score the test slice stops the run, for
each way that happens; `gate.on_champion_error: thresholds` is the explicit, loud opt-out.

(A tampered champion pickle is covered in tests/components, through the KFP component.)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from ctpipe import registry, stages
from ctpipe.config import Config
from ctpipe.errors import GateError, IntegrityError
from ctpipe.pipelines.in_process import run_in_process


def _dropping(config: Config, column: str) -> Config:
    return config.replace(features=dataclasses.replace(config.features, drop=(column,)))


def test_a_champion_that_needs_a_dropped_column_fails_the_run(
    champion_config: Config, tmp_path: Path
) -> None:
    config = _dropping(champion_config, "num_0")
    with pytest.raises(GateError, match="champion v1 could not score the test slice"):
        run_in_process(config, tmp_path / "v2", infra=False)
    assert registry.champion(config).version == "1"


def test_a_champion_that_cannot_be_downloaded_fails_the_run(
    champion_config: Config, tmp_path: Path
) -> None:
    stored = [p for p in Path(champion_config.state_dir, "mlartifacts").rglob(registry.PICKLE_FILE)]
    assert stored
    for pickle in stored:
        shutil.rmtree(pickle.parent)
    with pytest.raises(GateError, match="champion v1 could not score the test slice"):
        run_in_process(champion_config, tmp_path / "v2", infra=False)
    assert registry.champion(champion_config).version == "1"


def test_thresholds_on_champion_error_blesses_loudly(
    champion_config: Config, tmp_path: Path
) -> None:
    config = _dropping(champion_config, "num_0")
    config = config.replace(gate=dataclasses.replace(config.gate, on_champion_error="thresholds"))
    run = run_in_process(config, tmp_path / "v2", infra=False)
    assert run.evaluation.blessed and run.evaluation.decision.comparison is None
    assert run.evaluation.champion_error and "champion v1" in run.evaluation.champion_error
    assert "NOT COMPARED WITH THE CHAMPION" in run.evaluation.summary()
    assert 'style="color:#c00' in run.evaluation.markdown()
    assert any("NOT COMPARED" in reason for reason in run.evaluation.decision.reasons)
    # ... and the signed blessing carries it too; v2 is the challenger, v1 still serves.
    ref = registry.get_alias(config, registry.CHALLENGER)
    assert ref is not None and ref.version == "2"
    assert registry.champion(config).version == "1"
    record = json.loads(ref.tags["ctpipe.blessing"])
    assert "champion v1" in record["evidence"]["champion_error"]


def test_a_model_changed_between_steps_is_not_loaded(
    champion_config: Config, tmp_path: Path
) -> None:
    """Every step that loads another step's model checks it against that step's record."""
    import joblib

    run = tmp_path / "v1"  # the champion's run folder: its slices and schema
    model = joblib.load(run / "challenger")
    path = str(tmp_path / "handed-on")
    metadata = {"model_sha256": stages.dump_step_model(model, path)}
    assert stages.load_step_model(path, metadata) is not None  # as written: loads
    Path(path).write_bytes(Path(path).read_bytes() + b"\0")
    files = {name: str(run / name) for name in ("test", "schema", "window")}
    steps = {
        "evaluate": lambda: stages.evaluate(
            champion_config, path, metadata, files["test"], files["schema"],
            str(tmp_path / "evaluation"), str(tmp_path / "champion"),
        ),
        "final_refit": lambda: stages.final_refit(
            champion_config, path, metadata, files["schema"], files["window"], files["test"],
            str(tmp_path / "final"),
        ),
        "infra_validate": lambda: stages.save_challenger(
            path, metadata, files["test"], files["schema"], str(tmp_path / "served")
        ),
    }  # fmt: skip
    for name, step in steps.items():
        with pytest.raises(IntegrityError, match="changed between steps"):
            step()
        assert not (tmp_path / "evaluation").exists(), name
    with pytest.raises(IntegrityError, match="recorded no model_sha256"):
        stages.load_step_model(path, {})
