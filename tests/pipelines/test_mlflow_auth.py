"""MLflow as the cluster runs it: the basic-auth app with manifests/base's settings.

Without credentials nothing can be read or written; with the ones from the Secret (the
MLFLOW_TRACKING_USERNAME/PASSWORD every ctpipe pod gets) ctpipe registers, promotes and
loads as usual."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctpipe import registry
from tests.conftest import make_config, mlflow_process
from tests.unit.test_registry import _model, _register

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ctpipe", "a-password-for-this-test-only"


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[str]:
    ini = (ROOT / "manifests/base/mlflow-basic-auth.ini").read_text()
    ini = ini.replace("sqlite:////mlflow/basic_auth.db", f"sqlite:///{tmp_path / 'auth.db'}")
    (tmp_path / "basic_auth.ini").write_text(ini)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": USER,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key",
    }
    with mlflow_process(
        tmp_path,
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--app-name",
        "basic-auth",
        env=env,
    ) as url:
        yield url


def test_mlflow_with_basic_auth(
    auth_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = f"{auth_server}/api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(search, timeout=10)
    assert refused.value.code == 401

    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    config = make_config(tmp_path / "state")
    model, example = _model(config)
    version = _register(config, model, example)
    registry.promote(config, version, expected_champion=None)
    loaded = registry.load_model(registry.champion(config))
    assert (loaded.predict_proba(example) == model.predict_proba(example)).all()

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception, match=r"401|[Uu]nauthori[sz]ed|credentials"):
        registry.champion(config)
