"""The pipeline, the predictor and the monitor, each in its image, as a cluster runs them:
steps reach MLflow and S3 over loopback, and nothing on this machine's disk but the
run folder that kfp.local mounts."""

from __future__ import annotations

import io
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from ctpipe import blessing, predlog, registry, storage
from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.pipelines.local import Containers, LocalRun, run_local
from tests.conftest import S3_ENV, free_port, make_config, mlflow_service
from tests.containers.conftest import Images, env_flags, podman, report

pytestmark = [pytest.mark.container, pytest.mark.services, pytest.mark.pipeline]

BUCKET = "ctpipe-ct"
IMAGE_UID = 1000
CATEGORICAL = ("region", "channel", "device")


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]  # what a step, the predictor and the monitor need to reach it all
    data_uri: str


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import boto3

    work = tmp_path_factory.mktemp("stack")
    with mlflow_service(s3_endpoint, work) as tracking, pytest.MonkeyPatch.context() as mp:
        env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint, "MLFLOW_TRACKING_URI": tracking}
        for name, value in env.items():
            mp.setenv(name, value)
        storage._client.cache_clear()
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        client.create_bucket(Bucket=BUCKET)
        buffer = io.BytesIO()
        pq.write_table(synthetic.generate(3000, seed=7), buffer)
        client.put_object(Bucket=BUCKET, Key="data/batch-1.parquet", Body=buffer.getvalue())
        mp.chdir(work)  # kfp.local's run folders go under ./.ctpipe for an s3:// state_dir
        # The predictor checks each version's signed blessing with the key the steps used.
        yield Stack({**env, **blessing.environment()}, f"s3://{BUCKET}/data/")
    storage._client.cache_clear()


def config_for(stack: Stack, name: str) -> Config:
    config = make_config(Path("unused"), model_name=name, data={"uri": stack.data_uri})
    return config.replace(state_dir=f"s3://{BUCKET}/{name}")


@dataclass(frozen=True)
class Ran:
    config: Config
    run: LocalRun
    log: str


def steps_of(run: LocalRun) -> list[Path]:
    return sorted(run.run_dir.glob("**/executor_output.json"))


@pytest.fixture(scope="module")
def in_containers(
    stack: Stack, built_images: Images, docker_host: str, request: pytest.FixtureRequest
) -> Ran:
    config = config_for(stack, "ct-containers")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", docker_host)
        run = run_local(
            config, out=out, containers=Containers(registry="localhost", tag=built_images.tag)
        )
    assert run.ok, f"{out.getvalue()[-6000:]}\n{run.failed_step}: {run.errors}"
    report(request, f"pipeline in containers: {run.seconds:.1f}s, {len(steps_of(run))} steps")
    return Ran(config, run, out.getvalue())


