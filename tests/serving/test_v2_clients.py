"""Real Open Inference Protocol clients against the predictor, unmodified: NVIDIA's
tritonclient[http] and KServe's own InferenceRESTClient, JSON and binary tensors."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctpipe.config import Config
from tests.serving.conftest import Server, start_server
from tests.serving.test_server import FEATURES, in_process, rows

pytestmark = pytest.mark.services

TEXT = ("region", "channel", "device")


@pytest.fixture(scope="module")
def v2_server(served_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        served_config,
        tmp_path_factory.mktemp("v2") / "predictions",
        "--reload-seconds",
        "0",
        "--max-body-bytes",
        "262144",
    )
    yield running
    if running.process.poll() is None:
        running.stop()


def triton(server: Server) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def triton_inputs(batch: list[dict[str, Any]], binary: bool) -> list[Any]:
    import tritonclient.http as httpclient

    inputs = []
    for name in FEATURES:
        if name in TEXT:
            array = np.array([r[name] for r in batch], dtype=object)
            tensor = httpclient.InferInput(name, [len(batch)], "BYTES")
        else:
            array = np.array(
                [np.nan if r[name] is None else r[name] for r in batch], dtype=np.float64
            )
            tensor = httpclient.InferInput(name, [len(batch)], "FP64")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("count", [1, 20])
def test_tritonclient_infers_one_row_and_batches(
    v2_server: Server, served_config: Config, binary: bool, count: int
) -> None:
    import tritonclient.http as httpclient

    batch = rows(count, seed=11 + count)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("predictions", "scores")
    ]
    # Default outputs (binary_data_output) for the binary case: tritonclient's own default.
    result = triton(v2_server).infer(
        v2_server.model,
        triton_inputs(batch, binary),
        request_id=f"tc-{binary}-{count}",
        outputs=None if binary else outputs,
    )
    labels, scores = in_process(served_config, batch)
    assert result.as_numpy("predictions").tolist() == labels
    assert result.as_numpy("scores").tolist() == pytest.approx(scores, abs=1e-12)
    response = result.get_response()
    assert response["model_version"] == "1" and "parameters" not in response
    if binary:
        ids = [i.decode() for i in result.as_numpy("ids").tolist()]
        assert ids == (
            [f"tc-True-{count}"] if count == 1 else [f"tc-True-{count}-{i}" for i in range(count)]
        )
    else:
        assert result.as_numpy("ids") is None  # only what was asked for


def test_metadata_readiness_and_the_versioned_routes(v2_server: Server) -> None:
    from tritonclient.utils import InferenceServerException

    client = triton(v2_server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(v2_server.model)
    assert client.is_model_ready(v2_server.model, model_version="1")
    assert not client.is_model_ready(v2_server.model, model_version="99")
    metadata = client.get_model_metadata(v2_server.model)
    assert metadata["versions"] == ["1"] and metadata["name"] == v2_server.model
    inputs = {i["name"]: i for i in metadata["inputs"]}
    assert list(inputs) == FEATURES
    assert inputs["num_0"] == {"name": "num_0", "datatype": "FP64", "shape": [-1]}
    assert inputs["region"]["datatype"] == "BYTES"
    assert [o["name"] for o in metadata["outputs"]] == ["predictions", "scores", "ids"]
    assert client.get_model_metadata(v2_server.model, model_version="1") == metadata
    with pytest.raises(InferenceServerException, match=r"version .99. is not served"):
        client.get_model_metadata(v2_server.model, model_version="99")
    batch = rows(2, seed=5)
    result = client.infer(v2_server.model, triton_inputs(batch, True), model_version="1")
    assert result.get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException, match=r"this server serves version .1."):
        client.infer(v2_server.model, triton_inputs(batch, True), model_version="99")


def test_requested_outputs_come_back_alone_in_the_asked_format(v2_server: Server) -> None:
    import tritonclient.http as httpclient

    batch = rows(3, seed=9)
    client = triton(v2_server)
    result = client.infer(
        v2_server.model,
        triton_inputs(batch, False),
        outputs=[httpclient.InferRequestedOutput("scores", binary_data=True)],
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["scores"]
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 3 * 8
    assert result.as_numpy("scores").shape == (3,)
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match='unknown output "probabilities"'):
        client.infer(
            v2_server.model,
            triton_inputs(batch, False),
            outputs=[httpclient.InferRequestedOutput("probabilities")],
        )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_nan_in_a_float_tensor_is_a_missing_value(
    v2_server: Server, served_config: Config, binary: bool
) -> None:
    batch = rows(4, seed=21)
    batch[1]["num_2"] = None
    batch[3]["num_5"] = None
    result = triton(v2_server).infer(v2_server.model, triton_inputs(batch, binary))
    labels, scores = in_process(served_config, batch)
    assert result.as_numpy("predictions").tolist() == labels
    assert result.as_numpy("scores").tolist() == pytest.approx(scores, abs=1e-12)


def test_client_mistakes_are_400s_naming_the_problem(v2_server: Server) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    batch = rows(2, seed=4)
    client = triton(v2_server)
    inputs = triton_inputs(batch, True)
    wrong = httpclient.InferInput("num_0", [2], "INT32")
    wrong.set_data_from_numpy(np.array([1, 2], dtype=np.int32), binary_data=True)
    with pytest.raises(InferenceServerException, match=r'inputs\["region"\]: datatype "FP64"'):
        bad_region = httpclient.InferInput("region", [2], "FP64")
        bad_region.set_data_from_numpy(np.array([1.0, 2.0]), binary_data=True)
        client.infer(v2_server.model, [bad_region if i.name() == "region" else i for i in inputs])
    infinite = httpclient.InferInput("num_1", [2], "FP64")
    infinite.set_data_from_numpy(np.array([np.inf, 1.0]), binary_data=True)
    with pytest.raises(InferenceServerException, match="inf is not a valid value"):
        client.infer(v2_server.model, [infinite if i.name() == "num_1" else i for i in inputs])
    # A binary body whose sizes do not add up, and one over the body limit.
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "num_0",
                    "shape": [2],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    for body, message in [
        (header + b"\0" * 8, "runs past the end of the body"),
        (header + b"\0" * 24, "but 24 follow the JSON header"),
    ]:
        code, answer = raw_post(v2_server, body, len(header))
        assert code == 400 and message in answer["error"], answer
    code, answer = raw_post(v2_server, header + b"\0" * 300_000, len(header))
    assert code == 413 and "--max-body-bytes" in answer["error"]
    assert v2_server.alive()


def raw_post(server: Server, body: bytes, header_length: int) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}/v2/models/{server.model}/infer",
        data=body,
        method="POST",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
    try:
        with urllib.request.urlopen(request, timeout=server.timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("count", [1, 6])
def test_kserve_inference_rest_client(
    v2_server: Server, served_config: Config, binary: bool, count: int
) -> None:
    from kserve import InferInput, InferRequest
    from kserve.inference_client import InferenceRESTClient, RESTConfig

    batch = rows(count, seed=31)
    inputs = []
    for name in FEATURES:
        if name in TEXT:
            tensor = InferInput(name, [len(batch)], "BYTES")
            tensor.set_data_from_numpy(
                np.array([r[name] for r in batch], dtype=object), binary_data=binary
            )
        else:
            tensor = InferInput(name, [len(batch)], "FP64")
            values = [math.nan if r[name] is None else r[name] for r in batch]
            tensor.set_data_from_numpy(np.array(values, dtype=np.float64), binary_data=binary)
        inputs.append(tensor)
    request = InferRequest(v2_server.model, inputs, request_id=f"ks-{binary}-{count}")

    async def go() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=v2_server.timeout))
        try:
            assert await client.is_server_live(v2_server.url)
            assert await client.is_server_ready(v2_server.url)
            assert await client.is_model_ready(v2_server.url, v2_server.model)
            return await client.infer(v2_server.url, request, model_name=v2_server.model)
        finally:
            await client.close()

    response = asyncio.run(go())
    labels, scores = in_process(served_config, batch)
    outputs = {o.name: o for o in response.outputs}
    assert outputs["predictions"].as_numpy().tolist() == labels
    assert outputs["scores"].as_numpy().tolist() == pytest.approx(scores, abs=1e-12)
    assert response.model_name == v2_server.model  # its binary reader drops model_version


def test_bad_requests_log_one_line_each_and_no_traceback(
    served_config: Config, tmp_path: Path
) -> None:
    server = start_server(
        served_config, tmp_path / "log", "--reload-seconds", "0", "--max-body-bytes", "4096"
    )
    try:
        before = len(server.output().splitlines())
        bad: list[tuple[str, bytes, dict[str, str]]] = [
            (f"/v2/models/{server.model}/infer", b'{"inputs": []}', {}),  # missing inputs
            (f"/v2/models/{server.model}/infer", b"{not json", {}),
            (f"/v2/models/{server.model}/infer", b'{"inputs": [1]}', {}),  # FastAPI's 422
            (
                f"/v2/models/{server.model}/infer",
                b"{}" + b"\0" * 9,
                {"Inference-Header-Content-Length": "2"},
            ),
            (f"/v2/models/{server.model}/versions/9/infer", b"{}", {}),
            ("/v2/models/other/infer", b"{}", {}),
            (f"/v1/models/{server.model}:predict", b'{"instances": [{"num_0": 1}]}', {}),
            (f"/v1/models/{server.model}:predict", b"[" * 5000, {}),
        ]
        burst = bad * 4
        for path, body, headers in burst:
            request = urllib.request.Request(
                server.url + path, data=body, method="POST", headers=headers
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=server.timeout)
            assert 400 <= refused.value.code < 500, (path, refused.value.read())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = server.output().splitlines()[before:]
            if sum('HTTP/1.1" 4' in line for line in lines) >= len(burst):
                break
            time.sleep(0.2)
    finally:
        output = server.stop()
    lines = output.splitlines()[before:]
    lines = lines[
        : next((i for i, line in enumerate(lines) if "Shutting down" in line), len(lines))
    ]
    assert not any("Traceback" in line or "ERROR" in line for line in lines), "\n".join(lines)
    access = [line for line in lines if 'HTTP/1.1" 4' in line]
    reasons = [line for line in lines if "refused a request" in line]
    assert len(access) == len(burst) and len(reasons) == len(burst), "\n".join(lines)
    assert len(lines) == 2 * len(burst), "\n".join(lines)


def test_the_readme_tritonclient_example_runs_as_written(
    v2_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import re

    import pandas as pd

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "tritonclient" in b]
    assert len(blocks) == 1
    # The README's own words, with this test server's address and model name.
    code = blocks[0].replace("localhost:8080", v2_server.url.removeprefix("http://"))
    code = code.replace('"ctpipe-demo"', repr(v2_server.model))
    batch = rows(4, seed=29)
    batch[1]["num_2"] = None  # an empty cell: a missing value
    pd.DataFrame(batch).to_csv(tmp_path / "rows.csv", index=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("[") >= 2, printed  # the predictions and the scores
