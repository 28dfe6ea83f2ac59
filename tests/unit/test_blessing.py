"""Serving only what was blessed: signed blessings, checked before any pickle is opened.

The attack from issue 15, replayed on a real (sqlite) MLflow: whoever can write to the
registry registers a version, tags it with a matching SHA-256 and moves the champion alias.
Its pickle runs code when opened (here it writes a marker file). No loader may open it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from ctpipe import blessing, registry
from ctpipe.config import Config
from ctpipe.errors import ConfigError, RegistryError
from ctpipe.serving.model import ChampionModel
from ctpipe.serving.source import ModelSource
from tests.unit.test_registry import _model, _register

MARKER_ENV = "CTPIPE_TEST_UNPICKLED_MARKER"


def _touch_marker(path: str) -> None:
    Path(path).write_text("unpickled")


class Payload:
    """Unpickling this calls _touch_marker: proof that a loader opened the pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch_marker, (self.marker,))


def _smuggle(config: Config, marker: Path) -> str:
    """Register a version the way an attacker with registry access would: a ctpipe-shaped
    model directory whose pickle is the payload, with a correct SHA-256 tag and the alias."""
    model, example = _model(config)
    version = _register(config, model, example)  # a real, blessed v1 as the template
    client = registry.client(config)
    stored = registry.download_model(registry.version_ref(client, config.model_name, version))
    (stored / registry.PICKLE_FILE).write_bytes(cloudpickle.dumps(Payload(str(marker))))
    import mlflow

    with mlflow.start_run(experiment_id=registry.experiment_id(client, config)):
        info = mlflow.log_artifacts(str(stored), "model")
        del info
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    forged = client.create_model_version(config.model_name, f"runs:/{run_id}/model", run_id)
    sha = registry.file_sha256(stored / registry.PICKLE_FILE)
    client.set_model_version_tag(config.model_name, forged.version, registry.TAG_MODEL_SHA256, sha)
    client.set_registered_model_alias(config.model_name, registry.CHAMPION, forged.version)
    return str(forged.version)


