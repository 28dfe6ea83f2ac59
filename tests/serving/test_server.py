"""The predictor as a real process on loopback: protocols, refusals, hot reload, the log."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ctpipe import predlog, registry
from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.serving import metrics
from tests.serving.conftest import Server, start_server, train_and_register

pytestmark = pytest.mark.services

FEATURES = [
    "num_0",
    "num_1",
    "num_2",
    "num_3",
    "num_4",
    "num_5",
    "num_6",
    "num_7",
    "region",
    "channel",
    "device",
]


def rows(count: int, seed: int = 3) -> list[dict[str, Any]]:
    table = synthetic.generate(count, seed=seed, world=7)
    return [{k: r[k] for k in FEATURES} for r in table.to_pylist()]


def in_process(config: Config, instances: list[dict[str, Any]]) -> tuple[list[Any], list[float]]:
    import pandas as pd

    model = registry.load_model(registry.champion(config))
    proba = model.predict_proba(pd.DataFrame(instances))
    return [model.classes_[i].item() for i in proba.argmax(axis=1)], proba[:, 1].tolist()


def test_v1_round_trip_matches_in_process_predictions(
    server: Server, served_config: Config
) -> None:
    batch = rows(50)
    status, body, headers = server.v1(batch, headers={"x-request-id": "req-7"})
    assert status == 200, body
    labels, scores = in_process(served_config, batch)
    assert body["predictions"] == labels and body["scores"] == scores  # exact: floats survive JSON
    assert body["model_version"] == "1" and headers["x-model-version"] == "1"
    assert body["ids"] == [f"req-7-{i}" for i in range(50)]


def v2_inputs(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": [len(batch)], "datatype": "BYTES" if name in ("region", "channel", "device") else "FP64",
         "data": [r[name] for r in batch]}
        for name in FEATURES
    ]  # fmt: skip


def test_v2_round_trip(server: Server, served_config: Config) -> None:
    batch = rows(5)
    status, body, _ = server.post(
        f"/v2/models/{server.model}/infer", {"id": "abc", "inputs": v2_inputs(batch)}
    )
    assert status == 200, body
    assert body["model_version"] == "1" and body["id"] == "abc"
    outputs = {o["name"]: o for o in body["outputs"]}
    labels, scores = in_process(served_config, batch)
    assert outputs["predictions"]["data"] == labels and outputs["scores"]["data"] == scores
    assert outputs["ids"]["data"] == [f"abc-{i}" for i in range(5)]


def test_requests_leave_no_warnings_in_the_server_log(server: Server) -> None:
    # Each prediction resets Python's record of warnings already shown (scikit-learn and
    # pandas use catch_warnings), so a warning on the request path repeats per request.
    for instance in rows(3):
        assert server.v1([instance])[0] == 200
        status, body, _ = server.post(
            f"/v2/models/{server.model}/infer", {"inputs": v2_inputs([instance])}
        )
        assert status == 200, body
    output = server.stop()
    assert "Warning" not in output, output[-2000:]
    assert "Application shutdown complete" in output  # the log was read to its end


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (lambda r: r.update(num_3="abc"), 400, "instances[0].num_3: expected a number, got 'abc'"),
        (lambda r: r.pop("region"), 400, 'missing field "region"'),
        (lambda r: r.update(colour="red"), 400, 'unknown field "colour"'),
        (lambda r: r.update(region=3), 400, "instances[0].region: expected text, got 3"),
    ],
)
def test_malformed_instances_are_refused_by_name(
    server: Server, change: Any, status: int, message: str
) -> None:
    instance = rows(1)[0]
    change(instance)
    code, body, _ = server.v1([instance])
    assert code == status and message in body["error"], body
    assert server.alive()


def test_nan_invalid_json_and_an_oversized_body(server: Server) -> None:
    path = f"/v1/models/{server.model}:predict"
    code, body, _ = server.post(path, b'{"instances": [{"num_0": NaN}]}')
    assert code == 400 and "NaN" in body["error"]
    code, body, _ = server.post(path, b'{"instances": [')
    assert code == 400 and "not valid JSON" in body["error"]
    huge = b'{"instances": [' + b'{"num_0": 1.0},' * 40_000 + b'{"num_0": 1.0}]}'
    code, body, _ = server.post(path, huge)
    assert code == 413 and "--max-body-bytes" in body["error"]
    code, body, _ = server.post(path, {"instances": []})
    assert code == 400 and "non-empty list" in body["error"]
    # A body declared far over the limit is refused before a byte of it is read.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=server.timeout) as raw:
        raw.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**10}\r\n\r\n".encode()
        )
        assert raw.recv(4096).startswith(b"HTTP/1.1 413")
    assert server.alive()
    text = server.get("/metrics")
    refused = f'{metrics.REQUESTS}{{model="{server.model}",protocol="v1",status="413",version="1"}}'
    assert f"{refused} 2.0" in text  # the version serving, as nothing answered
    assert f'{metrics.MODEL_INFO}{{model="{server.model}",version="1"}} 1.0' in text
    assert f"{metrics.LATENCY}_bucket" in text


def test_hot_reload_under_load_drops_nothing_and_the_log_keeps_every_request(
    served_config: Config, tmp_path: Path
) -> None:
    server = start_server(served_config, tmp_path / "log", "--reload-seconds", "0.2")
    batch = rows(3)
    failures: list[Any] = []
    versions: list[str] = []
    sent: list[str] = []
    stop = threading.Event()

    def hammer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            rid = f"w{worker}-{i}"
            code, body, _ = server.v1(batch[:1], headers={"x-request-id": rid})
            sent.append(rid)
            if code != 200:
                failures.append((code, body))
            else:
                versions.append(body["model_version"])
            i += 1

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    try:
        # A new champion while requests flow: train, register and promote v2.
        current = registry.champion(served_config)
        version = train_and_register(served_config, tmp_path / "v2", seed=8)
        assert version != current.version
        # Under a progressive rollout, registration names it challenger (scored in shadow
        # meanwhile): the champion alias moves here either way.
        registry.client(served_config).set_registered_model_alias(
            served_config.model_name, registry.CHAMPION, version
        )
        deadline = time.monotonic() + 60
        while "2" not in versions and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join()
    output = server.stop()
    assert not failures, failures[:3]
    assert versions[0] == "1" and versions[-1] == "2", output[-2000:]
    # After shutdown, the prediction log holds every request exactly once.
    logged = predlog.read_predictions(str(tmp_path / "log"), served_config.model_name)
    ids = logged.column(predlog.REQUEST_ID).to_pylist()
    assert sorted(ids) == sorted(sent) and len(set(ids)) == len(ids)
    assert set(logged.column(predlog.MODEL_VERSION).to_pylist()) == {"1", "2"}
    # Restore the module's champion for other tests, with no challenger.
    registry.promote(served_config, current.version, expected_champion=version)
    client = registry.client(served_config)
    if registry.get_alias(served_config, "challenger", client) is not None:
        client.delete_registered_model_alias(served_config.model_name, "challenger")


def test_a_missing_model_keeps_the_server_down(served_config: Config, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="alias 'nope'"):
        start_server(
            served_config,
            tmp_path / "log",
            "--model-uri",
            f"models:/{served_config.model_name}@nope",
            timeout=60,
        )
