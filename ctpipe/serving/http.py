"""ASGI middleware in front of KServe's routes: a bounded request body, and the
predictor's request metrics (count by status, latency) for every inference call,
including the ones that fail before reaching the model."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ctpipe.serving import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(
    r"^/(?P<protocol>v1)/models/(?P<model>[^/:]+):predict$|^/(?P<protocol2>v2)/models/(?P<model2>[^/]+)/infer$"
)


class InferenceGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # A client still sending when the 413 goes out sees a broken pipe, not the reason:
        # read and drop a bounded amount first so that ordinary clients get the answer.
        self.drain_bytes = 4 * max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        protocol = match["protocol"] or match["protocol2"]
        model = match["model"] or match["model2"]
        started = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            body, refusal = await self._read(scope, receive)
            if refusal is not None:
                await _error(counting_send, *refusal)
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, counting_send)
        finally:
            metrics.requests.labels(model, protocol, str(status["code"])).inc()
            metrics.latency.labels(model, protocol).observe(time.perf_counter() - started)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
        """The whole body, or (status, message) saying why it is refused."""
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            if int(declared) <= self.drain_bytes:
                await _discard(receive, self.drain_bytes)
            return b"", (413, _too_large(int(declared), self.max_body_bytes))
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
        problem = _json_problem(body)
        return body, (400, problem) if problem else None


async def _discard(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body, up to `budget` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))


def _too_large(size: int, limit: int) -> str:
    return f"request body is over {size:,} bytes; the limit is {limit:,} bytes (--max-body-bytes)"


def _json_problem(body: bytes) -> str | None:
    """Name what is wrong with a body that is not strict JSON (NaN and Infinity included)."""
    import orjson

    try:
        orjson.loads(body)
        return None
    except orjson.JSONDecodeError as exc:
        strict_error = str(exc)
    try:
        json.loads(body)  # Python's parser accepts NaN and Infinity
    except (ValueError, UnicodeDecodeError):
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
