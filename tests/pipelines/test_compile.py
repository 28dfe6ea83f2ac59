"""The checked-in compiled pipelines must match the code, and have the shape we promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import __version__
from ctpipe.pipelines.compile import (
    COMPILED_GPU_PATH,
    COMPILED_PATH,
    COMPILED_PATHS,
    compile_pipeline,
    main,
)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes platform spec) of a compiled file."""
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    platform: dict[str, Any] = next((d for d in docs[1:] if "platforms" in d), {"platforms": {}})
    return spec, platform["platforms"].get("kubernetes", {}).get("deploymentSpec", {})


def executors(path: Path) -> dict[str, dict[str, Any]]:
    return {
        name: e["container"] for name, e in load(path)[0]["deploymentSpec"]["executors"].items()
    }


def _normalised(path: Path) -> Any:
    spec, platform = load(path)
    spec.pop("sdkVersion", None)
    for executor in spec["deploymentSpec"]["executors"].values():
        executor["container"].pop("image", None)  # registry and tag may be set at compile time
    return spec, platform


@pytest.mark.parametrize("profile", sorted(COMPILED_PATHS))
def test_compiled_yaml_is_up_to_date(tmp_path: Path, profile: str) -> None:
    fresh = compile_pipeline(tmp_path / "fresh.yaml", profile)
    checked_in = COMPILED_PATHS[profile]
    assert _normalised(fresh) == _normalised(checked_in), (
        f"{checked_in.relative_to(checked_in.parents[2])} is stale: run `make compile` and commit it"
    )
    # The images too, when compiled without a registry or tag.
    assert executors(fresh) == executors(checked_in)


def test_compiled_pipeline_shape() -> None:
    doc = load(COMPILED_PATH)[0]
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
        "refit",
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
    # The gate judges the candidate refitted on train + validation.
    assert by_name["evaluate"]["dependentTasks"] == ["refit", "split", "validate"]
    blessed = doc["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert set(blessed) == {"final-refit", "infra-validate", "register", "deploy"}
    # The final refit is what infra validation serves; nothing is registered before the
    # served challenger passed, nothing deployed before it is registered.
    assert blessed["infra-validate"]["dependentTasks"] == ["final-refit"]
    assert blessed["register"]["dependentTasks"] == ["infra-validate"]
    assert blessed["deploy"]["dependentTasks"] == ["register"]
    # Every step runs on the project image with our own code, never a pip install of kfp.
    for container in executors(COMPILED_PATH).values():
        assert container["image"] == f"ctpipe/base:{__version__}"
        assert "pip install" not in " ".join(container["command"])
        assert "resources" not in container  # the CPU profile asks for no accelerator
    # Caching would serve stale data or a stale champion.
    assert all(not t.get("cachingOptions", {}).get("enableCache", False) for t in tasks.values())
    defaults = doc["root"]["inputDefinitions"]["parameters"]
    assert defaults["config"]["defaultValue"]["task"] == "classification"
    assert defaults["reason"]["defaultValue"] == "manual"


def test_cpu_profile_has_no_gpu_settings() -> None:
    platform = load(COMPILED_PATH)[1]
    assert all("tolerations" not in e for e in platform["executors"].values())
    assert "nvidia.com/gpu" not in COMPILED_PATH.read_text()


GPU_STEPS = ("exec-train", "exec-refit", "exec-final-refit")


def test_gpu_profile_trains_on_a_gpu_and_nothing_else_does() -> None:
    containers = executors(COMPILED_GPU_PATH)
    platform = load(COMPILED_GPU_PATH)[1]["executors"]
    for step in GPU_STEPS:  # every step that fits a model
        train = containers.pop(step)
        assert train["image"] == f"ctpipe/trainer-gpu:{__version__}"
        assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert train["resources"]["accelerator"]["resourceCount"] == "1"
        assert platform[step]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    for name, container in containers.items():
        assert container["image"] == f"ctpipe/base:{__version__}", name
        assert "resources" not in container, name
        assert "tolerations" not in platform[name], name
    # Apart from the fitting steps, the two profiles are the same pipeline.
    cpu_spec, gpu_spec = load(COMPILED_PATH)[0], load(COMPILED_GPU_PATH)[0]
    for spec in (cpu_spec, gpu_spec):
        spec.pop("sdkVersion", None)
        for step in GPU_STEPS:
            spec["deploymentSpec"]["executors"].pop(step)
    assert cpu_spec == gpu_spec


@pytest.mark.parametrize("path", [COMPILED_PATH, COMPILED_GPU_PATH], ids=["cpu", "gpu"])
def test_credentials_come_from_the_cluster_never_from_the_yaml(path: Path) -> None:
    spec, platform = load(path)
    assert set(platform["executors"]) == set(spec["deploymentSpec"]["executors"])
    for name, settings in platform["executors"].items():
        secrets = {
            s["secretName"]: {k["envVar"] for k in s["keyToEnv"]} for s in settings["secretAsEnv"]
        }
        assert secrets == {
            "ctpipe-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
            "ctpipe-mlflow-auth": {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},
            "ctpipe-blessing": {"CTPIPE_BLESSING_KEY"},
        }, name
        assert all(s.get("optional") for s in settings["secretAsEnv"]), name
        # MLflow's NetworkPolicy admits labelled pods only.
        assert settings["podMetadata"]["labels"] == {"ctpipe.io/mlflow-client": "true"}, name
        (config_map,) = settings["configMapAsEnv"]
        assert config_map["configMapName"] == "ctpipe-env", name
        assert {k["envVar"] for k in config_map["keyToEnv"]} == {
            "MLFLOW_TRACKING_URI",
            "AWS_ENDPOINT_URL_S3",
            "AWS_DEFAULT_REGION",
        }
    for container in spec["deploymentSpec"]["executors"].values():
        assert "env" not in container["container"]  # no literal values baked in


def test_registry_and_tag_are_set_at_compile_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = compile_pipeline(
        tmp_path / "gpu.yaml", "gpu", registry="reg.example:5000/ml/", tag="1.2.3"
    )
    images = {name: c["image"] for name, c in executors(out).items()}
    for step in GPU_STEPS:
        assert images.pop(step) == "reg.example:5000/ml/ctpipe/trainer-gpu:1.2.3"
    assert set(images.values()) == {"reg.example:5000/ml/ctpipe/base:1.2.3"}

    # The environment does the same for `ctpipe compile`, even after the modules were imported.
    monkeypatch.setenv("CTPIPE_IMAGE_REGISTRY", "ghcr.io/acme")
    monkeypatch.setenv("CTPIPE_IMAGE_TAG", "abc123")
    out = compile_pipeline(tmp_path / "cpu.yaml")
    assert {c["image"] for c in executors(out).values()} == {"ghcr.io/acme/ctpipe/base:abc123"}


def test_compile_entry_point_writes_one_profile(tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / "out.yaml"
    assert main(["--profile", "gpu", "--tag", "9.9.9", "-o", str(target)]) == 0
    assert "(gpu)" in capsys.readouterr().out
    assert executors(target)["exec-train"]["image"] == "ctpipe/trainer-gpu:9.9.9"
    with pytest.raises(SystemExit):
        main(["-o", str(target)])  # --output with both profiles is refused
