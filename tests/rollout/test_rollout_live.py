"""The rollout state machine on live traffic: real predictor processes on loopback, a real
prediction log and labels, a real (sqlite) MLflow registry.

Labels are chosen per test: equal to the challenger's answers, the challenger wins; equal
to the champion's, it loses. Everything in between (the log, the shadow scoring, the
paired and two-sample intervals, the aliases, the rendered InferenceService) is real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ctpipe import predlog, registry
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.features import build_model
from ctpipe.rollout import state as rollout_state
from ctpipe.rollout import status
from ctpipe.rollout.controller import Controller
from ctpipe.rollout.health import Prometheus, Scrape
from ctpipe.training.families import build_estimator
from tests.conftest import loopback_service, make_config
from tests.rollout.failing import FailsAboveThreshold
from tests.serving.conftest import Server, start_server

pytestmark = pytest.mark.services

ROWS = 120  # requests per phase


@dataclasses.dataclass
class Setup:
    config: Config
    champion: str
    challenger: str
    rows: list[dict[str, Any]]
    logs: Path
    labels: Path


def _register(config: Config, model: Any, example: Any, classes: list[Any]) -> str:
    saved = registry.save_model_dir(model, example.head(3), Path(tempfile.mkdtemp()) / "model")
    _, version = registry.log_and_register(
        config,
        saved,
        run_name="rollout-test",
        params={},
        metrics={},
        tags={registry.TAG_CLASSES: json.dumps(classes)},
        texts={},
    )
    return version


def _setup(tmp_path: Path, challenger_estimator: Any = None, **rollout: Any) -> Setup:
    logs, labels = tmp_path / "predictions", tmp_path / "labels"
    config = make_config(tmp_path / "state", model_name="rollout-model")
    settings = dataclasses.replace(
        config.deploy.rollout,
        strategy="progressive",
        min_labelled=60,
        min_requests=20,
        bootstrap_samples=300,
        max_latency_ratio=10.0,  # timing noise on a loaded machine is not what these test
        **rollout,
    )
    config = config.replace(
        monitor=dataclasses.replace(config.monitor, predictions=str(logs), labels=str(labels)),
        deploy=dataclasses.replace(
            config.deploy, apply="never", canary_traffic_percent=30, rollout=settings
        ),
    )
    table = synthetic.generate(800, seed=3)
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    x, y = frame[schema.feature_names], frame["label"]
    classes = sorted(y.unique().tolist())
    champion = build_model(schema, build_estimator("linear", "classification", {}, seed=0))
    champion.fit(x, y)
    # The challenger learned another rule: it disagrees with the champion on many rows.
    flipped = np.where(x["num_0"] > 0, 1 - y, y)
    other = build_model(
        schema, challenger_estimator or build_estimator("linear", "classification", {}, seed=0)
    )
    other.fit(x, flipped)
    v1 = _register(config, champion, x, classes)
    v2 = _register(config, other, x[x["num_0"] < x["num_0"].median()], classes)  # it can answer
    registry.promote(config, v1, None, by="test", why="first champion")
    registry.name_challenger(config, v2, v1, by="test")
    rows = table.select(schema.feature_names).slice(0, 3 * ROWS).to_pylist()
    return Setup(config, v1, v2, rows, logs, labels)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Server]]:
    running: list[Server] = []
    yield running
    for server in running:
        server.stop()


def _send(server: Server, rows: list[dict[str, Any]], prefix: str) -> list[Any]:
    answers = []
    for i, row in enumerate(rows):
        code, body, _ = server.v1([row], headers={"x-request-id": f"{prefix}-{i}"})
        answers.append(body["predictions"][0] if code == 200 else None)
    return answers


def _wait_for_rows(setup: Setup, role: str, count: int, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        table = predlog.read_predictions(str(setup.logs), setup.config.model_name, roles=(role,))
        if table.num_rows >= count or time.monotonic() > deadline:
            assert table.num_rows >= count, f"{table.num_rows} {role} rows logged of {count}"
            return table
        time.sleep(0.2)


def _label(setup: Setup, table: Any, by_version: str | None = None) -> None:
    """Label each logged request with what `by_version` answered (its log rows)."""
    rows = table.filter(
        np.asarray(table[predlog.MODEL_VERSION].to_pylist()) == by_version
    ).to_pylist()
    predlog.write_labels(
        str(setup.labels),
        setup.config.model_name,
        [predlog.Label(r[predlog.REQUEST_ID], r[predlog.PREDICTION]) for r in rows],
    )


def _controller(setup: Setup, health: Any = None) -> Controller:
    return Controller(setup.config, str(setup.logs), str(setup.labels), health=health)


def _alias(setup: Setup, name: str) -> str | None:
    ref = registry.get_alias(setup.config, name)
    return ref.version if ref else None


def _manifest(step: Any) -> dict[str, Any]:
    return yaml.safe_load(Path(step.manifest).read_text())


def _args(manifest: dict[str, Any]) -> list[str]:
    return manifest["spec"]["predictor"]["containers"][0]["args"]


def _canary_revision(setup: Setup, served: list[Server]) -> tuple[Server, Controller]:
    """KServe's canary revision: the challenger pinned, answering as "canary"; and the
    controller reading both revisions' /metrics, its baseline taken now that both are up
    (the canary began without a source)."""
    canary = start_server(
        setup.config,
        setup.logs,
        "--model-uri",
        f"models:/{setup.config.model_name}/{setup.challenger}",
        "--role",
        "canary",
        "--shadow-model-uri",
        "none",
    )
    served.append(canary)
    health = Scrape([f"{server.url}/metrics" for server in served])
    controller = _controller(setup, health)
    current = controller.store.load()
    controller.store.save(
        dataclasses.replace(current, baseline=health.baseline(setup.config.model_name))
    )
    return canary, controller


def _shadow_phase(
    setup: Setup,
    served: list[Server],
    tmp_path: Path,
    winner: str,
    shadowed: int = ROWS,
    *extra: str,
) -> Any:
    """Begin the rollout, serve ROWS requests with the challenger in shadow, label them as
    `winner` answered; the controller's next step."""
    controller = _controller(setup)
    began = controller.step(datetime.now(UTC))
    assert began.action == "began" and began.rollout.phase == rollout_state.SHADOW
    args = _args(_manifest(began))
    assert f"models:/{setup.config.model_name}/{setup.champion}" in " ".join(args)
    assert f"models:/{setup.config.model_name}/{setup.challenger}" in " ".join(args)
    # The predictor as `ctpipe serve` runs it: champion alias, challenger followed in shadow.
    server = start_server(setup.config, setup.logs, "--reload-seconds", "0.5", *extra)
    served.append(server)
    assert None not in _send(server, setup.rows[:ROWS], "shadow")
    _wait_for_rows(setup, predlog.ROLE_SHADOW, shadowed)
    if shadowed < ROWS:
        time.sleep(2.0)  # the rest of the shadow's work, and one more flush
    log = predlog.read_predictions(str(setup.logs), setup.config.model_name, roles=None)
    _label(setup, log, winner)
    return controller.step(datetime.now(UTC))


