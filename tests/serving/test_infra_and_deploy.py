"""Infra validation in the real serving runtime, and the InferenceService it leads to."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import deploy, infra_validation, registry, stages
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_model
from ctpipe.infra_validation import (
    Champion,
    InfraValidationFailed,
    Latency,
    Measurement,
    validate,
)
from ctpipe.training.families import build_estimator
from tests.serving.conftest import ROOT
from tests.serving.flaky import DiffersWhenServed
from tests.serving.slow import SlowToAnswer

pytestmark = pytest.mark.services


def _frame_and_model(config: Config, estimator: Any, drop: tuple[str, ...] = ()) -> tuple[Any, Any]:
    table = synthetic.generate(800, seed=4).drop_columns(list(drop))
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    model = build_model(schema, estimator)
    model.fit(frame[schema.feature_names], frame["label"])
    return frame[schema.feature_names], model


def _linear() -> Any:
    return build_estimator("linear", "classification", {}, seed=0)


def _with(config: Config, **deploy: Any) -> Config:
    return config.replace(deploy=dataclasses.replace(config.deploy, **deploy))


def _serve(
    config: Config, model: Any, frame: Any, tmp_path: Path, champion: Champion | None = None
) -> Any:
    """Infra validation as the pipeline step runs it: on the directory register will log."""
    saved = registry.save_model_dir(model, frame.head(5), tmp_path / "served")
    return validate(config, model, saved, frame, champion)


def _champion_dir(config: Config, tmp_path: Path, drop: tuple[str, ...] = ()) -> Champion:
    """A normal champion, saved as the registry stores it, served from its directory."""
    frame, model = _frame_and_model(config, _linear(), drop)
    saved = registry.save_model_dir(model, frame.head(5), tmp_path / "champion")
    return Champion("7", saved.path, saved.sha256, tuple(frame.columns))


@contextmanager
def _busy_cores() -> Iterator[None]:
    """Every core spinning (at least two burners), as on a node shared with training jobs."""
    count = max(2, min(len(os.sched_getaffinity(0)), 8))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()


def _step_inputs(config: Config, tmp_path: Path, estimator: Any) -> dict[str, Any]:
    """What the infra-validate step receives: a joblib model with its record (SHA-256),
    test rows and a schema."""
    import pyarrow.parquet as pq

    _, model = _frame_and_model(config, estimator)
    sha256 = stages.dump_step_model(model, str(tmp_path / "challenger"))
    table = synthetic.generate(800, seed=4)
    (tmp_path / "schema").write_text(schema_module.infer(table, config).to_json())
    pq.write_table(table, tmp_path / "test")
    return {
        "model_path": str(tmp_path / "challenger"),
        "model_metadata": {stages.MODEL_SHA256: sha256},
        "test_path": str(tmp_path / "test"),
        "schema_path": str(tmp_path / "schema"),
        "served_out": str(tmp_path / "served"),
    }


def test_without_a_champion_only_the_ceiling_applies(small_config: Config, tmp_path: Path) -> None:
    frame, model = _frame_and_model(small_config, _linear())
    result = _serve(small_config, model, frame, tmp_path)
    assert result.identical and result.rows == 200 and result.max_score_difference == 0.0
    assert result.champion_version is None and result.ratio is None
    assert result.champion_p95_ms is None and result.samples == 100
    assert 0 < result.challenger_p50_ms <= result.challenger_p95_ms <= result.ceiling_ms
    assert "no champion yet: only the 1000 ms ceiling applies" in result.describe()
    assert "identically" in result.describe()
    assert json.loads(json.dumps(result.to_dict()))["judged_against"].startswith("no champion yet")
    assert "infra_champion_p95_ms" not in result.metadata()


def test_it_passes_next_to_the_champion_on_a_busy_node(
    served_config: Config, tmp_path: Path
) -> None:
    """The registered champion, served by the same step, slowed by the same load."""
    config = _with(served_config, infra_rows=50)
    inputs = _step_inputs(config, tmp_path, _linear())
    with _busy_cores():
        result, metadata = stages.infra_validate(config, **inputs)
    assert result.champion_version == registry.champion(config).version
    assert result.ratio is not None and result.ratio <= config.deploy.infra_latency_ratio
    assert result.champion_p50_ms is not None and result.champion_p95_ms is not None
    assert f"champion v{result.champion_version} p50" in result.describe()
    assert {"infra_challenger_p95_ms", "infra_champion_p95_ms", "infra_ratio"} <= set(
        result.metadata()
    )
    assert metadata["sha256"] == registry.file_sha256(Path(inputs["served_out"]) / "model.pkl")


def test_a_really_slower_challenger_fails_the_ratio(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~50 ms per answer against a normal champion. The champion was trained without one
    column, so it is sent only the columns its signature takes."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    config = _with(small_config, infra_rows=20, infra_latency_samples=20)
    champion = _champion_dir(config, tmp_path, drop=("num_7",))
    assert "num_7" not in champion.columns
    frame, model = _frame_and_model(config, SlowToAnswer(delay_seconds=0.05))
    with pytest.raises(InfraValidationFailed, match=r"deploy\.infra_latency_ratio") as failure:
        _serve(config, model, frame, tmp_path, champion)
    message = str(failure.value)
    assert "Measured twice" in message and "deploy.infra_latency_ms" not in message
    assert message.count("champion p50") == 2 and message.count("challenger p50") == 2


def test_a_champion_that_cannot_be_served_fails_the_check(
    small_config: Config, tmp_path: Path
) -> None:
    """Fail closed: never fall back to the ceiling alone."""
    champion = dataclasses.replace(_champion_dir(small_config, tmp_path), sha256="0" * 64)
    frame, model = _frame_and_model(small_config, _linear())
    with pytest.raises(
        InfraValidationFailed, match=r"champion v7 could not be served beside the challenger"
    ):
        _serve(small_config, model, frame, tmp_path, champion)


def test_a_champion_that_needs_columns_the_rows_lack_fails_the_check(
    small_config: Config, tmp_path: Path
) -> None:
    champion = _champion_dir(small_config, tmp_path)
    champion = dataclasses.replace(champion, columns=(*champion.columns, "retired_feature"))
    frame, model = _frame_and_model(small_config, _linear())
    with pytest.raises(
        InfraValidationFailed,
        match=r"champion v7 takes columns the test rows lack \(retired_feature\)",
    ):
        _serve(small_config, model, frame, tmp_path, champion)


def test_a_miss_is_measured_again_before_it_counts(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = Measurement(Latency(5.0, 2000.0), None), Measurement(Latency(5.0, 9.0), None)
    measurements = iter([first, second])
    monkeypatch.setattr(infra_validation, "measure", lambda *_: next(measurements))
    frame, model = _frame_and_model(small_config, _linear())
    result = _serve(small_config, model, frame, tmp_path)
    assert result.retried and result.challenger_p95_ms == 9.0
    assert "passed when measured again" in result.describe()


def test_a_budget_it_cannot_meet_twice_fails_the_check(
    small_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = _with(small_config, infra_latency_ms=0.001, infra_latency_samples=10)
    calls = []
    real = infra_validation.measure

    def counted(*args: Any) -> Measurement:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(infra_validation, "measure", counted)
    frame, model = _frame_and_model(strict, _linear())
    with pytest.raises(InfraValidationFailed, match=r"ceiling deploy\.infra_latency_ms"):
        _serve(strict, model, frame, tmp_path)
    assert len(calls) == 2


def test_a_challenger_that_serves_differently_is_refused(
    small_config: Config, tmp_path: Path
) -> None:
    frame, model = _frame_and_model(small_config, DiffersWhenServed(offset=0.2))
    with pytest.raises(
        InfraValidationFailed, match=r"differ from in-process ones on \d+ of 200 test rows"
    ):
        _serve(small_config, model, frame, tmp_path)


def test_the_pipeline_step_refuses_it_and_the_champion_stays(
    served_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """infra_validate's component body, given a challenger that serves differently."""
    from kfp.dsl import Artifact, Dataset, Model

    from ctpipe.components.infra_validate import infra_validate

    before = registry.champion(served_config)
    inputs = _step_inputs(served_config, tmp_path, DiffersWhenServed(offset=0.2))
    with pytest.raises(SystemExit):
        infra_validate.python_func(
            config=served_config.to_dict(),
            model=Model(uri=inputs["model_path"], metadata=inputs["model_metadata"]),
            test=Dataset(uri=inputs["test_path"]),
            schema=Artifact(uri=inputs["schema_path"]),
            served=Model(uri=inputs["served_out"]),
        )
    assert registry.champion(served_config).version == before.version
    assert "differ from in-process ones" in capsys.readouterr().out


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
        f"--model-sha256={location.sha256}" in container["args"]
        or f"--model-uri=models:/{served_config.model_name}/{ref.version}" in container["args"]
    )
    assert "--role=canary" in container["args"] and "--shadow-model-uri=none" in container["args"]
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
