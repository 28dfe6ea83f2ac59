"""A registered model loads with plain MLflow where ctpipe is not installed: the ctpipe
modules its pickle needs travel in the model's code/ directory (MLmodel `code: code`)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_model
from ctpipe.training.families import build_estimator
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
# What a consumer outside ctpipe installs for a scikit-learn model (requirements.txt names
# the same packages); sqlalchemy and alembic for the sqlite store the test registry uses.
FRESH_PACKAGES = ["mlflow-skinny", "scikit-learn", "pandas", "cloudpickle", "sqlalchemy", "alembic"]
# Set to a virtualenv made like `fresh_venv` to reuse it across test sessions.
VENV_ENV = "CTPIPE_TEST_FRESH_VENV"

# Runs in a python where ctpipe cannot be imported: loads the model with plain MLflow and
# prints its predictions for the rows in argv[2] (pandas "split" JSON).
LOAD_WITH_MLFLOW = """
import json, sys
import pandas as pd
try:
    import ctpipe
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"ctpipe is importable here ({ctpipe.__file__}): the test proves nothing")
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.argv[2], orient="split")
print(json.dumps([v.item() if hasattr(v, "item") else v for v in model.predict(rows)]))
"""


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.py")}


def _fit(family: str, params: dict[str, Any]) -> tuple[Any, Any]:
    config = make_config(Path(tempfile.mkdtemp()))
    table = synthetic.generate(600, seed=3)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    model = build_model(schema, build_estimator(family, "classification", params, seed=0))
    model.fit(frame[schema.feature_names], frame["label"])
    return model, frame[schema.feature_names]


def test_a_scikit_learn_model_ships_the_feature_code_only(tmp_path: Path) -> None:
    model, example = _fit("linear", {})
    saved = registry.save_model_dir(model, example.head(3), tmp_path / "model")
    code = tmp_path / "model" / registry.CODE_DIR
    assert _files(code) == {"ctpipe/__init__.py", "ctpipe/features.py"}
    assert (code / "ctpipe/features.py").read_text() == (ROOT / "ctpipe/features.py").read_text()
    assert "import" not in (code / "ctpipe/__init__.py").read_text(), "a stub, not ctpipe's"
    flavors = registry.read_mlmodel(tmp_path / "model", "test")["flavors"]
    assert flavors["python_function"]["code"] == registry.CODE_DIR
    requirements = (tmp_path / "model" / "requirements.txt").read_text().split()
    assert any(r.startswith("cloudpickle==") for r in requirements)
    assert not any(r.startswith("torch") for r in requirements)
    # The checksum is still the pickle's, and ctpipe's own loader ignores code/.
    loaded = registry.load_model_dir(tmp_path / "model", saved.sha256, "test")
    assert (loaded.predict(example) == model.predict(example)).all()


def _without_ctpipe(python: str, model_uri: str, rows: Any, cwd: Path, **env: str) -> list[Any]:
    data = cwd / "rows.json"
    rows.to_json(data, orient="split", index=False)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    found = subprocess.run(
        [python, "-c", LOAD_WITH_MLFLOW, model_uri, str(data)],
        cwd=cwd,  # not the checkout: `python -c` puts the working directory on sys.path
        env={**clean, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0, found.stderr[-3000:]
    return list(json.loads(found.stdout.strip().splitlines()[-1]))


def test_a_torch_model_loads_with_mlflow_where_ctpipe_is_not_importable(tmp_path: Path) -> None:
    """In this virtualenv (torch is here) with ctpipe's editable install switched off."""
    model, example = _fit("torch_mlp", {"max_epochs": 2})
    saved = registry.save_model_dir(model, example.head(3), tmp_path / "model")
    assert _files(tmp_path / "model" / registry.CODE_DIR) == {
        "ctpipe/__init__.py",
        "ctpipe/errors.py",
        "ctpipe/features.py",
        "ctpipe/training/__init__.py",
        "ctpipe/training/torch_mlp.py",
        "ctpipe/training/torch_net.py",
    }
    requirements = (tmp_path / "model" / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") and "+" not in r for r in requirements)
    hide = tmp_path / "hide"
    hide.mkdir()
    # ctpipe is installed editable: a meta path finder; sitecustomize takes it out.
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        f"sys.path[:] = [p for p in sys.path if p.rstrip('/') != {str(ROOT)!r}]\n"
    )
    rows = example.head(20)
    predicted = _without_ctpipe(
        sys.executable, str(tmp_path / "model"), rows, tmp_path, PYTHONPATH=str(hide)
    )
    expected = registry.load_model_dir(tmp_path / "model", saved.sha256, "test").predict(rows)
    assert predicted == expected.tolist()


# ------------------------------------------------------------ a fresh virtualenv


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with MLflow and scikit-learn from the constraints, and no ctpipe."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV])
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [
            str(venv / "bin/python"),
            *("-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("-c", str(ROOT / "constraints.txt"), *FRESH_PACKAGES),
        ],
        check=True,
        timeout=900,
    )
    return venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(fresh_venv: Path, champion_config: Config, tmp_path: Path) -> Iterator[str]:
    """`mlflow models serve --env-manager local` from the fresh virtualenv, on the champion.

    MLflow starts the server as `uvicorn …` through a shell, so the virtualenv's bin must
    be on PATH (activated): without it the server exits 127, uvicorn not found."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        MLFLOW_TRACKING_URI=registry.tracking_uri(champion_config.state_dir),
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{fresh_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            str(fresh_venv / "bin/mlflow"),
            *("models", "serve", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)),
            *("-m", f"models:/{champion_config.model_name}@champion"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow models serve exited {server.returncode}:\n"
                    + (tmp_path / "serve.log").read_text()[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mlflow models serve did not answer /ping in 180 s")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


@pytest.mark.venv
def test_the_champion_loads_and_serves_with_plain_mlflow_in_a_fresh_virtualenv(
    fresh_venv: Path, champion_config: Config, served: str, tmp_path: Path
) -> None:
    ref = registry.champion(champion_config)
    assert ref is not None
    ours = registry.load_model(ref)
    files = registry.download_model(ref) / registry.CODE_DIR
    assert "ctpipe/features.py" in _files(files)
    rows = synthetic.generate(50, seed=11).to_pandas()[list(ours.feature_names_in_)]
    expected = ours.predict(rows).tolist()

    predicted = _without_ctpipe(
        str(fresh_venv / "bin/python"),
        f"models:/{champion_config.model_name}@champion",
        rows,
        tmp_path,
        MLFLOW_TRACKING_URI=registry.tracking_uri(champion_config.state_dir),
    )
    assert predicted == expected

    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    request = urllib.request.Request(
        f"{served}/invocations", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["predictions"] == expected
    assert np.asarray(expected).size == 50
    assert shutil.which("mlflow", path=str(fresh_venv / "bin"))
