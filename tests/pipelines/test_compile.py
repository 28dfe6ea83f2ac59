"""The checked-in compiled pipeline must match the code, and have the shape we promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ctpipe.pipelines.compile import COMPILED_PATH, compile_pipeline


def _normalised(path: Path) -> Any:
    doc = yaml.safe_load(path.read_text())
    doc.pop("sdkVersion", None)
    for executor in doc["deploymentSpec"]["executors"].values():
        executor["container"].pop("image", None)  # registry and tag may be set at compile time
    return doc


def test_compiled_yaml_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert _normalised(fresh) == _normalised(COMPILED_PATH), (
        "pipelines/compiled/continuous_training.yaml is stale: run `make compile` (or `ctpipe compile`) and commit it"
    )


def test_compiled_pipeline_shape() -> None:
    doc = yaml.safe_load(COMPILED_PATH.read_text())
    tasks = doc["root"]["dag"]["tasks"]
    by_name = {t["taskInfo"]["name"]: t for t in tasks.values()}
    assert set(by_name) == {
        "ingest",
        "validate",
        "split",
        "drift-report",
        "plan",
        "candidates",
        "select",
        "evaluate",
        "blessed",
    }
    loop = by_name["candidates"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-Output"
    assert "train" in doc["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    gate = by_name["blessed"]
    assert (
        gate["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    assert "register" in doc["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    # Every step runs on the project image with our own code, never a pip install of kfp.
    for executor in doc["deploymentSpec"]["executors"].values():
        container = executor["container"]
        assert container["image"].startswith("ctpipe/base:")
        assert "pip install" not in " ".join(container["command"])
    # Caching would serve stale data or a stale champion.
    assert all(not t.get("cachingOptions", {}).get("enableCache", False) for t in tasks.values())
    defaults = doc["root"]["inputDefinitions"]["parameters"]
    assert defaults["config"]["defaultValue"]["task"] == "classification"
    assert defaults["reason"]["defaultValue"] == "manual"
