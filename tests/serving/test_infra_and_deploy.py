"""Infra validation in the real serving runtime, and the InferenceService it leads to."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import deploy, registry, stages
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_model
from ctpipe.infra_validation import InfraValidationFailed, validate
from ctpipe.training.families import build_estimator
from tests.serving.flaky import DiffersWhenServed

pytestmark = pytest.mark.services


def _frame_and_model(config: Config, estimator: Any) -> tuple[Any, Any]:
    table = synthetic.generate(800, seed=4)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    model = build_model(schema, estimator)
    model.fit(frame[schema.feature_names], frame["label"])
    return frame[schema.feature_names], model


def _serve(config: Config, model: Any, frame: Any, tmp_path: Path) -> Any:
    """Infra validation as the pipeline step runs it: on the directory register will log."""
    return validate(
        config, model, registry.save_model_dir(model, frame.head(5), tmp_path / "served"), frame
    )


def test_a_faithful_challenger_passes(small_config: Config, tmp_path: Path) -> None:
    frame, model = _frame_and_model(
        small_config, build_estimator("linear", "classification", {}, seed=0)
    )
    result = _serve(small_config, model, frame, tmp_path)
    assert result.identical and result.rows == 200 and result.max_score_difference == 0.0
    assert 0 < result.p50_ms <= result.p95_ms <= small_config.deploy.infra_latency_ms


def test_a_challenger_that_serves_differently_is_refused(
    small_config: Config, tmp_path: Path
) -> None:
    frame, model = _frame_and_model(small_config, DiffersWhenServed(offset=0.2))
    with pytest.raises(
        InfraValidationFailed, match=r"differ from in-process ones on \d+ of 200 test rows"
    ):
        _serve(small_config, model, frame, tmp_path)


def test_a_budget_it_cannot_meet_fails_the_check(small_config: Config, tmp_path: Path) -> None:
    strict = small_config.replace(
        deploy=dataclasses.replace(small_config.deploy, infra_latency_ms=0.001)
    )
    frame, model = _frame_and_model(strict, build_estimator("linear", "classification", {}, seed=0))
    with pytest.raises(InfraValidationFailed, match="over the budget"):
        _serve(strict, model, frame, tmp_path)


def test_the_pipeline_step_refuses_it_and_the_champion_stays(
    served_config: Config, tmp_path: Path
) -> None:
    """infra_validate's component body, given a challenger that serves differently."""
    import joblib
    from kfp.dsl import Artifact, Dataset, Model

    from ctpipe.components.infra_validate import infra_validate

    before = registry.champion(served_config)
    _, model = _frame_and_model(served_config, DiffersWhenServed(offset=0.2))
    joblib.dump(model, tmp_path / "challenger")
    table = synthetic.generate(800, seed=4)
    schema = schema_module.infer(table, served_config)
    (tmp_path / "schema").write_text(schema.to_json())
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "test")
    with pytest.raises(SystemExit):
        infra_validate.python_func(
            config=served_config.to_dict(),
            model=Model(uri=str(tmp_path / "challenger")),
            test=Dataset(uri=str(tmp_path / "test")),
            schema=Artifact(uri=str(tmp_path / "schema")),
            served=Model(uri=str(tmp_path / "served")),
        )
    assert registry.champion(served_config).version == before.version


# ----------------------------------------------------------------------- deploy


def test_render_canary_promote_and_gpu(served_config: Config) -> None:
    ref = registry.champion(served_config)
    location = deploy.locate(served_config, ref)
    assert location.sha256 == ref.tags[registry.TAG_MODEL_SHA256]
    canary = deploy.render(served_config, location, 10)
    predictor = canary["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    container = predictor["containers"][0]
    assert container["image"].startswith("ctpipe/serving:")
    assert (
        "--model-sha256" in container["args"]
        or f"models:/{served_config.model_name}/{ref.version}" in container["args"]
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    promote = deploy.render(served_config, location, 100)
    assert "canaryTrafficPercent" not in promote["spec"]["predictor"]
    gpu = served_config.replace(
        deploy=dataclasses.replace(
            served_config.deploy,
            gpu=1,
            tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        )
    )
    rendered = deploy.render(gpu, location, 100)["spec"]["predictor"]
    assert rendered["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert rendered["tolerations"][0]["key"] == "nvidia.com/gpu" and rendered["nodeSelector"]


def test_a_model_name_kubernetes_refuses_is_named(served_config: Config) -> None:
    bad = served_config.replace(model_name="Served_Model")
    with pytest.raises(deploy.DeployError, match=r"deploy\.service"):
        deploy.service_name(bad)


def test_the_deploy_stage_writes_the_manifest_locally(
    served_config: Config, tmp_path: Path
) -> None:
    result = stages.deploy(served_config, str(tmp_path / "isvc.yaml"))
    assert not result.applied  # no cluster here
    manifest = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert (
        manifest["kind"] == "InferenceService"
        and manifest["metadata"]["annotations"]["ctpipe.io/model-version"] == result.version
    )


class _RecordingApiServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.requests: list[dict[str, Any]] = []


class _ApiHandler(BaseHTTPRequestHandler):
    server: _RecordingApiServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body),
            }
        )
        reply = json.dumps(json.loads(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def api_server() -> Iterator[_RecordingApiServer]:
    server = _RecordingApiServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_apply_is_a_server_side_apply_with_the_real_client(
    served_config: Config, api_server: _RecordingApiServer
) -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{api_server.server_address[1]}"
    configuration.api_key = {"authorization": "sa-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    manifest = deploy.render(
        served_config, deploy.locate(served_config, registry.champion(served_config)), 10
    )
    deploy.apply(manifest, client.ApiClient(configuration))
    (request,) = api_server.requests
    assert request["path"] == (
        "/apis/serving.kserve.io/v1beta1/namespaces/ctpipe/inferenceservices/served-model?fieldManager=ctpipe&force=true"
    )
    assert request["headers"]["content-type"] == "application/apply-patch+yaml"
    assert request["headers"]["authorization"] == "Bearer sa-token"
    assert request["body"] == manifest