def test_shadow_then_canary_then_promotion(tmp_path: Path, served: list[Server]) -> None:
    setup = _setup(tmp_path)
    step = _shadow_phase(setup, served, tmp_path, winner=setup.challenger)
    assert step.action == rollout_state.CANARY, step.reasons
    assert step.comparison["kind"] == "paired" and step.comparison["low"] > 0
    manifest = _manifest(step)
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 30
    assert "--role=canary" in _args(manifest)
    assert _alias(setup, registry.CHAMPION) == setup.champion  # not yet

    champion_server = served[0]
    canary, controller = _canary_revision(setup, served)
    split = ROWS * 2
    rows = setup.rows[ROWS : ROWS + split]
    _send(champion_server, rows[: split // 2], "live")
    _send(canary, rows[split // 2 :], "canary")
    table = _wait_for_rows(setup, predlog.ROLE_CANARY, split // 2)
    champion_rows = _wait_for_rows(setup, predlog.ROLE_CHAMPION, ROWS + split // 2)
    _label(setup, table, setup.challenger)
    # The champion's canary-time rows, labelled as the challenger would have answered them:
    # the shadow rows of the same requests say what that was.
    shadow = predlog.read_predictions(
        str(setup.logs), setup.config.model_name, roles=(predlog.ROLE_SHADOW,)
    )
    live_ids = set(champion_rows[predlog.REQUEST_ID].to_pylist()) & {
        f"live-{i}" for i in range(split // 2)
    }
    _label(
        setup,
        shadow.filter(np.isin(shadow[predlog.REQUEST_ID].to_pylist(), sorted(live_ids))),
        setup.challenger,
    )
    step = controller.step(datetime.now(UTC))
    assert step.action == rollout_state.PROMOTED, step.reasons
    assert step.comparison["kind"] == "two-sample"
    assert step.health[setup.challenger]["requests"] == split // 2
    # champion moved only now; previous keeps the old one; the challenger alias is gone.
    assert _alias(setup, registry.CHAMPION) == setup.challenger
    assert _alias(setup, registry.PREVIOUS) == setup.champion
    assert _alias(setup, registry.CHALLENGER) is None
    manifest = _manifest(step)
    assert "canaryTrafficPercent" not in manifest["spec"]["predictor"]
    assert f"--model-uri=models:/{setup.config.model_name}/{setup.challenger}" in _args(manifest)
    moves = registry.alias_history(setup.config)
    assert [(m.alias, m.version) for m in moves[-3:]] == [
        (registry.PREVIOUS, setup.champion),
        (registry.CHAMPION, setup.challenger),
        (registry.CHALLENGER, None),
    ]
    assert moves[-2].by == "rollout controller" and "live traffic" in moves[-2].why
    tag = registry.version_ref(
        registry.client(setup.config), setup.config.model_name, setup.challenger
    ).tags[f"{registry.TAG_ALIAS}{registry.CHAMPION}"]
    assert json.loads(tag)["by"] == "rollout controller"
    records = controller.store.history()
    assert [r["action"] for r in records] == ["began", "canary", "promoted"]


def test_a_challenger_worse_on_live_traffic_is_rolled_back_in_shadow(
    tmp_path: Path, served: list[Server]
) -> None:
    setup = _setup(tmp_path)
    step = _shadow_phase(setup, served, tmp_path, winner=setup.champion)
    assert step.action == rollout_state.ROLLED_BACK, step.reasons
    assert step.comparison["high"] < 0 and any("harm" in r for r in step.reasons)
    assert _alias(setup, registry.CHAMPION) == setup.champion
    assert _alias(setup, registry.CHALLENGER) is None
    args = _args(_manifest(step))
    assert f"--model-uri=models:/{setup.config.model_name}/{setup.champion}" in args
    assert "--shadow-model-uri=none" in args
    assert "canaryTrafficPercent" not in _manifest(step)["spec"]["predictor"]
    # The predictor following the aliases stops shadowing once the alias is gone.
    assert step.rollout.final
    assert _controller(setup).step(datetime.now(UTC)).action == "idle"


@contextlib.contextmanager
def _prometheus(tmp_path: Path, servers: list[Server]) -> Iterator[str]:
    """A real Prometheus scraping the predictors every second, as the PodMonitor does in a
    cluster; yields its URL once every target was scraped."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (Debian package `prometheus`; .ci/run installs it)"
        )
    targets = [server.url.removeprefix("http://") for server in servers]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "ctpipe-predictor", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    command = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        "--log.level=warn",
    ]  # fmt: skip
    with loopback_service(lambda port: [*command, f"--web.listen-address=127.0.0.1:{port}"]) as url:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as response:
                active = json.loads(response.read())["data"]["activeTargets"]
            if len(active) == len(targets) and all(t["health"] == "up" for t in active):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus did not scrape the predictors: {active}")
        time.sleep(2.5)  # two scrapes of every series at 0 before any request
        yield url


@pytest.mark.parametrize("source", ["scrape", "prometheus"])
def test_a_canary_that_fails_requests_is_rolled_back(
    tmp_path: Path, served: list[Server], source: str
) -> None:
    setup = _setup(tmp_path, challenger_estimator=FailsAboveThreshold(column=0, threshold=1.0))
    # Shadow errors never reach callers: the shadow scored what it could.
    step = _shadow_phase(setup, served, tmp_path, winner=setup.challenger, shadowed=ROWS // 2)
    if step.action != rollout_state.CANARY:
        pytest.fail(f"expected the canary, got {step.action}: {step.reasons}")
    canary, controller = _canary_revision(setup, served)
    with contextlib.ExitStack() as stack:
        if source == "prometheus":
            url = stack.enter_context(_prometheus(tmp_path, served))
            controller.health = Prometheus(url)
        answers = _send(canary, setup.rows[ROWS : 2 * ROWS], "canary")
        failed = sum(a is None for a in answers)
        assert failed > 0.02 * ROWS
        if source == "prometheus":
            time.sleep(3.0)  # scraped
        step = controller.step(datetime.now(UTC))
    assert step.action == rollout_state.ROLLED_BACK, step.reasons
    assert any(r.startswith("error rate:") for r in step.reasons)
    measured = step.health[setup.challenger]
    if source == "scrape":
        assert measured["errors"] == failed and measured["requests"] == ROWS
    else:  # increase() extrapolates to the ends of its range: close, not exact
        assert measured["errors"] == pytest.approx(failed, rel=0.25)
        assert measured["requests"] == pytest.approx(ROWS, rel=0.25)
        assert measured["p95_seconds"] is not None
    assert _alias(setup, registry.CHAMPION) == setup.champion
    assert _alias(setup, registry.CHALLENGER) is None
    manifest = _manifest(step)
    assert "canaryTrafficPercent" not in manifest["spec"]["predictor"]
    assert f"--model-uri=models:/{setup.config.model_name}/{setup.champion}" in _args(manifest)


def test_no_verdict_before_the_timeout_rolls_back(tmp_path: Path) -> None:
    setup = _setup(tmp_path, timeout="2h")
    controller = _controller(setup)
    start = datetime.now(UTC)
    assert controller.step(start).action == "began"
    waiting = controller.step(start + timedelta(hours=1))
    assert waiting.action == "wait" and any("labelled rows" in r for r in waiting.reasons)
    shown = status.describe(setup.config)
    assert f"rollout of v{setup.challenger} against champion v{setup.champion}: shadow" in shown
    assert "next: the monitor's next visit judges 60+ labelled rows per side" in shown
    assert (
        f"  challenger v{setup.challenger}" in shown and f"  champion   v{setup.champion}" in shown
    )
    ended = controller.step(start + timedelta(hours=2))
    assert ended.action == rollout_state.ROLLED_BACK
    assert any(r.startswith("timeout:") for r in ended.reasons)
    assert _alias(setup, registry.CHAMPION) == setup.champion
    assert _alias(setup, registry.CHALLENGER) is None
    shown = status.describe(setup.config)
    assert "rolled_back" in shown and "next:" not in shown
    assert "challenger -> (removed) by rollout controller: rolled back: timeout" in shown


def test_one_predictor_follows_the_rollout_through_its_canary(
    tmp_path: Path, served: list[Server]
) -> None:
    """`ctpipe serve` on one machine: the predictor reads the rollout state, and in the
    canary phase the challenger it holds in shadow answers the canary's share itself."""
    setup = _setup(tmp_path)
    state = rollout_state.RolloutStore(setup.config.state_dir, setup.config.model_name).uri
    step = _shadow_phase(setup, served, tmp_path, setup.challenger, ROWS, "--rollout-state", state)
    assert step.action == rollout_state.CANARY, step.reasons
    server = served[0]
    health = Scrape([f"{server.url}/metrics"])
    controller = _controller(setup, health)
    controller.store.save(
        dataclasses.replace(
            controller.store.load(), baseline=health.baseline(setup.config.model_name)
        )
    )
    time.sleep(1.5)  # the predictor reads the state on its reload interval (0.5 s)
    rows = setup.rows[ROWS : 3 * ROWS]
    versions = []
    for i, row in enumerate(rows):
        code, body, headers = server.v1([row], headers={"x-request-id": f"live-{i}"})
        assert code == 200, body
        versions.append(headers.get("x-model-version") or headers.get("X-Model-Version"))
    share = versions.count(setup.challenger) / len(versions)
    assert 0.15 < share < 0.45, share  # canary_traffic_percent 30, chosen by request id
    canary = _wait_for_rows(setup, predlog.ROLE_CANARY, versions.count(setup.challenger))
    _label(setup, canary, setup.challenger)
    # The champion's answers of the same span, labelled as the challenger answered them in
    # shadow: the champion loses there.
    shadow = _wait_for_rows(setup, predlog.ROLE_SHADOW, ROWS + versions.count(setup.champion))
    live = shadow.filter(
        np.char.startswith(np.asarray(shadow[predlog.REQUEST_ID].to_pylist(), dtype=str), "live-")
    )
    _label(setup, live, setup.challenger)
    step = controller.step(datetime.now(UTC))
    assert step.action == rollout_state.PROMOTED, step.reasons
    assert step.health[setup.challenger]["requests"] == versions.count(setup.challenger)
    assert step.health[setup.champion]["requests"] == versions.count(setup.champion)
    # The predictor follows: the champion alias moved, so it serves the challenger now.
    deadline = time.monotonic() + 30
    for attempt in range(1000):
        code, body, headers = server.v1([rows[0]], headers={"x-request-id": f"after-{attempt}"})
        assert code == 200, body
        if body.get("model_version") == setup.challenger or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if body.get("model_version") != setup.challenger:
        pytest.fail(f"the predictor did not follow the promotion: {body}")


def test_a_promotion_the_cluster_refuses_moves_no_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: when the promotion's InferenceService cannot be applied, the registry
    does not name a champion the cluster does not serve, and the canary is judged again."""
    from ctpipe import deploy
    from ctpipe.rollout import evidence
    from ctpipe.rollout.evidence import LiveComparison

    setup = _setup(tmp_path)
    config = setup.config.replace(
        deploy=dataclasses.replace(setup.config.deploy, canary_traffic_percent=0)
    )
    controller = Controller(config, str(setup.logs), str(setup.labels))
    start = datetime.now(UTC)
    assert controller.step(start).action == "began"
    clears = LiveComparison("paired", "accuracy", 500, 0.9, 0.8, 0.05, 0.15)
    monkeypatch.setattr(evidence, "compare", lambda *args, **kwargs: clears)
    monkeypatch.setattr(deploy, "should_apply", lambda config: True)

    def refused(manifest: Any, api_client: Any = None) -> Any:
        raise deploy.DeployError("applying InferenceService ctpipe/rollout-model failed: 403")

    monkeypatch.setattr(deploy, "apply", refused)
    with pytest.raises(deploy.DeployError, match="403"):
        controller.step(start + timedelta(hours=1))
    assert _alias(setup, registry.CHAMPION) == setup.champion
    assert _alias(setup, registry.CHALLENGER) == setup.challenger
    assert controller.store.load().phase == rollout_state.SHADOW
    last = registry.alias_history(setup.config)[-1]
    assert (last.alias, last.version) == (registry.CHALLENGER, setup.challenger)
    assert "could not be applied" in last.why
