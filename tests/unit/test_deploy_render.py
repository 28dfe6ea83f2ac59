"""The InferenceService for each phase of a rollout, and the alias-following one of
manifests/base: one renderer, and only the fields the rollout owns differ between them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import cli, deploy
from ctpipe.config import Config, load

ROOT = Path(__file__).resolve().parents[2]
SHA_A, SHA_B = "a" * 64, "b" * 64
# A version KServe's storage initializer can download, and one the predictor pulls from the
# registry itself.
STORED = deploy.ModelLocation("3", SHA_A, "s3://ctpipe/mlflow/1/m-3/artifacts/model")
STORED_NEXT = deploy.ModelLocation("4", SHA_B, "s3://ctpipe/mlflow/1/m-4/artifacts/model")
REGISTRY = deploy.ModelLocation("3", SHA_A, None)
REGISTRY_NEXT = deploy.ModelLocation("4", SHA_B, None)


@pytest.fixture
def config() -> Config:
    return load(ROOT / "manifests/base/ctpipe.yaml")


def predictor(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["predictor"]


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return predictor(manifest)["containers"][0]


def model_args(manifest: dict[str, Any]) -> list[str]:
    return [a for a in container(manifest)["args"] if deploy.is_rollout_arg(a)]


def env(manifest: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(manifest).get("env", [])}


def test_stable_pins_the_downloaded_version(config: Config) -> None:
    manifest = deploy.render(config, STORED)
    assert model_args(manifest) == [
        f"--model-uri={deploy.MODEL_MOUNT}",
        f"--model-sha256={SHA_A}",
        "--model-version=3",
        "--reload-seconds=0",
        "--role=champion",
        "--shadow-model-uri=none",  # the predictor's default would follow @challenger
    ]
    assert env(manifest) == {"CTPIPE_MODEL_VERSION": "3", "STORAGE_URI": STORED.storage_uri}
    assert "canaryTrafficPercent" not in predictor(manifest)
    assert manifest["metadata"]["annotations"] == {
        "ctpipe.io/model": "ctpipe-demo",
        "ctpipe.io/model-version": "3",
    }


def test_stable_pins_a_registry_version(config: Config) -> None:
    manifest = deploy.render(config, REGISTRY)
    assert model_args(manifest) == [
        "--model-uri=models:/ctpipe-demo/3",
        "--model-version=3",
        "--reload-seconds=0",
        "--role=champion",
        "--shadow-model-uri=none",
    ]
    assert env(manifest) == {"CTPIPE_MODEL_VERSION": "3"}
    assert not any("@" in a for a in container(manifest)["args"]), "no alias is followed"


def test_shadow_pins_both_models(config: Config) -> None:
    manifest = deploy.render(config, STORED, shadow=STORED_NEXT)
    args = model_args(manifest)
    assert args[:5] == [
        f"--model-uri={deploy.MODEL_MOUNT}",
        f"--model-sha256={SHA_A}",
        "--model-version=3",
        "--reload-seconds=0",
        "--role=champion",
    ]
    assert args[5:] == [
        f"--shadow-model-uri={STORED_NEXT.storage_uri}",
        f"--shadow-model-sha256={SHA_B}",
        "--shadow-model-version=4",
    ]
    assert env(manifest)["STORAGE_URI"] == STORED.storage_uri  # the champion's, downloaded
    assert "canaryTrafficPercent" not in predictor(manifest)
    assert manifest["metadata"]["annotations"]["ctpipe.io/shadow-model-version"] == "4"
    registry_shadow = model_args(deploy.render(config, REGISTRY, shadow=REGISTRY_NEXT))
    assert registry_shadow[-1] == "--shadow-model-uri=models:/ctpipe-demo/4"
    assert not any(a.startswith("--shadow-model-sha256") for a in registry_shadow)


def test_canary_serves_the_challenger_beside_the_last_revision(config: Config) -> None:
    manifest = deploy.render(config, STORED_NEXT, canary_traffic_percent=10, role="canary")
    assert predictor(manifest)["canaryTrafficPercent"] == 10
    assert model_args(manifest) == [
        f"--model-uri={deploy.MODEL_MOUNT}",
        f"--model-sha256={SHA_B}",
        "--model-version=4",
        "--reload-seconds=0",
        "--role=canary",
        "--shadow-model-uri=none",
    ]
    assert manifest["metadata"]["annotations"]["ctpipe.io/model-version"] == "4"
    # The role follows from the phase when it is not given.
    assert deploy.render(config, STORED_NEXT, canary_traffic_percent=10) == manifest


def test_promoted_and_rolled_back_serve_one_model(config: Config) -> None:
    promoted = deploy.render(config, STORED_NEXT)
    rolled_back = deploy.render(config, STORED)
    for manifest, version in ((promoted, "4"), (rolled_back, "3")):
        assert "canaryTrafficPercent" not in predictor(manifest)
        assert f"--model-version={version}" in model_args(manifest)
        assert "--shadow-model-uri=none" in model_args(manifest)
        assert "ctpipe.io/shadow-model-version" not in manifest["metadata"]["annotations"]


def test_the_single_model_call_still_works(config: Config) -> None:
    assert deploy.render(config, STORED, 10) == deploy.render(
        config, STORED, canary_traffic_percent=10
    )
    assert deploy.render(config, STORED, 100) == deploy.render(config, STORED)
    assert deploy.render(config, STORED, 0) == deploy.render(config, STORED)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shadow": STORED_NEXT, "canary_traffic_percent": 10}, "no shadow"),
        ({"shadow": STORED}, "cannot shadow itself"),
        ({"canary_traffic_percent": 100}, "between 1 and 99"),
        ({"canary_traffic_percent": 0}, "between 1 and 99"),
        ({"canary_traffic_percent": 10, "role": "champion"}, "does not fit"),
        ({"role": "canary"}, "does not fit"),
        ({"role": "shadow"}, "does not fit"),
    ],
)
def test_phases_that_do_not_exist_are_refused(
    config: Config, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(deploy.DeployError, match=message):
        deploy.render(config, STORED, **kwargs)


def test_the_base_follows_the_aliases(config: Config) -> None:
    manifest = deploy.render_following(config)
    assert model_args(manifest) == [
        "--model-uri=models:/ctpipe-demo@champion",
        f"--reload-seconds={deploy.FOLLOW_RELOAD_SECONDS}",
        "--role=champion",
        "--shadow-model-uri=auto",
    ]
    assert "env" not in container(manifest)
    assert "canaryTrafficPercent" not in predictor(manifest)
    assert manifest["metadata"]["annotations"] == {"ctpipe.io/model": "ctpipe-demo"}


def phases(config: Config) -> dict[str, dict[str, Any]]:
    """Every manifest the rollout applies, and the one kustomize applies (the base)."""
    return {
        "base": deploy.render_following(config),
        "stable": deploy.render(config, STORED),
        "stable-registry": deploy.render(config, REGISTRY),
        "shadow": deploy.render(config, STORED, shadow=STORED_NEXT),
        "shadow-registry": deploy.render(config, REGISTRY, shadow=REGISTRY_NEXT),
        "canary": deploy.render(config, STORED_NEXT, canary_traffic_percent=25, role="canary"),
        "canary-registry": deploy.render(config, REGISTRY_NEXT, canary_traffic_percent=50),
        "promoted": deploy.render(config, STORED_NEXT),
        "rolled-back": deploy.render(config, STORED),
    }


def test_phases_differ_only_in_the_fields_the_rollout_owns(config: Config) -> None:
    rendered = phases(config)
    common = deploy.without_rollout_fields(rendered["base"])
    for name, manifest in rendered.items():
        assert deploy.without_rollout_fields(manifest) == common, name
    # ... and those are what they should be: no model, version or traffic left.
    text = yaml.safe_dump(common)
    for owned in ("models:/", "@champion", "s3://ctpipe/mlflow", SHA_A, "--role", "--shadow"):
        assert owned not in text
    assert "canaryTrafficPercent" not in common["spec"]["predictor"]
    assert "env" not in common["spec"]["predictor"]["containers"][0]
    # The copy leaves the original alone.
    assert "canaryTrafficPercent" in predictor(rendered["canary"])


def test_what_every_phase_shares(config: Config) -> None:
    """What the PodMonitor, the NetworkPolicies and the restricted Pod Security Standard
    need, whichever phase was applied last."""
    for name, manifest in phases(config).items():
        meta, spec, c = manifest["metadata"], predictor(manifest), container(manifest)
        assert meta["name"] == "ctpipe-demo" and meta["namespace"] == "ctpipe", name
        assert meta["labels"]["app.kubernetes.io/name"] == "ctpipe-predictor", name
        assert spec["labels"] == {"ctpipe.io/mlflow-client": "true"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] == "ctpipe-predictor", name
        assert spec["securityContext"]["runAsUser"] == 1000, name
        assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}], name
        assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}], name
        assert "--model_name=ctpipe-demo" in c["args"], name
        assert "--predictions-uri=s3://ctpipe/predictions" in c["args"], name


def test_deploy_settings_reach_every_phase(config: Config) -> None:
    gpu = config.replace(
        deploy=dataclasses.replace(
            config.deploy,
            image="registry.example.com/ctpipe/serving:9.9.9",
            gpu=1,
            node_selector={"nvidia.com/gpu.present": "true"},
            tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        )
    )
    for name, manifest in phases(gpu).items():
        spec, c = predictor(manifest), container(manifest)
        assert c["image"] == "registry.example.com/ctpipe/serving:9.9.9", name
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu", name


def test_the_cli_renders_the_base(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ROOT / "manifests/base/ctpipe.yaml"
    out = tmp_path / "inferenceservice.yaml"
    argv = ["deploy", "render", "--base", "--config", str(source), "--output", str(out)]
    assert cli.main(argv) == 0
    text = out.read_text()
    assert text.startswith(deploy.FOLLOWING_HEADER)
    assert yaml.safe_load(text) == deploy.render_following(config)
    assert cli.main(["deploy", "render", "--base", "--config", str(source)]) == 0
    assert capsys.readouterr().out.endswith(text)
    assert cli.main(["deploy", "promote", "--base", "--config", str(source)]) != 0
