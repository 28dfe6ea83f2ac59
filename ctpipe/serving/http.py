"""ASGI middleware in front of KServe's routes: the predictor's whole HTTP surface.

KServe's app serves more than a predictor needs (model-repository load/unload, explain,
whatever a new KServe adds), and none of it is authenticated. The guard routes an
allow-list: health, readiness, metadata, inference and /metrics for the one model this
server serves; everything else is a 404, and the extra KServe routes need a flag. Before
any request body is parsed it is bounded in size and in JSON nesting depth, and an
`x-request-id` is checked against the id rule. It also counts every inference call
(by status, and its latency), including the ones that fail before reaching the model.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctpipe.serving import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_DEPTH = 400
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Request ids key the prediction log and are logged by KServe: short, and nothing that
# could break a log line or a Parquet reader's assumptions.
MAX_REQUEST_ID = 128
REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")
REQUEST_ID_RULE = f"1 to {MAX_REQUEST_ID} characters from A-Z a-z 0-9 . _ : -"
REQUEST_ID_HEADER = b"x-request-id"

# Route kinds: the first two are always on, the others need a server flag.
READ = "read"
INFER = "infer"
EXPLAIN = "explain"
REPOSITORY = "repository"
DOCS = "docs"
FLAGS = {
    EXPLAIN: "--enable-explain",
    REPOSITORY: "--enable-repository-routes",
    DOCS: "--enable_docs_url true",
}
JSON_KINDS = frozenset({INFER, EXPLAIN})  # routes whose body is parsed as JSON

_MODEL = r"(?P<model>[^/]+)"
_VERSION = r"(?:/versions/[^/]+)?"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    kind: str
    protocol: str = ""  # the metrics' protocol label, for inference routes


def _route(method: str, pattern: str, kind: str, protocol: str = "") -> Route:
    return Route(method, re.compile(pattern), kind, protocol)


# KServe 0.21's REST routes (kserve/protocol/rest/*_endpoints.py), minus anything new.
ROUTES: tuple[Route, ...] = (
    _route("GET", r"/", READ),
    _route("GET", r"/metrics", READ),
    _route("GET", r"/v1/models", READ),
    _route("GET", rf"/v1/models/{_MODEL}", READ),
    _route("POST", rf"/v1/models/{_MODEL}:predict", INFER, "v1"),
    _route("POST", rf"/v1/models/{_MODEL}:explain", EXPLAIN),
    _route("GET", r"/v2", READ),
    _route("GET", r"/v2/health/live", READ),
    _route("GET", r"/v2/health/ready", READ),
    _route("GET", r"/v2/models", READ),
    _route("GET", rf"/v2/models/{_MODEL}{_VERSION}", READ),
    _route("GET", rf"/v2/models/{_MODEL}{_VERSION}/ready", READ),
    _route("POST", rf"/v2/models/{_MODEL}{_VERSION}/infer", INFER, "v2"),
    _route("POST", rf"/v2/repository/models/{_MODEL}/load", REPOSITORY),
    _route("POST", rf"/v2/repository/models/{_MODEL}/unload", REPOSITORY),
    _route("GET", r"/docs", DOCS),
    _route("GET", r"/docs/oauth2-redirect", DOCS),
    _route("GET", r"/openapi.json", DOCS),
)


@dataclass(frozen=True)
class Found:
    route: Route | None
    model: str | None  # the model the path names, if it names one
    other_method: bool  # the path is routed, under another method


def find_route(method: str, path: str) -> Found:
    """The route a request takes, if any; KServe's own router decides the rest."""
    other_method = False
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method == method:
            return Found(route, match.groupdict().get("model"), False)
        other_method = True
    return Found(None, None, other_method)


