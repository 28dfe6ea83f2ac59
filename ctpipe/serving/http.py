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
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctpipe.serving import metrics

VERSION_HEADER = "x-model-version"  # the model version that answered a request
VERSION_HEADER_BYTES = VERSION_HEADER.encode()

log = logging.getLogger("ctpipe.serving")

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
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"

# The v2 routes of one model, which a version in the path may name.
METADATA = "metadata"
READY = "ready"
INFER_V2 = "infer"
INFERENCE_HEADER = b"inference-header-content-length"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    kind: str
    protocol: str = ""  # the metrics' protocol label, for inference routes
    v2: str = ""  # METADATA, READY or INFER_V2 for a v2 model route


def _route(method: str, pattern: str, kind: str, protocol: str = "", v2: str = "") -> Route:
    return Route(method, re.compile(pattern), kind, protocol, v2)


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
    _route("GET", rf"/v2/models/{_MODEL}{_VERSION}", READ, v2=METADATA),
    _route("GET", rf"/v2/models/{_MODEL}{_VERSION}/ready", READ, v2=READY),
    _route("POST", rf"/v2/models/{_MODEL}{_VERSION}/infer", INFER, "v2", INFER_V2),
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
    version: str | None = None  # the version a v2 path names, if it names one


@dataclass(frozen=True)
class Served:
    """What the server serves now: its version, and its v2 model metadata."""

    version: str
    metadata: dict[str, Any]


