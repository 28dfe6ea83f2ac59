"""MLflow registry: aliases, the promotion race, and checksum-verified loading (real sqlite MLflow)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.errors import RegistryError
from ctpipe.features import build_model
from ctpipe.training.families import build_estimator
from tests.conftest import run_fresh


def _model(config: Config) -> tuple[Any, Any]:
    table = synthetic.generate(600, seed=3)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    model = build_model(schema, build_estimator("linear", "classification", {}, seed=0))
    model.fit(frame[schema.feature_names], frame["label"])
    return model, frame[schema.feature_names]


def _register(config: Config, model: Any, example: Any) -> str:
    saved = registry.save_model_dir(model, example.head(3), Path(tempfile.mkdtemp()) / "model")
    _, version = registry.log_and_register(
        config,
        saved,
        run_name="test",
        params={"family": "linear"},
        metrics={"test_roc_auc": 0.8},
        tags={registry.TAG_KFP_RUN_ID: "run-1"},
        texts={"note.md": "hello"},
    )
    return version


def test_promote_moves_champion_and_keeps_previous(small_config: Config) -> None:
    model, example = _model(small_config)
    assert registry.champion(small_config) is None
    v1 = _register(small_config, model, example)
    assert registry.champion(small_config) is None, "registering alone must not promote"
    assert registry.promote(small_config, v1, expected_champion=None) is None
    v2 = _register(small_config, model, example)
    assert registry.promote(small_config, v2, expected_champion=v1) == v1
    assert registry.champion(small_config).version == v2
    assert registry.get_alias(small_config, registry.PREVIOUS).version == v1


def test_promote_refuses_when_the_champion_moved(small_config: Config) -> None:
    model, example = _model(small_config)
    v1 = _register(small_config, model, example)
    registry.promote(small_config, v1, expected_champion=None)
    v2 = _register(small_config, model, example)
    with pytest.raises(RegistryError, match="moved from no champion to v1"):
        registry.promote(small_config, v2, expected_champion=None)
    assert registry.champion(small_config).version == v1


def test_load_verifies_the_checksum(small_config: Config) -> None:
    model, example = _model(small_config)
    version = _register(small_config, model, example)
    registry.promote(small_config, version, expected_champion=None)
    ref = registry.champion(small_config)
    loaded = registry.load_model(ref)
    assert (loaded.predict_proba(example) == model.predict_proba(example)).all()

    # Tamper with the stored pickle: the next load must refuse it.
    pickles = list(Path(small_config.state_dir, "mlartifacts").rglob(registry.PICKLE_FILE))
    assert pickles, "the model was not stored under state_dir/mlartifacts"
    for path in pickles:
        path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(RegistryError, match="the artifact was changed"):
        registry.load_model(ref)


def test_models_without_a_blessing_are_refused(small_config: Config) -> None:
    ref = registry.ModelRef("m", "1", None, "models:/m/1", tags={})
    with pytest.raises(RegistryError, match=r"no signed blessing \(ctpipe\.blessing tag\)"):
        registry.load_model(ref)


def test_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.tracking_uri(str(tmp_path)) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    with pytest.raises(RegistryError, match="MLFLOW_TRACKING_URI is not set"):
        registry.tracking_uri("s3://bucket/state")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert registry.tracking_uri("s3://bucket/state") == "http://mlflow:5000"


def test_rollback_swaps_champion_and_previous(small_config: Config) -> None:
    model, example = _model(small_config)
    with pytest.raises(RegistryError, match="no 'previous' version"):
        registry.rollback(small_config)
    v1 = _register(small_config, model, example)
    registry.promote(small_config, v1, expected_champion=None)
    v2 = _register(small_config, model, example)
    registry.promote(small_config, v2, expected_champion=v1)
    assert registry.rollback(small_config) == (v1, v2)
    assert registry.champion(small_config).version == v1
    assert registry.get_alias(small_config, registry.PREVIOUS).version == v2
    assert registry.rollback(small_config) == (v2, v1)  # and back


def _saved(tmp_path: Path, config: Config) -> tuple[Path, str, Any, Any]:
    model, example = _model(config)
    target = tmp_path / "model"
    return target, registry.save_model_dir(model, example.head(5), target).sha256, model, example


def test_a_model_directory_loads_without_mlflow(small_config: Config, tmp_path: Path) -> None:
    """The predictor reads the MLmodel file itself: a pod serving a storageUri starts
    without paying MLflow's import."""
    import json

    target, sha, model, example = _saved(tmp_path, small_config)
    example.head(5).to_parquet(tmp_path / "rows.parquet")
    script = (
        "import json, sys; import pandas as pd\n"
        "from ctpipe.serving.source import ModelSource\n"
        "loaded = ModelSource(sys.argv[1], sha256=sys.argv[2]).load()\n"
        "proba = loaded.model.predict_proba(pd.read_parquet(sys.argv[3]))\n"
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules, 'names': loaded.signature.names,\n"
        "                  'proba': proba.tolist(), 'version': loaded.version}))\n"
    )
    found = json.loads(run_fresh(script, str(target), sha, str(tmp_path / "rows.parquet"))[-1])
    assert found["mlflow"] is False, "loading a model directory imported mlflow"
    assert found["names"] == list(example.columns)
    assert found["proba"] == model.predict_proba(example.head(5)).tolist()
    assert found["version"].startswith("sha-")


