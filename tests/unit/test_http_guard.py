"""The predictor's HTTP surface, as pure ASGI: what reaches KServe, and what is refused
before a body is parsed (size, nesting depth, request id) or a metric label is minted."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import MutableMapping
from typing import Any

import pytest

from ctpipe.serving import metrics
from ctpipe.serving.http import (
    BODY_METHODS,
    MAX_JSON_DEPTH,
    InferenceGuard,
    log_safe,
    too_deep,
)

MODEL = "served"
LIMIT = 1000


class Inner:
    """KServe's app, as far as the guard can tell: records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        if scope["method"] in BODY_METHODS:
            body = (await receive()).get("body", b"")
        self.calls.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(
    guard: InferenceGuard,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunk: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request through the guard: (status, JSON body). `chunk` sends the body in
    pieces without a content-length, as a chunked upload arrives."""
    raw_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if chunk is None:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    events = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    scope = {"type": "http", "method": method, "path": path, "headers": raw_headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(payload or b"{}")


def guard(**flags: Any) -> tuple[InferenceGuard, Inner]:
    inner = Inner()
    return InferenceGuard(inner, LIMIT, MODEL, **flags), inner


ROUTED = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{MODEL}"),
    ("POST", f"/v1/models/{MODEL}:predict"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models"),
    ("GET", f"/v2/models/{MODEL}"),
    ("GET", f"/v2/models/{MODEL}/ready"),
    ("GET", f"/v2/models/{MODEL}/versions/3/ready"),
    ("POST", f"/v2/models/{MODEL}/infer"),
    ("POST", f"/v2/models/{MODEL}/versions/3/infer"),
]


@pytest.mark.parametrize(("method", "path"), ROUTED)
def test_health_metadata_inference_and_metrics_reach_kserve(method: str, path: str) -> None:
    served, inner = guard()
    body = b'{"instances": []}' if method == "POST" else b""
    assert call(served, method, path, body)[0] == 200
    assert inner.calls == [(method, path, body)]


@pytest.mark.parametrize(
    ("method", "path", "flag"),
    [
        ("POST", f"/v2/repository/models/{MODEL}/unload", "--enable-repository-routes"),
        ("POST", f"/v2/repository/models/{MODEL}/load", "--enable-repository-routes"),
        ("POST", f"/v1/models/{MODEL}:explain", "--enable-explain"),
        ("GET", "/docs", "--enable_docs_url"),
        ("GET", "/openapi.json", "--enable_docs_url"),
    ],
)
def test_repository_explain_and_docs_routes_are_404_without_their_flag(
    method: str, path: str, flag: str
) -> None:
    served, inner = guard()
    status, body = call(served, method, path, b"{}" if method == "POST" else b"")
    assert status == 404 and flag in body["error"]
    assert inner.calls == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v2/models/{MODEL}/generate"),  # a route a newer KServe might add
        ("POST", "/openai/v1/completions"),
        ("GET", "/v2/repository/index"),
        ("POST", f"/v2/models/{MODEL}/versions/1/explain"),
        ("GET", f"/v2/models/{MODEL}/ready/"),
        ("GET", "/redoc"),
    ],
)
def test_anything_else_is_404(method: str, path: str) -> None:
    served, inner = guard(enable_explain=True, enable_repository=True, enable_docs=True)
    assert call(served, method, path, b"{}" if method == "POST" else b"")[0] == 404
    assert inner.calls == []


def test_the_flags_route_repository_explain_and_docs() -> None:
    served, inner = guard(enable_explain=True, enable_repository=True, enable_docs=True)
    assert call(served, "POST", f"/v2/repository/models/{MODEL}/unload")[0] == 200
    assert call(served, "POST", f"/v1/models/{MODEL}:explain", b'{"instances": []}')[0] == 200
    assert call(served, "GET", "/docs")[0] == 200
    assert len(inner.calls) == 3


def test_a_routed_path_under_another_method_is_405() -> None:
    served, inner = guard()
    assert call(served, "DELETE", f"/v2/models/{MODEL}")[0] == 405
    assert call(served, "GET", f"/v2/models/{MODEL}/infer")[0] == 405
    assert call(served, "PUT", "/v2/health/live", b"{}")[0] == 405
    assert inner.calls == []


def series(family: Any) -> set[str]:
    return {s.labels["model"] for metric in family.collect() for s in metric.samples}


def test_metric_labels_name_the_served_model_or_unknown() -> None:
    served, inner = guard()
    # The version label is the version serving: the guard's test double serves none.
    unknown = metrics.requests.labels(metrics.UNKNOWN_MODEL, "v2", "404", "")
    before = unknown._value.get()
    names = [f"m{random.getrandbits(64):x}" for _ in range(200)]
    for name in names:
        status, body = call(served, "POST", f"/v2/models/{name}/infer", b"{}")
        assert status == 404 and name in body["error"]
    assert inner.calls == []  # KServe never saw (nor logged) the names
    assert unknown._value.get() - before == len(names)
    assert not series(metrics.requests) & set(names)
    assert not series(metrics.latency) & set(names)
    assert call(served, "POST", f"/v1/models/{MODEL}:predict", b"{}")[0] == 200
    assert MODEL in series(metrics.requests)


INFER_PATHS = [
    f"/v1/models/{MODEL}:predict",
    f"/v2/models/{MODEL}/infer",
    f"/v2/models/{MODEL}/versions/7/infer",
]


@pytest.mark.parametrize(
    "path",
    [
        *INFER_PATHS,
        f"/v1/models/{MODEL}:explain",
        f"/v2/repository/models/{MODEL}/unload",
    ],
)
@pytest.mark.parametrize("chunk", [None, 100], ids=["declared", "chunked"])
def test_the_body_limit_holds_on_every_routed_post(path: str, chunk: int | None) -> None:
    served, inner = guard(enable_explain=True, enable_repository=True)
    body = b'{"instances": [' + b"1," * LIMIT + b"1]}"
    status, answer = call(served, "POST", path, body, chunk=chunk)
    assert status == 413 and "--max-body-bytes" in answer["error"]
    assert inner.calls == []


@pytest.mark.parametrize("path", [*INFER_PATHS, f"/v1/models/{MODEL}:explain"])
def test_json_nested_past_the_limit_is_a_400_naming_it(path: str) -> None:
    served, inner = guard(enable_explain=True)
    served.max_body_bytes = served.drain_bytes = 1_000_000
    body = b"[" * 100_000 + b"]" * 100_000
    status, answer = call(served, "POST", path, body)
    assert status == 400, answer
    assert answer["error"] == (
        f"the body nests arrays and objects 100,000 deep; the limit is {MAX_JSON_DEPTH}"
    )
    assert inner.calls == []
    at_limit = b'{"instances": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert call(served, "POST", path, at_limit)[0] == 200


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(rng: random.Random, level: int) -> Any:
    """Random JSON whose strings are full of brackets, quotes and backslashes."""
    if level == 0 or rng.random() < 0.2:
        return "".join(rng.choice('[]{}"\\ab') for _ in range(rng.randrange(6)))
    if rng.random() < 0.5:
        return [nested(rng, level - 1) for _ in range(rng.randrange(1, 3))]
    return {nested(rng, 0): nested(rng, level - 1) for _ in range(rng.randrange(1, 3))}


def test_the_depth_scan_agrees_with_a_parser_and_ignores_brackets_in_strings() -> None:
    rng = random.Random(5)
    for _ in range(300):
        value = nested(rng, rng.randrange(1, 12))
        body = json.dumps(value).encode()
        expected = depth(value)
        assert too_deep(body, 0) == (expected or None), body
        assert too_deep(body, expected) is None
    assert too_deep(b'["' + b"[" * 999 + b'"]', 10) is None
    assert too_deep(b'["\\\\"' + b"[" * 999 + b"]", 10) == 1000  # \\ then a real quote


@pytest.mark.parametrize(
    "request_id",
    ["x" * 60_000, "x" * 129, "two words", "caf\u00e9", "a/b", "a;b=c"],
    ids=["60KB", "129", "space", "non-ascii", "slash", "semicolon"],
)
def test_an_x_request_id_that_breaks_the_rule_is_refused_before_kserve(
    request_id: str,
) -> None:
    served, inner = guard()
    for path in INFER_PATHS:
        status, body = call(served, "POST", path, b"{}", {"x-request-id": request_id})
        assert status == 400
        assert "x-request-id: a request id must be 1 to 128 characters" in body["error"]
        assert request_id not in body["error"]  # not echoed
    assert inner.calls == []


@pytest.mark.parametrize(
    "request_id", ["req-7", "x" * 128, "3f2b1c9e-1d2a-4c3b-9e8f-0a1b2c3d4e5f", "a.b:c_D-9"]
)
def test_an_x_request_id_within_the_rule_passes(request_id: str) -> None:
    served, inner = guard()
    assert call(served, "POST", INFER_PATHS[0], b"{}", {"x-request-id": request_id})[0] == 200
    assert len(inner.calls) == 1


def test_log_safe_text_cannot_start_a_line() -> None:
    text = log_safe("a\nb\rc\x00d\x1be\u2028f\u2029g\x85h\x7fi")
    assert text == "a\\nb\\rc\\x00d\\x1be\\u2028f\\u2029g\\x85h\\x7fi"
    assert len(text.splitlines()) == 1
    assert log_safe("caf\u00e9 \\n") == "caf\u00e9 \\n"  # printable text is left alone
