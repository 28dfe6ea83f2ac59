"""The predictor: a kserve.Model that serves the champion and follows it when it moves,
and scores a shadow model (the challenger) on the same requests (ctpipe.serving.shadow)."""

from __future__ import annotations

import json
import logging
import reprlib
import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kserve
from kserve.protocol.infer_type import InferRequest

from ctpipe import storage
from ctpipe.predlog import ROLE_CANARY, ROLE_CHAMPION, PredictionBatch, PredictionLogWriter
from ctpipe.serving import metrics
from ctpipe.serving.http import VERSION_HEADER, Served, log_safe
from ctpipe.serving.payload import (
    Batch,
    RecentIds,
    parse_v1,
    parse_v2,
    predict,
    v1_response,
    v2_metadata,
    v2_response,
)
from ctpipe.serving.shadow import DEFAULT_QUEUE_ROWS, Shadow
from ctpipe.serving.source import Loaded, ModelSource

log = logging.getLogger("ctpipe.serving")
CANARY_PHASE = "canary"  # ctpipe.rollout.state.CANARY (serving reads the file, not the package)
_VALIDATION = reprlib.Repr()  # a 422's errors quote the request: short, in one line
_VALIDATION.maxstring = _VALIDATION.maxother = 120


class ChampionModel(kserve.Model):
    """Serves one model; when its source is a registry alias, swaps in a new version the
    moment the alias moves. Requests in flight finish on the version they started with:
    the swap is a single reference assignment, so no request is dropped or mixed.

    Given `recent_ids`, a row id seen within its window is refused (DuplicateRequestId,
    HTTP 409) rather than logged twice; the server gives one only with a log writer: without
    a log, ids key nothing and may repeat (infra validation times the same rows again).

    Given a `shadow` source and a log writer, a second model scores every request after
    the champion answered it, off the request path, and its answers are logged as `shadow`
    rows; answers and the x-model-version header stay the champion's. The shadow source
    is watched with the champion's (see ctpipe.serving.shadow). `role` is what the
    answers are logged as: `champion`, or `canary` on a canary revision.

    Given `rollout_state` (the rollout controller's rollout.json, as `ctpipe serve` passes
    it), the predictor follows the rollout on one machine as KServe does in a cluster: in
    the canary phase the shadow model (the challenger) answers the canary's share of the
    requests itself, chosen by request id, logged as `canary`, and with its own version
    in x-model-version."""

    def __init__(
        self,
        name: str,
        source: ModelSource,
        *,
        log_writer: PredictionLogWriter | None = None,
        max_rows: int = 10_000,
        reload_seconds: float = 10.0,
        recent_ids: RecentIds | None = None,
        shadow: ModelSource | None = None,
        shadow_queue_rows: int = DEFAULT_QUEUE_ROWS,
        role: str = ROLE_CHAMPION,
        rollout_state: str | None = None,
    ) -> None:
        super().__init__(name, return_response_headers=True)
        if role not in (ROLE_CHAMPION, ROLE_CANARY):
            raise ValueError(f"role must be {ROLE_CHAMPION!r} or {ROLE_CANARY!r}, got {role!r}")
        self.source = source
        self.log_writer = log_writer
        if log_writer is not None:
            metrics.log_figures.watch(name, log_writer)
        self.recent_ids = recent_ids
        self.max_rows = max_rows
        self.reload_seconds = reload_seconds
        self.role = role
        self.current: Loaded | None = None
        self.shadow: Shadow | None = None
        if shadow is not None and log_writer is None:
            log.warning(
                "no shadow scoring for %s: %s would be scored in shadow, but its answers go "
                "to the prediction log and there is none (--predictions-uri)",
                name,
                shadow.uri,
            )
        elif shadow is not None and log_writer is not None:
            self.shadow = Shadow(name, shadow, log_writer, queue_rows=shadow_queue_rows)
        self.rollout_state = rollout_state if self.shadow is not None else None
        self.canary: Canary | None = None  # the canary phase, while the rollout is in it
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> bool:
        self._install(self.source.load())
        if self.shadow is not None:
            self.shadow.refresh(self._version())
            self.shadow.start()
        self._follow_rollout()
        self.ready = True
        watch = (
            self.source.alias is not None
            or (self.shadow is not None and self.shadow.follows)
            or self.rollout_state is not None
        )
        if watch and self.reload_seconds > 0 and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="ctpipe-model-watcher", daemon=True
            )
            self._watcher.start()
        return self.ready

    def _version(self) -> str | None:
        loaded = self.current
        return loaded.version if loaded is not None else None

    def _install(self, loaded: Loaded) -> None:
        previous = self.current
        self.current = loaded
        metrics.model_info.labels(self.name, loaded.version).set(1)
        metrics.start_version(self.name, loaded.version)
        if previous is not None and previous.version != loaded.version:
            metrics.model_info.remove(self.name, previous.version)
        log.info("serving %s version %s on %s", self.name, loaded.version, loaded.device)

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            if self.source.alias is not None:
                self.reload_if_moved()
            if self.shadow is not None:
                self.shadow.refresh(self._version())
            self._follow_rollout()

    def _follow_rollout(self) -> None:
        """Read the rollout's phase; never raises (no canary while it cannot be read)."""
        if self.rollout_state is None:
            return
        try:
            self.canary = Canary.read(self.rollout_state)
        except Exception as exc:
            self.canary = None
            log.warning("cannot read the rollout state %s: %s", self.rollout_state, exc)

    def reload_if_moved(self) -> bool:
        """Load the version the alias points at now, if it is not the one serving."""
        try:
            version = self.source.current_version()
            if version is None or self.current is None or version == self.current.version:
                return False
            self._install(self.source.load())
            return True
        except Exception:  # keep serving the old version; try again next interval
            log.exception("could not reload %s from %s", self.name, self.source.uri)
            return False

    def stop(self) -> None:
        self._stop.set()
        if self.shadow is not None:
            self.shadow.stop()  # scores what is queued, into the log that closes next
        if self.log_writer is not None:
            self.log_writer.close()
            metrics.log_figures.unwatch(self.name)

    def served(self) -> Served | None:
        """The version serving now and its v2 metadata (None before the first load)."""
        loaded = self.current
        if loaded is None:
            return None
        return Served(loaded.version, v2_metadata(self.name, loaded))

    # --------------------------------------------------------------------- requests

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        loaded = self._serving()
        request_id = (headers or {}).get("x-request-id")
        if isinstance(payload, InferRequest):
            return parse_v2(payload, loaded.signature, self.max_rows)
        return parse_v1(payload, loaded.signature, self.max_rows, request_id)

    def predict(
        self,
        payload: Batch,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        loaded = self._serving()  # one snapshot for the whole request
        role = self.role
        canary = self._canary_model(payload)
        if canary is not None:
            loaded, role = canary, ROLE_CANARY
        if self.recent_ids is not None:
            self.recent_ids.claim(payload.ids)
        try:
            result = predict(loaded, payload)
        except Exception:
            if self.recent_ids is not None:
                self.recent_ids.release(payload.ids)
            raise
        if response_headers is not None:
            response_headers[VERSION_HEADER] = loaded.version
        metrics.rows.labels(self.name).inc(payload.rows)
        for score in result.scores:
            metrics.score.labels(self.name).observe(score)
        if self.log_writer is not None:
            at = datetime.now(UTC)
            self._log(loaded, payload, result.predictions, result.scores, at, role)
            if self.shadow is not None and canary is None:
                self.shadow.submit(loaded, payload, at)
        if payload.protocol == "v2":
            return v2_response(self.name, loaded, payload, result)
        return v1_response(self.name, loaded, payload, result)

    def _canary_model(self, payload: Batch) -> Loaded | None:
        """The challenger, when this request falls in the canary's share."""
        canary, shadow = self.canary, self.shadow
        if canary is None or shadow is None or not payload.ids:
            return None
        challenger = shadow.current
        if challenger is None or challenger.version != canary.version:
            return None  # not loaded (yet): the champion answers
        return challenger if canary.picks(payload.ids[0]) else None

    def _serving(self) -> Loaded:
        loaded = self.current
        if loaded is None:
            raise kserve.errors.ModelNotReady(self.name)
        return loaded

    def _log(
        self,
        loaded: Loaded,
        batch: Batch,
        predictions: list[Any],
        scores: list[float],
        at: datetime,
        role: str,
    ) -> None:
        """Hand the rows to the log writer; it writes them from its own thread."""
        writer = self.log_writer
        assert writer is not None
        # By column, as the request arrived: no per-row objects on the request path.
        writer.append(
            PredictionBatch(
                batch.ids, at, loaded.version, predictions, scores, batch.columns, role=role
            )
        )


@dataclass(frozen=True)
class Canary:
    """The rollout's canary phase, as its state file says: the challenger's version and
    the share of requests it answers."""

    version: str
    percent: int

    @classmethod
    def read(cls, uri: str) -> Canary | None:
        """None unless the rollout is in its canary phase (or there is no rollout)."""
        if not storage.list_files(uri):
            return None
        state = json.loads(storage.read_bytes(uri))
        if state.get("phase") != CANARY_PHASE or not state.get("challenger"):
            return None
        return cls(str(state["challenger"]), int(state.get("traffic_percent", 0)))

    def picks(self, request_id: str) -> bool:
        # By request id, so that a retry reaches the same model.
        return zlib.crc32(request_id.encode()) % 100 < self.percent


async def duplicate_request_handler(_request: Any, exc: Exception) -> Any:
    """DuplicateRequestId as HTTP 409, in KServe's error shape, logged as one line: the
    request is the client's mistake, and KServe's handlers log a traceback per refusal."""
    return _client_error(409, exc)


async def model_not_found_handler(_request: Any, exc: Exception) -> Any:
    """KServe's ModelNotFound as HTTP 404, logged as one line (KServe logs a traceback)."""
    return _client_error(404, exc)


async def validation_error_handler(_request: Any, exc: Exception) -> Any:
    """A body FastAPI could not read as KServe's request model: HTTP 422 as FastAPI
    answers it, logged as one line."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    errors: Any = getattr(exc, "errors", list)()
    log.info("refused a request (422): %s", log_safe(_VALIDATION.repr(errors)))
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def _client_error(status: int, exc: Exception) -> Any:
    from fastapi.responses import JSONResponse

    log.info("refused a request (%d): %s", status, log_safe(str(exc)))
    return JSONResponse(status_code=status, content={"error": str(exc)})


async def invalid_input_handler(_request: Any, exc: Exception) -> Any:
    """KServe's InvalidInput as HTTP 400, as KServe answers it, but logged as one escaped
    line: some of KServe's own messages quote the request as it came (a v2 input's name),
    and a traceback per bad request only buries the log."""
    from fastapi.responses import JSONResponse

    log.info("refused a request (400): %s", log_safe(str(exc)))
    return JSONResponse(status_code=400, content={"error": str(exc)})
