"""Shadow scoring with real predictor processes on loopback (issue 18): the challenger
alias is scored beside the champion by default, followed when it moves or goes, and its
answers reach the prediction log as shadow rows with the champion's request ids."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctpipe import predlog, registry
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_model
from ctpipe.serving import metrics
from tests.conftest import check_metrics, make_config
from tests.serving.conftest import Server, start_server, train_and_register
from tests.serving.raising import RaisesOnAbsurdInput

pytestmark = pytest.mark.services

CHALLENGER = "challenger"


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, list[str]]]:
    """Three blessed versions of one model; the champion alias on the first."""
    root = tmp_path_factory.mktemp("shadowed")
    config = make_config(root / "state", model_name="shadowed-model")
    config = config.replace(search=config.search.__class__(candidates=config.search.candidates[:1]))
    client = registry.client(config)
    versions: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CTPIPE_TRAIN_THREADS", "1")
        for seed in (7, 8, 9):
            versions.append(train_and_register(config, root / f"v{seed}", seed=seed))
            # Whatever registration named it, the first version stays the champion.
            client.set_registered_model_alias(config.model_name, registry.CHAMPION, versions[0])
    assert len(set(versions)) == 3
    set_challenger(config, None)
    yield config, versions


def register_raising(config: Config) -> str:
    """A blessed version that raises on absurd input (its own input example is fine)."""
    table = synthetic.generate(600, seed=3)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    model = build_model(schema, RaisesOnAbsurdInput())
    model.fit(frame[schema.feature_names], frame["label"])
    target = Path(tempfile.mkdtemp()) / "model"
    saved = registry.save_model_dir(model, frame[schema.feature_names].head(3), target)
    classes = sorted(frame["label"].unique().tolist())
    _, version = registry.log_and_register(
        config,
        saved,
        run_name="raising-shadow",
        params={},
        metrics={},
        tags={registry.TAG_CLASSES: json.dumps(classes)},
        texts={},
    )
    return str(version)


def set_challenger(config: Config, version: str | None) -> None:
    client = registry.client(config)
    if version is not None:
        client.set_registered_model_alias(config.model_name, CHALLENGER, version)
    elif registry.get_alias(config, CHALLENGER, client) is not None:
        client.delete_registered_model_alias(config.model_name, CHALLENGER)


def instances(count: int, seed: int = 3) -> list[dict[str, Any]]:
    table = synthetic.generate(count, seed=seed, world=7)
    return [
        {k: v for k, v in r.items() if k not in ("label", "event_time", "request_id")}
        for r in table.to_pylist()
    ]


def shadow_versions(server: Server) -> set[str]:
    """The versions /metrics says are scoring in shadow."""
    found: set[str] = set()
    for family in text_string_to_metric_families(server.get("/metrics")):
        if family.name == metrics.SHADOW_INFO:
            found |= {s.labels["version"] for s in family.samples if s.value == 1}
    return found


def shadow_samples(server: Server) -> list[Any]:
    """The samples of the shadow counters: none unless a shadow is configured."""
    names = {
        m.removesuffix("_total")
        for m in (metrics.SHADOW_ROWS, metrics.SHADOW_DROPPED, metrics.SHADOW_FAILED)
    }
    return [
        sample
        for family in text_string_to_metric_families(server.get("/metrics"))
        if family.name in names
        for sample in family.samples
    ]


def wait_for(condition: Callable[[], bool], what: str, server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{server.output()[-3000:]}")
        time.sleep(0.1)


def ask(server: Server, request_ids: list[str]) -> None:
    """One single-row request per id: answered by the champion, v1."""
    for request_id, instance in zip(request_ids, instances(len(request_ids)), strict=True):
        status, body, headers = server.v1([instance], headers={"x-request-id": request_id})
        assert status == 200, body
        assert body["model_version"] == "1" and headers["x-model-version"] == "1", body


def logged(server: Server) -> dict[tuple[str, str], str]:
    """(request id, role) -> model version, for every row in the log."""
    table = predlog.read_predictions(str(server.log_dir), server.model, roles=None)
    rows = table.select([predlog.REQUEST_ID, predlog.ROLE, predlog.MODEL_VERSION]).to_pylist()
    found: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["request_id"], row["role"])
        assert key not in found, f"{key} logged twice"
        found[key] = row["model_version"]
    return found


def test_the_challenger_is_scored_in_shadow_and_followed(
    shadowed: tuple[Config, list[str]], tmp_path: Path
) -> None:
    config, (v1, v2, v3) = shadowed
    set_challenger(config, v2)
    server = start_server(config, tmp_path / "log", "--reload-seconds", "0.3")
    try:
        assert shadow_versions(server) == {v2}  # loaded before the server was ready
        ask(server, ["a1", "a2", "a3"])
        set_challenger(config, v3)  # the alias moves
        wait_for(lambda: shadow_versions(server) == {v3}, "the shadow to follow the alias", server)
        ask(server, ["b1", "b2"])
        set_challenger(config, None)  # the alias is deleted: no shadow, quietly
        wait_for(lambda: not shadow_versions(server), "the shadow to stop", server)
        ask(server, ["c1"])
        set_challenger(config, v2)
        wait_for(lambda: shadow_versions(server) == {v2}, "the shadow to come back", server)
        ask(server, ["d1"])
        set_challenger(config, v1)  # the champion's own version: nothing to compare
        wait_for(lambda: not shadow_versions(server), "the shadow to stop again", server)
        ask(server, ["e1"])
        scored = f'{metrics.SHADOW_ROWS}{{model="{server.model}"}} 6.0'
        wait_for(lambda: scored in server.get("/metrics"), "6 rows scored in shadow", server)
        scrape = server.get("/metrics")
    finally:
        output = server.stop()
        set_challenger(config, None)
    assert "Traceback" not in output, output[-3000:]
    served = ["a1", "a2", "a3", "b1", "b2", "c1", "d1", "e1"]
    expected = {(rid, "champion"): v1 for rid in served}
    expected |= {(rid, "shadow"): v2 for rid in ("a1", "a2", "a3", "d1")}
    expected |= {(rid, "shadow"): v3 for rid in ("b1", "b2")}
    assert logged(server) == expected
    # The monitor's read: only the answers callers got.
    answers = predlog.read_predictions(str(server.log_dir), server.model)
    assert sorted(answers[predlog.REQUEST_ID].to_pylist()) == sorted(served)
    assert f'{metrics.SHADOW_DROPPED}{{model="{server.model}"}} 0.0' in scrape
    assert f'{metrics.SHADOW_FAILED}{{model="{server.model}"}} 0.0' in scrape


def test_shadow_off_and_a_shadow_that_does_not_load(
    shadowed: tuple[Config, list[str]], tmp_path: Path
) -> None:
    config, (_, v2, _) = shadowed
    set_challenger(config, v2)
    try:
        off = start_server(config, tmp_path / "off", "--shadow-model-uri", "none")
        try:
            ask(off, ["n1", "n2"])
            assert not shadow_versions(off)
            assert not shadow_samples(off)
        finally:
            off.stop()
        assert logged(off) == {("n1", "champion"): "1", ("n2", "champion"): "1"}

        # A version that does not exist (or is unblessed): logged, skipped, the champion serves.
        missing = f"models:/{config.model_name}/99"
        broken = start_server(config, tmp_path / "broken", "--shadow-model-uri", missing)
        try:
            ask(broken, ["m1"])
            assert not shadow_versions(broken)
        finally:
            output = broken.stop()
        assert f"cannot load {missing}" in output
        assert logged(broken) == {("m1", "champion"): "1"}
    finally:
        set_challenger(config, None)


def test_a_pinned_shadow_passes_promtool(
    shadowed: tuple[Config, list[str]], tmp_path: Path, promtool: str
) -> None:
    config, (_, _, v3) = shadowed
    server = start_server(
        config,
        tmp_path / "log",
        "--shadow-model-uri",
        f"models:/{config.model_name}/{v3}",
        "--reload-seconds",
        "0",
    )
    try:
        assert shadow_versions(server) == {v3}
        for count in (1, 5):
            status, body, _ = server.v1(instances(count))
            assert status == 200 and body["model_version"] == "1", body
        wait_for(
            lambda: (
                f'{metrics.SHADOW_ROWS}{{model="{server.model}"}} 6.0' in server.get("/metrics")
            ),
            "the shadow to score both requests",
            server,
        )
        text = server.get("/metrics")
    finally:
        server.stop()
    check_metrics(promtool, text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families[metrics.SHADOW_INFO].type == "gauge"
    for name in (metrics.SHADOW_ROWS, metrics.SHADOW_DROPPED, metrics.SHADOW_FAILED):
        assert families[name.removesuffix("_total")].type == "counter"
    roles = logged(server)
    assert sorted(set(roles.values())) == ["1", v3]
    assert len([k for k in roles if k[1] == "shadow"]) == 6


def test_a_shadow_that_raises_never_changes_an_answer(
    shadowed: tuple[Config, list[str]], tmp_path: Path
) -> None:
    config, (v1, _, _) = shadowed
    broken = register_raising(config)
    set_challenger(config, broken)
    server = start_server(config, tmp_path / "log")
    try:
        assert shadow_versions(server) == {broken}
        rows = instances(3)
        absurd = {**rows[2], "num_0": 1e9}  # the champion answers it; the shadow raises
        answers = {}
        for request_id, row in (("ok-1", rows[0]), ("bad", absurd), ("ok-2", rows[1])):
            status, body, headers = server.v1([row], headers={"x-request-id": request_id})
            assert status == 200, body
            assert body["model_version"] == v1 and headers["x-model-version"] == v1
            answers[request_id] = body
        wait_for(
            lambda: (
                f'{metrics.SHADOW_FAILED}{{model="{server.model}"}} 1.0' in server.get("/metrics")
            ),
            "the shadow's failure to be counted",
            server,
        )
    finally:
        output = server.stop()
        set_challenger(config, None)
    assert output.count("rows failed since the last report") == 1, output[-3000:]
    assert "this code path has a bug" in output
    assert logged(server) == {
        ("ok-1", "champion"): v1,
        ("bad", "champion"): v1,
        ("ok-2", "champion"): v1,
        ("ok-1", "shadow"): broken,
        ("ok-2", "shadow"): broken,
    }
    # The same request to a predictor with no shadow gets the same answer.
    plain = start_server(config, tmp_path / "plain", "--shadow-model-uri", "none")
    try:
        status, body, _ = plain.v1([absurd], headers={"x-request-id": "bad"})
    finally:
        plain.stop()
    assert status == 200
    for key in ("predictions", "scores", "model_version"):
        assert body[key] == answers["bad"][key]