def request_id_problem(where: str, value: str) -> str | None:
    """Why a request id breaks the rule, or None. The value itself is not repeated: it
    may be huge, or hold what a log line must not."""
    if REQUEST_ID.fullmatch(value):
        return None
    fault = f"{len(value):,} characters" if len(value) > MAX_REQUEST_ID else "other characters"
    return f"{where}: a request id must be {REQUEST_ID_RULE}; this one has {fault}"


# Characters that end a line for some log reader: C0 controls, DEL, NEL, U+2028/9.
_LINE_BREAKERS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]}
_LINE_BREAKERS.update({0x2028: "\\u2028", 0x2029: "\\u2029", 0x0A: "\\n", 0x0D: "\\r"})


def log_safe(text: str) -> str:
    """Text for one log line: whatever could start another line is escaped."""
    return text.translate(_LINE_BREAKERS)


def shown(text: str, limit: int = 64) -> str:
    """A name from a request, quoted and escaped for a message that may be logged."""
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


class InferenceGuard:
    """The predictor's surface (see the module's docstring): wraps KServe's app."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        model_name: str,
        *,
        enable_explain: bool = False,
        enable_repository: bool = False,
        enable_docs: bool = False,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.model_name = model_name
        self.max_json_depth = max_json_depth
        enabled = {EXPLAIN: enable_explain, REPOSITORY: enable_repository, DOCS: enable_docs}
        self.kinds = {READ, INFER} | {kind for kind, on in enabled.items() if on}
        # A client still sending when the 413 goes out sees a broken pipe, not the reason:
        # read and drop a bounded amount first so that ordinary clients get the answer.
        self.drain_bytes = 4 * max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; FastAPI has no websocket routes to reach
            await self.app(scope, receive, send)
            return
        found = find_route(scope.get("method", ""), scope.get("path", ""))
        refusal = self._refusal(found, scope)
        if found.route is not None and found.route.kind == INFER:
            await self._counted(found, scope, receive, send, refusal)
        else:
            await self._guarded(found, scope, receive, send, refusal)

    def _refusal(self, found: Found, scope: Scope) -> tuple[int, str] | None:
        """(status, message) when the request is not served, or None."""
        route = found.route
        if route is None:
            if found.other_method:
                return 405, f"{scope.get('method')} is not allowed on this path"
            return 404, "not found: this server routes health, metadata, inference and /metrics"
        if route.kind not in self.kinds:
            flag = FLAGS[route.kind]
            return 404, f"not found: {route.kind} routes are off (start the server with {flag})"
        if found.model is not None and found.model != self.model_name:
            served = shown(self.model_name)
            return 404, f"model {shown(found.model)} is not served here; this one serves {served}"
        if route.kind in JSON_KINDS:
            return _header_problem(scope)
        return None

    async def _counted(
        self,
        found: Found,
        scope: Scope,
        receive: Receive,
        send: Send,
        refusal: tuple[int, str] | None,
    ) -> None:
        assert found.route is not None
        # Any other name in the path is one label: a client must not mint new series.
        model = self.model_name if found.model == self.model_name else metrics.UNKNOWN_MODEL
        protocol = found.route.protocol
        started = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(found, scope, receive, counting_send, refusal)
        finally:
            metrics.requests.labels(model, protocol, str(status["code"])).inc()
            metrics.latency.labels(model, protocol).observe(time.perf_counter() - started)

    async def _guarded(
        self,
        found: Found,
        scope: Scope,
        receive: Receive,
        send: Send,
        refusal: tuple[int, str] | None,
    ) -> None:
        if refusal is not None:
            await self._drain(scope, receive)
            await _error(send, *refusal)
            return
        if scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        is_json = found.route is not None and found.route.kind in JSON_KINDS
        body, refusal = await self._read(scope, receive, is_json)
        if refusal is not None:
            await _error(send, *refusal)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _drain(self, scope: Scope, receive: Receive) -> None:
        """Before refusing a request, read (and drop) a body the client may still be sending."""
        if scope.get("method") not in BODY_METHODS:
            return
        declared = _content_length(scope)
        if declared is None or declared <= self.drain_bytes:
            await _discard(receive, self.drain_bytes)

    async def _read(
        self, scope: Scope, receive: Receive, is_json: bool
    ) -> tuple[bytes, tuple[int, str] | None]:
        """The whole body, or (status, message) saying why it is refused."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            if declared <= self.drain_bytes:
                await _discard(receive, self.drain_bytes)
            return b"", (413, _too_large(declared, self.max_body_bytes))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body"):
                    await _discard(receive, self.drain_bytes - size)
                return b"", (413, _too_large(size, self.max_body_bytes))
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        problem = self._json_problem(body) if is_json else None
        return body, (400, problem) if problem else None

    def _json_problem(self, body: bytes) -> str | None:
        # Depth first: Python's json (the NaN check below, Starlette's request.json()) would
        # recurse once per level and end in a RecursionError, a 500.
        depth = too_deep(body, self.max_json_depth)
        if depth is not None:
            limit = self.max_json_depth
            return f"the body nests arrays and objects {depth:,} deep; the limit is {limit}"
        return _json_problem(body)