def test_a_smuggled_version_is_never_unpickled(small_config: Config, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    forged = _smuggle(small_config, marker)
    ref = registry.champion(small_config)
    assert ref is not None and ref.version == forged

    with pytest.raises(blessing.UnblessedModel, match=f"v{forged} has no signed blessing"):
        registry.load_model(ref)
    source = ModelSource(
        f"models:/{small_config.model_name}@champion",
        registry.tracking_uri(small_config.state_dir),
    )
    with pytest.raises(blessing.UnblessedModel):
        source.load()
    with pytest.raises(blessing.UnblessedModel):
        registry.promote(small_config, forged, expected_champion=forged)
    assert not marker.exists(), "a loader unpickled an unblessed model"


def test_copied_or_altered_blessings_are_refused(small_config: Config, tmp_path: Path) -> None:
    model, example = _model(small_config)
    v1 = _register(small_config, model, example)
    forged = _smuggle(small_config, tmp_path / "unpickled")
    client = registry.client(small_config)
    good = registry.version_ref(client, small_config.model_name, v1).tags

    # v1's valid blessing copied onto the forged version: signed for another version.
    for key in (blessing.TAG_RECORD, blessing.TAG_SIGNATURE):
        client.set_model_version_tag(small_config.model_name, forged, key, good[key])
    ref = registry.version_ref(client, small_config.model_name, forged)
    with pytest.raises(
        blessing.UnblessedModel, match=f"signed for {small_config.model_name} v{v1}"
    ):
        registry.load_model(ref)

    # The record rewritten to name the forged version and its hash: the signature breaks.
    record = json.loads(good[blessing.TAG_RECORD])
    record.update(version=forged, sha256=ref.tags[registry.TAG_MODEL_SHA256])
    client.set_model_version_tag(
        small_config.model_name, forged, blessing.TAG_RECORD, json.dumps(record)
    )
    ref = registry.version_ref(client, small_config.model_name, forged)
    with pytest.raises(blessing.UnblessedModel, match="signature does not match"):
        registry.load_model(ref)
    assert not (tmp_path / "unpickled").exists()


def test_another_key_does_not_verify(small_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    model, example = _model(small_config)
    version = _register(small_config, model, example)
    ref = registry.version_ref(registry.client(small_config), small_config.model_name, version)
    assert registry.load_model(ref) is not None
    monkeypatch.setenv(blessing.KEY_ENV, "f" * 64)
    with pytest.raises(blessing.UnblessedModel, match="signed with another key"):
        registry.load_model(ref)


def test_the_blessing_records_the_gate_evidence(small_config: Config) -> None:
    model, example = _model(small_config)
    saved = registry.save_model_dir(model, example.head(3), Path(tempfile.mkdtemp()) / "model")
    evidence = {"metric": "roc_auc", "value": 0.81, "champion_version": None}
    _, version = registry.log_and_register(
        small_config,
        saved,
        run_name="t",
        params={},
        metrics={},
        tags={},
        texts={},
        evidence=evidence,
    )
    ref = registry.version_ref(registry.client(small_config), small_config.model_name, version)
    found = blessing.verify(ref.tags, small_config.model_name, version)
    assert found.sha256 == saved.sha256 == registry.blessed_sha256(ref)
    assert found.evidence == evidence


def _serving_a_champion(config: Config, model: Any, example: Any) -> tuple[str, ChampionModel]:
    """v1 registered, promoted and loaded by a predictor that follows the alias."""
    v1 = _register(config, model, example)
    registry.promote(config, v1, expected_champion=None)
    served = ChampionModel(
        config.model_name,
        ModelSource(
            f"models:/{config.model_name}@champion", registry.tracking_uri(config.state_dir)
        ),
        reload_seconds=0,
    )
    served.load()
    return v1, served


def test_a_hot_reload_of_an_unblessed_version_keeps_serving_the_old_one(
    small_config: Config, tmp_path: Path
) -> None:
    model, example = _model(small_config)
    v1, served = _serving_a_champion(small_config, model, example)
    _smuggle(small_config, tmp_path / "unpickled")
    assert served.reload_if_moved() is False
    assert served.current is not None and served.current.version == v1
    assert not (tmp_path / "unpickled").exists()


class BreaksAfterSaving:
    """Predicts while MLflow infers its signature, then is saved broken: a model that loads
    but cannot answer (every request would fail while /ready says true)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False
        self.classes_ = inner.classes_

    def predict(self, frame: Any) -> Any:
        if self.broken:
            raise RuntimeError("this model cannot predict")
        self.broken = True
        return self.inner.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)


def test_a_model_that_fails_its_input_example_is_not_swapped_in(small_config: Config) -> None:
    model, example = _model(small_config)
    v1, served = _serving_a_champion(small_config, model, example)
    v2 = _register(small_config, BreaksAfterSaving(model), example)  # blessed, but broken
    registry.promote(small_config, v2, expected_champion=v1)
    assert served.reload_if_moved() is False
    assert served.current is not None and served.current.version == v1
    source = ModelSource(
        f"models:/{small_config.model_name}/{v2}", registry.tracking_uri(small_config.state_dir)
    )
    with pytest.raises(RegistryError, match="failed on its own input example"):
        source.load()


def test_a_runs_uri_needs_an_explicit_checksum(small_config: Config) -> None:
    source = ModelSource("runs:/0123abcd/model", registry.tracking_uri(small_config.state_dir))
    with pytest.raises(RegistryError, match="pass --model-sha256"):
        source.load()


def test_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(blessing.KEY_ENV, "short")
    with pytest.raises(ConfigError, match="at least 32"):
        blessing.key()
    monkeypatch.delenv(blessing.KEY_ENV)
    monkeypatch.setenv(blessing.KEY_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no such file"):
        blessing.key()
    monkeypatch.delenv(blessing.KEY_FILE_ENV)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(ConfigError, match="Secret ctpipe-blessing"):
        blessing.key()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    # On a laptop: made on first use, private, and the same afterwards.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    first = blessing.key()
    path = blessing.default_key_file()
    assert path.is_file() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert blessing.key() == first and len(first) == 64