def test_a_model_directory_in_another_format_is_refused(
    small_config: Config, tmp_path: Path
) -> None:
    target, sha, _, _ = _saved(tmp_path, small_config)
    mlmodel = target / "MLmodel"
    mlmodel.write_text(
        mlmodel.read_text().replace(
            "serialization_format: cloudpickle", "serialization_format: skops"
        )
    )
    with pytest.raises(RegistryError, match="serialization_format 'skops'"):
        registry.load_model_dir(target, sha, "challenger")
    mlmodel.unlink()
    with pytest.raises(RegistryError, match="MLmodel does not exist; not an MLflow model"):
        registry.load_model_dir(target, sha, "challenger")


def test_registering_a_saved_directory_never_loads_the_model(
    small_config: Config, tmp_path: Path
) -> None:
    """register logs the directory infra validation served, byte for byte, and so needs
    neither scikit-learn nor the model (seconds of import and unpickling per run)."""
    import json

    model, example = _model(small_config)
    saved = registry.save_model_dir(model, example.head(3), tmp_path / "served")
    script = (
        "import json, sys\n"
        "from ctpipe import registry\n"
        "from ctpipe.config import from_dict\n"
        "config = from_dict(json.loads(sys.argv[1]))\n"
        "saved = registry.SavedModel.from_metadata(sys.argv[2], json.loads(sys.argv[3]))\n"
        "_, version = registry.log_and_register(config, saved, run_name='t', params={}, metrics={},\n"
        "                                       tags={}, texts={})\n"
        "print(json.dumps({'version': version, 'sklearn': 'sklearn' in sys.modules}))\n"
    )
    output = run_fresh(
        script, json.dumps(small_config.to_dict()), saved.path, json.dumps(saved.metadata())
    )
    found = json.loads(output[-1])
    assert found == {"version": "1", "sklearn": False}
    registry.promote(small_config, "1", expected_champion=None)
    ref = registry.champion(small_config)
    assert ref.tags[registry.TAG_MODEL_SHA256] == saved.sha256
    stored = registry.download_model(ref)
    for name in ("model.pkl", "input_example.json"):
        assert (stored / name).read_bytes() == (tmp_path / "served" / name).read_bytes()
    np.testing.assert_array_equal(
        registry.load_model(ref).predict_proba(example), model.predict_proba(example)
    )


def test_every_alias_move_is_recorded_with_who_and_why(small_config: Config) -> None:
    model, example = _model(small_config)
    v1 = _register(small_config, model, example)
    v2 = _register(small_config, model, example)
    registry.promote(small_config, v1, None, by="tester", why="first")
    registry.name_challenger(small_config, v2, v1, by="register (run r-2)")
    assert registry.champion(small_config).version == v1  # a challenger moves nothing else
    assert registry.get_alias(small_config, registry.CHALLENGER).version == v2
    with pytest.raises(RegistryError, match="not named challenger"):
        registry.name_challenger(small_config, v2, "99", by="stale run")
    registry.promote(small_config, v2, v1, by="rollout controller", why="live traffic")
    moves = [(m.alias, m.version, m.before, m.by) for m in registry.alias_history(small_config)]
    assert moves == [
        (registry.CHAMPION, v1, None, "tester"),
        (registry.CHALLENGER, v2, None, "register (run r-2)"),
        (registry.PREVIOUS, v1, None, "rollout controller"),
        (registry.CHAMPION, v2, v1, "rollout controller"),
        (registry.CHALLENGER, None, v2, "rollout controller"),
    ]
    assert registry.get_alias(small_config, registry.CHALLENGER) is None
    tags = registry.version_ref(registry.client(small_config), small_config.model_name, v2).tags
    assert json.loads(tags[f"{registry.TAG_ALIAS}{registry.CHAMPION}"])["why"] == "live traffic"


def test_an_alias_move_that_cannot_be_recorded_does_not_happen(
    small_config: Config, tmp_path: Path
) -> None:
    model, example = _model(small_config)
    v1 = _register(small_config, model, example)
    blocker = Path(registry.audit_root(small_config))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the audit folder belongs")
    with pytest.raises(Exception, match="aliases"):
        registry.promote(small_config, v1, None, by="tester")
    assert registry.champion(small_config) is None