def _header_problem(scope: Scope) -> tuple[int, str] | None:
    """An x-request-id that breaks the rule, before KServe logs it. Every copy is checked:
    which one a framework keeps is its choice. An empty one is as good as none."""
    for name, value in scope.get("headers") or []:
        if name.lower() == REQUEST_ID_HEADER and value:
            problem = request_id_problem("x-request-id", value.decode("latin-1"))
            if problem:
                return 400, problem
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the body already read, then the client's own events."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _discard(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body, up to `budget` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))


def _too_large(size: int, limit: int) -> str:
    return f"request body is over {size:,} bytes; the limit is {limit:,} bytes (--max-body-bytes)"


# JSON's escapes, so that every quote left opens or closes a string: an escaped
# backslash first, so that the quote in \\" still closes its string.
_ESCAPED_BACKSLASH = b"\\\\"
_ESCAPED_QUOTE = b'\\"'
_QUOTE = ord('"')
_MARKS = np.zeros(256, dtype=bool)  # the bytes that matter: quotes and brackets
_MARKS[list(b'"[]{}')] = True
_STEPS = np.zeros(256, dtype=np.int8)  # what each does to the depth
_STEPS[list(b"[{")] = 1
_STEPS[list(b"]}")] = -1


def too_deep(body: bytes, limit: int) -> int | None:
    """How deep the body's arrays and objects nest (brackets in strings not counted), when
    that is deeper than `limit`; None otherwise.

    Linear and vectorised: it runs on every inference body, up to --max-body-bytes (a
    10,000-row batch of 1.4 MB takes a few ms; 8 MB of brackets about 0.1 s)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None  # nearly every request: too few brackets to be too deep
    text = body.replace(_ESCAPED_BACKSLASH, b"").replace(_ESCAPED_QUOTE, b"")
    data = np.frombuffer(text, dtype=np.uint8)
    marks = data[_MARKS[data]]
    steps = _STEPS[marks]
    steps[np.cumsum(marks == _QUOTE, dtype=np.int32) & 1 == 1] = 0  # inside a string
    depth = int(np.cumsum(steps, dtype=np.int32).max())  # not empty: it holds the brackets
    return depth if depth > limit else None


def _json_problem(body: bytes) -> str | None:
    """Name what is wrong with a body that is not strict JSON (NaN and Infinity included)."""
    import orjson

    try:
        orjson.loads(body)
        return None
    except orjson.JSONDecodeError as exc:
        strict_error = str(exc)
    try:
        # Python's parser accepts NaN and Infinity. Given text, not bytes, it does not
        # guess UTF-16, which orjson (and so the depth scan's reading) does not accept.
        json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"the body is not valid JSON: {strict_error}"
    return (
        "the body holds NaN or Infinity, which JSON does not allow; send null for a missing value"
    )


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