def find_route(method: str, path: str) -> Found:
    """The route a request takes, if any; KServe's own router decides the rest."""
    other_method = False
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method == method:
            groups = match.groupdict()
            return Found(route, groups.get("model"), False, groups.get("version"))
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
    """The predictor's surface (see the module's docstring): wraps KServe's app.

    Given `served` (what the server serves now), it also answers v2 model metadata from
    the model's signature and routes /v2/models/<name>/versions/<v>/...: the served
    version answers as the unversioned route does, any other is a 404. A v2 inference body
    is JSON (whatever its content type says) unless it has an Inference-Header-Content-Length,
    the binary tensor extension: then that many bytes of JSON header come first, and the
    binary inputs it declares are checked against their shapes and datatypes here."""

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
        served: Callable[[], Served | None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.model_name = model_name
        self.max_json_depth = max_json_depth
        self.served = served
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
        if refusal is None and found.route is not None and found.route.v2:
            if self.served is not None and found.route.v2 == METADATA:
                served = self.served()
                if served is not None:
                    if found.version is None or found.version == served.version:
                        await _json(send, 200, served.metadata)
                        return
                    refusal = 404, _other_version(self.model_name, found.version, served)
            elif self.served is not None and found.version is not None:
                served = self.served()
                if served is not None and found.version != served.version:
                    refusal = 404, _other_version(self.model_name, found.version, served)
                else:  # the served version: KServe answers it as the unversioned route
                    path = scope["path"].replace(f"/versions/{found.version}", "", 1)
                    scope = {**scope, "path": path, "raw_path": path.encode()}
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
        # The version that answered: the response's x-model-version (a canary share of the
        # requests may be answered by another version than the one serving), else the one
        # serving now. The rollout reads error rate and latency by version.
        answered = {"version": ""}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == VERSION_HEADER_BYTES:
                        answered["version"] = value.decode("latin-1")
            await send(message)

        try:
            await self._guarded(found, scope, receive, counting_send, refusal)
        finally:
            version = answered["version"] or self._serving_version()
            metrics.requests.labels(model, protocol, str(status["code"]), version).inc()
            metrics.latency.labels(model, protocol, version).observe(time.perf_counter() - started)

    def _serving_version(self) -> str:
        served = self.served() if self.served is not None else None
        return served.version if served is not None else ""

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
            await _refuse(send, *refusal)
            return
        if scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        route = found.route
        is_json = route is not None and route.kind in JSON_KINDS
        binary = _header(scope, INFERENCE_HEADER) if route is not None and route.v2 else None
        # A v2 JSON body is checked below, where NaN passes.
        strict = is_json and not (route is not None and route.v2)
        body, refusal = await self._read(scope, receive, strict)
        if refusal is None and binary is not None:
            problem = self._binary_problem(body, binary)
            refusal = (400, problem) if problem else None
        elif refusal is None and route is not None and route.v2:
            # Strict JSON but for NaN, which v2 clients send for a missing number (the
            # tensors' values are checked one by one: Infinity is refused by name).
            problem = self._json_problem(body, allow_nan=True)
            refusal = (400, problem) if problem else None
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        if route is not None and route.v2 == INFER_V2:
            # KServe reads a body without a JSON content type as the binary extension's
            # bytes; say which one this is, whatever the client said.
            content_type = b"application/json" if binary is None else b"application/octet-stream"
            headers = [
                (k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-type"
            ]
            scope = {**scope, "headers": [*headers, (b"content-type", content_type)]}
            send = _without_null_parameters(send)
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

    def _json_problem(self, body: bytes, allow_nan: bool = False) -> str | None:
        # Depth first: Python's json (the NaN check below, Starlette's request.json()) would
        # recurse once per level and end in a RecursionError, a 500.
        depth = too_deep(body, self.max_json_depth)
        if depth is not None:
            limit = self.max_json_depth
            return f"the body nests arrays and objects {depth:,} deep; the limit is {limit}"
        return _json_problem(body, allow_nan)

    def _binary_problem(self, body: bytes, declared: str) -> str | None:
        """What is wrong with a body in the binary tensor extension, or None."""
        import orjson

        where = "Inference-Header-Content-Length"
        if not declared.isdigit():
            return f"{where}: expected the JSON header's length in bytes, got {shown(declared)}"
        length = int(declared)
        if length > len(body):
            return f"{where} is {length:,} bytes, but the body has {len(body):,}"
        header = body[:length]
        depth = too_deep(header, self.max_json_depth)
        if depth is not None:
            limit = self.max_json_depth
            return f"the JSON header nests arrays and objects {depth:,} deep; the limit is {limit}"
        try:
            request = orjson.loads(header)
        except orjson.JSONDecodeError as exc:
            return f"the JSON header (the first {length:,} bytes) is not valid JSON: {exc}"
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list):
            return 'the JSON header must be an object with "inputs", a list of tensors'
        offset = length
        for i, tensor in enumerate(inputs):
            problem, size = _binary_input_problem(i, tensor, body, offset)
            if problem:
                return problem
            offset += size
        if offset != len(body):
            return (
                f"the binary inputs declare {offset - length:,} bytes, "
                f"but {len(body) - length:,} follow the JSON header"
            )
        return None


# Bytes per element of each fixed-size v2 datatype (BYTES elements carry their length).
ITEM_BYTES = {
    "BOOL": 1,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "FP16": 2,
    "INT32": 4,
    "UINT32": 4,
    "FP32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP64": 8,
}


def _binary_input_problem(i: int, tensor: Any, body: bytes, offset: int) -> tuple[str | None, int]:
    """(what is wrong with input i of a binary request, the bytes it takes)."""
    if not isinstance(tensor, dict):
        return f"inputs[{i}]: expected a tensor object", 0
    name = shown(str(tensor.get("name")))
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        return f"inputs[{i}] ({name}): parameters must be an object", 0
    if tensor.get("data") is not None:
        return None, 0  # a JSON tensor next to binary ones
    size = parameters.get("binary_data_size")
    if size is None:
        return f'inputs[{i}] ({name}): no "data" and no binary_data_size parameter', 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"inputs[{i}] ({name}): binary_data_size must be a byte count", 0
    if offset + size > len(body):
        return f"inputs[{i}] ({name}): binary_data_size {size:,} runs past the end of the body", 0
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        return f"inputs[{i}] ({name}): shape must be a list of sizes", 0
    count = math.prod(shape)
    datatype = str(tensor.get("datatype"))
    if datatype == "BYTES":
        elements = _bytes_elements(body[offset : offset + size])
        if elements != count:
            found = "not a sequence of length-prefixed strings" if elements is None else elements
            return f"inputs[{i}] ({name}): shape {shape} needs {count:,} strings; found {found}", 0
        return None, size
    item = ITEM_BYTES.get(datatype)
    if item is None:
        return f"inputs[{i}] ({name}): unknown datatype {shown(datatype)}", 0
    if size != count * item:
        return (
            f"inputs[{i}] ({name}): shape {shape} of {datatype} takes {count * item:,} bytes; "
            f"binary_data_size is {size:,}"
        ), 0
    return None, size


def _bytes_elements(data: bytes) -> int | None:
    """How many strings a binary BYTES tensor holds (each a 4-byte little-endian length,
    then its bytes), or None when the data is not such a sequence."""
    count = 0
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            return None
        at += 4 + int.from_bytes(data[at : at + 4], "little")
        count += 1
    return count if at == len(data) else None


def _other_version(model: str, asked: str, served: Served) -> str:
    return (
        f"model {shown(model)} version {shown(asked)} is not served here; "
        f"this server serves version {shown(served.version)}"
    )


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == wanted:
            return str(value.decode("latin-1").strip())
    return None


def _without_null_parameters(send: Send) -> Send:
    """KServe writes `"parameters": null` into a JSON inference response where the protocol
    has an object or nothing: the response goes out without them."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def rewriting(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = {k.lower(): v for k, v in message.get("headers") or []}
            is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            if message["status"] == 200 and is_json and INFERENCE_HEADER not in headers:
                start = message
                return
        elif start is not None and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _drop_null_parameters(b"".join(chunks))
            kept = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            kept.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return rewriting


def _drop_null_parameters(body: bytes) -> bytes:
    import orjson

    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(response, dict):
        return body
    if response.get("parameters", 0) is None:
        del response["parameters"]
    for output in response.get("outputs") or []:
        if isinstance(output, dict) and output.get("parameters", 0) is None:
            del output["parameters"]
    return orjson.dumps(response)


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


def _json_problem(body: bytes, allow_nan: bool = False) -> str | None:
    """Name what is wrong with a body that is not strict JSON (NaN and Infinity included,
    unless `allow_nan`: then whatever Python's parser reads passes)."""
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
    if allow_nan:
        return None
    return (
        "the body holds NaN or Infinity, which JSON does not allow; send null for a missing value"
    )


async def _refuse(send: Send, status: int, message: str) -> None:
    """A refusal: one log line with the reason (the access log has the request), no
    traceback."""
    log.info("refused a request (%d): %s", status, log_safe(message))
    await _error(send, status, message)


async def _error(send: Send, status: int, message: str) -> None:
    await _json(send, status, {"error": message})


async def _json(send: Send, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
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