def numbers(value: Any, path: str = "") -> dict[str, float]:
    """Every number in a nested record, by its path."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in numbers(item, f"{path}.{key}").items()
        }
    if isinstance(value, list | tuple):
        return {
            k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}[{i}]").items()
        }
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {}
    return {path: float(value)}


def test_the_pipeline_runs_in_the_images_and_matches_the_subprocess_run(
    in_containers: Ran, stack: Stack, request: pytest.FixtureRequest
) -> None:
    run = in_containers.run
    # Every step ran in the base image as its user: the executor wrote its output as uid 1000.
    outputs = steps_of(run)
    assert outputs and {p.stat().st_uid for p in outputs} == {IMAGE_UID}
    assert run.registered_version == "1" and run.evaluation is not None
    assert registry.champion(in_containers.config).version == "1"

    config = config_for(stack, "ct-subprocess")
    out = io.StringIO()
    local = run_local(config, out=out)
    assert local.ok, out.getvalue()[-6000:]
    assert local.evaluation is not None
    assert {p.stat().st_uid for p in steps_of(local)} == {0}  # ours ran here, as root

    assert run.evaluation["decision"]["blessed"] == local.evaluation["decision"]["blessed"]
    assert run.chosen == local.chosen
    ours, theirs = numbers(run.evaluation), numbers(local.evaluation)
    assert ours.keys() == theirs.keys()
    far = {
        k: (ours[k], theirs[k])
        for k in ours
        if not math.isclose(ours[k], theirs[k], rel_tol=0, abs_tol=1e-9)
    }
    assert not far, far
    steps = len(outputs)
    report(
        request,
        f"subprocess run {local.seconds:.1f}s, containers {run.seconds:.1f}s: "
        f"{(run.seconds - local.seconds) / steps:+.2f}s per step over {steps} steps",
    )


@dataclass(frozen=True)
class Served:
    status: int
    body: dict[str, Any]
    rows: list[dict[str, Any]]
    uid: str
    write_in_root: int
    write_in_tmp: int
    predictions_uri: str


def features(rows: int) -> list[dict[str, Any]]:
    table = synthetic.generate(rows, seed=11)
    drop = {"label", "event_time", "request_id"}
    return [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]


def v2_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = [
        {"name": name, "shape": [len(rows)], "datatype": "BYTES" if name in CATEGORICAL else "FP64",
         "data": [r[name] for r in rows]}
        for name in rows[0]
    ]  # fmt: skip
    return {"id": "ct", "inputs": inputs}


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.loads(response.read()).get("ready"))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def served(in_containers: Ran, built_images: Images, stack: Stack) -> Iterator[Served]:
    name = in_containers.config.model_name
    port = free_port()
    predictions = storage.join(in_containers.config.state_dir, "predictions")
    container = f"ctpipe-serving-{port}"
    podman(
        "run", "-d", "--name", container, "--read-only", "--tmpfs", "/tmp", *env_flags(stack.env),
        built_images.serving,
        "--model_name", name, "--http_port", str(port), "--host", "127.0.0.1", "--enable_grpc", "false",
        "--model-uri", f"models:/{name}@champion", "--predictions-uri", predictions,
        "--log-flush-seconds", "1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        base = f"http://127.0.0.1:{port}"
        while not _get(f"{base}/v2/models/{name}/ready"):
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = podman("logs", container, check=False)
                raise AssertionError(
                    f"predictor {state}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
                )
            time.sleep(1)
        rows = features(300)
        request = urllib.request.Request(
            f"{base}/v2/models/{name}/infer", data=json.dumps(v2_request(rows)).encode(),
            headers={"content-type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as response:
            status, body = response.status, json.loads(response.read())
        uid = podman("exec", container, "id", "-u").stdout.strip()
        root_write = podman("exec", container, "touch", "/opt/venv/written", check=False)
        tmp_write = podman("exec", container, "touch", "/tmp/written", check=False)
    finally:
        podman("stop", "--time", "60", container, check=False)  # SIGTERM: the log is flushed
        podman("rm", "--force", container, check=False)
    yield Served(status, body, rows, uid, root_write.returncode, tmp_write.returncode, predictions)


def test_the_serving_image_answers_v2_with_the_champion_read_only_and_non_root(
    served: Served, in_containers: Ran
) -> None:
    import pandas as pd

    assert served.status == 200, served.body
    assert served.body["model_version"] == in_containers.run.registered_version
    outputs = {o["name"]: o for o in served.body["outputs"]}
    model = registry.load_model(registry.champion(in_containers.config))
    expected = model.predict_proba(pd.DataFrame(served.rows))[:, 1].tolist()
    assert outputs["scores"]["data"] == pytest.approx(expected, abs=1e-12)
    assert served.uid == str(IMAGE_UID)
    assert served.write_in_root != 0  # read-only root filesystem
    assert served.write_in_tmp == 0  # the tmpfs
    logged = predlog.read_predictions(served.predictions_uri, in_containers.config.model_name)
    assert logged.num_rows == len(served.rows)


def test_ctpipe_monitor_runs_in_the_base_image(
    served: Served, in_containers: Ran, built_images: Images, stack: Stack, tmp_path: Path
) -> None:
    config_file = tmp_path / "ctpipe.yaml"
    config_file.write_text(yaml.safe_dump(in_containers.config.to_dict()))
    config_file.chmod(0o644)
    result = podman(
        "run", "--rm", *env_flags(stack.env), "-v", f"{config_file}:/config/ctpipe.yaml:ro",
        built_images.base, "ctpipe", "monitor", "--config", "/config/ctpipe.yaml", "--dry-run", "--no-report",
        check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "decision:" in result.stdout, result.stdout[-3000:]
    # It read the predictor's log and recorded its decision on S3, through the image's code.
    assert f"record: s3://{BUCKET}/{in_containers.config.model_name}/" in result.stdout, (
        result.stdout
    )


@pytest.mark.parametrize("role", ["base", "serving"])
def test_every_image_runs_as_its_non_root_user(built_images: Images, role: str) -> None:
    image = getattr(built_images, role)
    assert (
        podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        == f"{IMAGE_UID}:{IMAGE_UID}"
    )
    uid = podman("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
    assert uid == str(IMAGE_UID)
