"""Shadow scoring in the predictor (issue 18), at unit level: a real ChampionModel and a
real prediction log writer, with small fake models and sources. The loopback tests with
registered models are in tests/serving/test_shadow.py."""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ctpipe import predlog
from ctpipe.blessing import UnblessedModel
from ctpipe.predlog import PredictionLogWriter
from ctpipe.serving import metrics
from ctpipe.serving.__main__ import shadow_model_uri
from ctpipe.serving.model import VERSION_HEADER, ChampionModel
from ctpipe.serving.source import Loaded, ModelSource, Signature

SIGNATURE = Signature((("x", "double"), ("c", "string")))


class Model:
    """Answers class 1 with probability `positive` for every row; counts its calls."""

    def __init__(
        self,
        positive: float,
        *,
        fail: bool = False,
        fail_on: float | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.positive = positive
        self.fail = fail
        self.fail_on = fail_on
        self.gate = gate
        self.calls: list[int] = []
        self.entered = threading.Event()

    def predict_proba(self, frame: Any) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail or (self.fail_on is not None and bool((frame["x"] == self.fail_on).any())):
            raise RuntimeError("the shadow model is broken")
        self.calls.append(len(frame))
        p = np.full(len(frame), self.positive)
        return np.column_stack([1 - p, p])


def loaded(model: Model, version: str, signature: Signature = SIGNATURE) -> Loaded:
    return Loaded(model, version, signature, "classification", (0, 1))


class Source:
    """A ModelSource stand-in: an alias whose version the test moves, or a pinned model."""

    def __init__(self, models: dict[str, Loaded], version: str | None, *, alias: bool = True):
        self.models = models
        self.version = version
        self.uri = "models:/m@challenger" if alias else "/models/pinned"
        self.alias = ("m", "challenger") if alias else None
        self.loads = 0

    def current_version(self) -> str | None:
        return self.version if self.alias else None

    def load(self) -> Loaded:
        self.loads += 1
        if self.version is None:
            raise RuntimeError("alias not set")
        found = self.models[self.version]
        if isinstance(found, Exception):
            raise found
        return found


def name() -> str:
    return f"shadow-{uuid.uuid4().hex[:8]}"


def metric(family: str, model: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(family, {"model": model, **labels})


def serve(
    tmp_path: Path,
    champion: Loaded,
    shadow: Any,
    *,
    queue_rows: int = 10_000,
    role: str = "champion",
    writer: bool = True,
) -> ChampionModel:
    model_name = name()
    log_writer = PredictionLogWriter(str(tmp_path / "log"), model_name) if writer else None
    served = ChampionModel(
        model_name,
        Source({champion.version: champion}, champion.version, alias=False),  # type: ignore[arg-type]
        log_writer=log_writer,
        reload_seconds=0,
        shadow=shadow,
        shadow_queue_rows=queue_rows,
        role=role,
    )
    served.load()
    return served


def ask(
    served: ChampionModel, ids: list[str], x: float = 0.0
) -> tuple[dict[str, Any], dict[str, str]]:
    instances = [{"x": x + i, "c": "a"} for i in range(len(ids))]
    batch = served.preprocess({"instances": instances, "ids": ids})
    headers: dict[str, str] = {}
    return served.predict(batch, response_headers=headers), headers


def logged(tmp_path: Path, served: ChampionModel) -> list[tuple[str, str, str, str, float]]:
    table = predlog.read_predictions(str(tmp_path / "log"), served.name, roles=None)
    return sorted(
        (r["request_id"], r["role"], r["model_version"], r["prediction"], r["score"])
        for r in table.to_pylist()
    )


# ------------------------------------------------------------------------ scoring


def test_the_shadow_scores_after_the_champion_and_the_answer_is_the_champions(
    tmp_path: Path,
) -> None:
    shadow_model = Model(0.9)
    source = Source({"2": loaded(shadow_model, "2")}, "2")
    served = serve(tmp_path, loaded(Model(0.2), "1"), source)
    body, headers = ask(served, ["a", "b"])
    assert body["predictions"] == [0, 0] and body["scores"] == [0.2, 0.2]
    assert body["model_version"] == "1" and headers[VERSION_HEADER] == "1"
    assert metric(metrics.SHADOW_INFO, served.name, version="2") == 1.0
    ask(served, ["c"])
    served.stop()  # scores what is queued, then closes the log
    assert logged(tmp_path, served) == [
        ("a", "champion", "1", "0", 0.2),
        ("a", "shadow", "2", "1", 0.9),
        ("b", "champion", "1", "0", 0.2),
        ("b", "shadow", "2", "1", 0.9),
        ("c", "champion", "1", "0", 0.2),
        ("c", "shadow", "2", "1", 0.9),
    ]
    assert metric(metrics.SHADOW_ROWS, served.name) == 3.0
    assert metric(metrics.SHADOW_DROPPED, served.name) == 0.0
    assert metric(metrics.SHADOW_FAILED, served.name) == 0.0
    # The monitor's default read never sees the shadow's rows.
    default = predlog.read_predictions(str(tmp_path / "log"), served.name)
    assert set(default[predlog.ROLE].to_pylist()) == {"champion"}


def test_requests_queued_together_are_scored_in_one_call(tmp_path: Path) -> None:
    gate = threading.Event()
    shadow_model = Model(0.9, gate=gate)
    served = serve(tmp_path, loaded(Model(0.2), "1"), Source({"2": loaded(shadow_model, "2")}, "2"))
    ask(served, ["first"])
    assert shadow_model.entered.wait(10)  # the worker holds the first request
    for i in range(5):
        ask(served, [f"r{i}-a", f"r{i}-b"])
    gate.set()
    served.stop()
    assert shadow_model.calls == [1, 10]
    assert len([r for r in logged(tmp_path, served) if r[1] == "shadow"]) == 11


def test_a_full_queue_drops_shadow_work_and_counts_it(tmp_path: Path) -> None:
    gate = threading.Event()
    slow = Model(0.9, gate=gate)
    served = serve(
        tmp_path, loaded(Model(0.2), "1"), Source({"2": loaded(slow, "2")}, "2"), queue_rows=3
    )
    ask(served, ["held"])  # the worker takes it, and waits in predict
    assert slow.entered.wait(10)
    answers = [ask(served, [f"q{i}"])[0] for i in range(5)]  # 3 fit in the queue, 2 do not
    answers.append(ask(served, ["big-0", "big-1"])[0])  # 2 rows: no room either
    assert all(a["model_version"] == "1" for a in answers)
    assert served.shadow is not None
    assert served.shadow.scorer.dropped == 4
    assert metric(metrics.SHADOW_DROPPED, served.name) == 4.0
    gate.set()
    served.stop()
    shadow_ids = sorted(r[0] for r in logged(tmp_path, served) if r[1] == "shadow")
    assert shadow_ids == ["held", "q0", "q1", "q2"]
    champion_ids = [r[0] for r in logged(tmp_path, served) if r[1] == "champion"]
    assert len(champion_ids) == 8  # every answer is logged, whatever the shadow dropped
    assert metric(metrics.SHADOW_ROWS, served.name) == 4.0


def test_a_shadow_that_raises_never_changes_an_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Model(0.9, fail=True)
    served = serve(tmp_path, loaded(Model(0.2), "1"), Source({"2": loaded(broken, "2")}, "2"))
    with caplog.at_level(logging.WARNING, logger="ctpipe.serving"):
        for i in range(3):
            body, headers = ask(served, [f"r{i}"])
            assert body["predictions"] == [0] and body["scores"] == [0.2]
            assert headers[VERSION_HEADER] == "1"
        served.stop()  # the three fail together, then one by one
    assert metric(metrics.SHADOW_FAILED, served.name) == 3.0
    assert metric(metrics.SHADOW_ROWS, served.name) == 0.0
    failures = [r for r in caplog.records if "rows failed" in r.getMessage()]
    assert len(failures) == 1, "a failing shadow logs at most once a minute"
    assert "the shadow model is broken" in failures[0].getMessage()
    assert [r[1] for r in logged(tmp_path, served)] == ["champion"] * 3


def test_one_bad_request_costs_only_its_own_shadow_rows(tmp_path: Path) -> None:
    gate = threading.Event()
    shadow_model = Model(0.9, fail_on=-1.0, gate=gate)
    served = serve(tmp_path, loaded(Model(0.2), "1"), Source({"2": loaded(shadow_model, "2")}, "2"))
    ask(served, ["first"])
    assert shadow_model.entered.wait(10)
    ask(served, ["ok-1"])
    ask(served, ["bad"], x=-1.0)  # queued with the others: their one call fails
    ask(served, ["ok-2"])
    gate.set()
    served.stop()
    assert metric(metrics.SHADOW_FAILED, served.name) == 1.0
    shadow_ids = sorted(r[0] for r in logged(tmp_path, served) if r[1] == "shadow")
    assert shadow_ids == ["first", "ok-1", "ok-2"]


def test_a_shadow_with_columns_the_requests_lack_fails_and_is_counted(tmp_path: Path) -> None:
    wider = Signature((*SIGNATURE.columns, ("extra", "double")))
    served = serve(
        tmp_path, loaded(Model(0.2), "1"), Source({"2": loaded(Model(0.9), "2", wider)}, "2")
    )
    body, _ = ask(served, ["a", "b"])
    assert body["scores"] == [0.2, 0.2]
    served.stop()
    assert metric(metrics.SHADOW_FAILED, served.name) == 2.0
    assert [r[1] for r in logged(tmp_path, served)] == ["champion", "champion"]


def test_no_shadow_when_it_is_the_champions_version_or_there_is_no_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    same = Model(0.2)
    served = serve(tmp_path, loaded(same, "1"), Source({"1": loaded(Model(0.9), "1")}, "1"))
    assert served.shadow is not None and served.shadow.current is None
    ask(served, ["a"])
    served.stop()
    assert [r[1] for r in logged(tmp_path, served)] == ["champion"]

    with caplog.at_level(logging.WARNING, logger="ctpipe.serving"):
        unlogged = serve(
            tmp_path,
            loaded(Model(0.2), "1"),
            Source({"2": loaded(Model(0.9), "2")}, "2"),
            writer=False,
        )
    assert unlogged.shadow is None
    assert [r.getMessage() for r in caplog.records if "no shadow scoring" in r.getMessage()]
    body, _ = ask(unlogged, ["b"])
    assert body["model_version"] == "1"
    unlogged.stop()


def test_a_canary_logs_its_answers_as_canary(tmp_path: Path) -> None:
    served = serve(tmp_path, loaded(Model(0.9), "2"), None, role="canary")
    ask(served, ["a"])
    served.stop()
    assert logged(tmp_path, served) == [("a", "canary", "2", "1", 0.9)]
    with pytest.raises(ValueError, match="role must be"):
        serve(tmp_path, loaded(Model(0.9), "2"), None, role="shadow")


# ---------------------------------------------------------------------- following


def test_the_shadow_follows_its_alias(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    v2, v3 = loaded(Model(0.9), "2"), loaded(Model(0.8), "3")
    source = Source({"2": v2, "3": v3, "4": UnblessedModel("m v4 has no signed blessing")}, None)
    served = serve(tmp_path, loaded(Model(0.2), "1"), source)
    shadow = served.shadow
    assert shadow is not None and shadow.current is None  # unset: no shadow, quietly
    assert source.loads == 0

    def refresh() -> str | None:
        shadow.refresh(served.current.version if served.current else None)
        return shadow.current.version if shadow.current else None

    source.version = "2"
    assert refresh() == "2"
    assert metric(metrics.SHADOW_INFO, served.name, version="2") == 1.0
    ask(served, ["a"])
    source.version = "3"  # the alias moved
    assert refresh() == "3"
    assert metric(metrics.SHADOW_INFO, served.name, version="2") is None
    ask(served, ["b"])
    with caplog.at_level(logging.WARNING, logger="ctpipe.serving"):
        source.version = "4"  # unblessed: logged and skipped; v3 is no challenger now
        loads = source.loads
        assert refresh() is None
        assert refresh() is None  # not tried again every interval
    assert source.loads == loads + 1
    assert any("cannot load" in r.getMessage() for r in caplog.records)
    body, _ = ask(served, ["c"])
    assert body["model_version"] == "1"
    source.version = "1"  # the challenger became the champion's version
    assert refresh() is None
    source.version = "3"
    assert refresh() == "3"
    source.version = None  # the alias was deleted
    assert refresh() is None
    assert metric(metrics.SHADOW_INFO, served.name, version="3") is None
    served.stop()
    shadow_rows = [(r[0], r[2]) for r in logged(tmp_path, served) if r[1] == "shadow"]
    assert sorted(shadow_rows)[:2] == [("a", "2"), ("b", "3")]


def test_a_registry_error_while_checking_keeps_the_shadow(tmp_path: Path) -> None:
    v2 = loaded(Model(0.9), "2")
    source = Source({"2": v2}, "2")
    served = serve(tmp_path, loaded(Model(0.2), "1"), source)
    assert served.shadow is not None and served.shadow.current is v2

    def unreachable() -> str | None:
        raise ConnectionError("registry down")

    source.current_version = unreachable  # type: ignore[method-assign]
    served.shadow.refresh("1")
    assert served.shadow.current is v2
    served.stop()


# ------------------------------------------------------------------------ the URI


def test_the_default_shadow_is_the_challenger_of_a_champion_alias() -> None:
    champion = ModelSource("models:/churn@champion")
    assert shadow_model_uri("auto", champion) == "models:/churn@challenger"
    assert shadow_model_uri("none", champion) is None
    assert shadow_model_uri("models:/churn/4", champion) == "models:/churn/4"
    assert shadow_model_uri("auto", ModelSource("models:/churn/3")) is None
    assert shadow_model_uri("auto", ModelSource("models:/churn@previous")) is None
    assert shadow_model_uri("auto", ModelSource("/mnt/models")) is None
