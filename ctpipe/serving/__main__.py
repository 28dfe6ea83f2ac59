"""python -m ctpipe.serving: the predictor (KServe ModelServer) with ctpipe's model.

    python -m ctpipe.serving --model_name ctpipe-demo \\
        --model-uri models:/ctpipe-demo@champion --predictions-uri s3://bucket/predictions

Every KServe ModelServer flag works too (--http_port, --enable_grpc, --workers, ...).
The model is loaded before the server listens, so the server is ready only once it can
answer. On SIGTERM the prediction log is flushed before the process ends.

Beside the champion, a shadow model scores the same requests after they are answered
(ctpipe.serving.shadow): by default the `challenger` alias of the champion's registered
model (--shadow-model-uri auto), logged as `shadow` rows; `--shadow-model-uri none` turns
it off. A canary revision serves the challenger with `--role canary`.

The HTTP surface is health, readiness, metadata, inference and /metrics (see
ctpipe.serving.http); KServe's repository load/unload and explain routes need
--enable-repository-routes and --enable-explain. gRPC is off unless --enable_grpc true,
and then it is KServe's own surface, none of these guards included.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

from ctpipe.errors import ConfigError, CtpipeError

if TYPE_CHECKING:
    from ctpipe.serving.source import ModelSource

# Plain values, so that `--help` costs no import of the serving stack.
ROLE_CHAMPION = "champion"  # ctpipe.predlog.ROLE_CHAMPION
ROLE_CANARY = "canary"  # ctpipe.predlog.ROLE_CANARY
DEFAULT_SHADOW_QUEUE_ROWS = 10_000  # ctpipe.serving.shadow.DEFAULT_QUEUE_ROWS

MAX_BODY_BYTES = 8 * 1024 * 1024
SHADOW_AUTO = "auto"
SHADOW_NONE = "none"
# The registry's aliases (ctpipe.registry): the shadow of the champion is the challenger.
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREDICTIONS_ENV = "CTPIPE_PREDICTIONS_URI"
JOURNAL_ENV = "CTPIPE_LOG_JOURNAL_DIR"


def parser() -> argparse.ArgumentParser:
    from kserve.model_server import parser as kserve_parser

    serving = argparse.ArgumentParser(
        prog="python -m ctpipe.serving",
        parents=[kserve_parser],
        description="Serve a ctpipe model over KServe's v1 and v2 REST protocols.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serving.add_argument(
        "--model-uri",
        help="models:/<name>@<alias> (default: models:/<model_name>@champion), models:/<name>/<version>, "
        "runs:/<id>/model, an s3:// prefix or a local MLflow model directory",
    )
    serving.add_argument(
        "--model-sha256", help="expected SHA-256 of model.pkl, for s3:// and local directories"
    )
    serving.add_argument(
        "--allow-unverified", action="store_true", help="load a local model without a SHA-256"
    )
    serving.add_argument(
        "--model-version", help="the version a directory model reports (deploy sets it)"
    )
    serving.add_argument(
        "--shadow-model-uri",
        default=SHADOW_AUTO,
        help=f"a model to score in shadow after each answer, logged as shadow rows: "
        f"'{SHADOW_AUTO}' (models:/<name>@{CHALLENGER_ALIAS} when --model-uri is "
        f"models:/<name>@{CHAMPION_ALIAS}, else none), '{SHADOW_NONE}', or any --model-uri form; "
        "needs the prediction log",
    )
    serving.add_argument(
        "--shadow-model-sha256",
        help="expected SHA-256 of the shadow's model.pkl, for s3:// and local directories",
    )
    serving.add_argument(
        "--shadow-model-version", help="the version a directory shadow model reports"
    )
    serving.add_argument(
        "--shadow-queue-rows",
        type=int,
        default=DEFAULT_SHADOW_QUEUE_ROWS,
        help="most rows waiting for the shadow; beyond, shadow work is dropped (and counted)",
    )
    serving.add_argument(
        "--role",
        choices=(ROLE_CHAMPION, ROLE_CANARY),
        default=ROLE_CHAMPION,
        help="what the answers are logged as: the stable revision's, or a canary revision's",
    )
    serving.add_argument(
        "--rollout-state",
        help="the rollout controller's rollout.json (local path or s3://): in its canary phase "
        "the shadow (challenger) answers the canary's share of requests here, as KServe's "
        "canary revision would in a cluster (ctpipe serve passes it)",
    )
    serving.add_argument(
        "--predictions-uri",
        default=os.environ.get(PREDICTIONS_ENV),
        help=f"log every request here (local dir or s3:// prefix; default: ${PREDICTIONS_ENV}; unset: no log)",
    )
    serving.add_argument(
        "--log-flush-rows", type=int, help="also write a log file after this many rows"
    )
    serving.add_argument(
        "--log-flush-mb",
        type=float,
        default=64.0,
        help="write a log file once this many MiB of rows are journaled",
    )
    serving.add_argument(
        "--log-flush-seconds",
        type=float,
        default=300.0,
        help="write a log file at least this often (rows are safe in the journal meanwhile)",
    )
    serving.add_argument(
        "--log-journal-dir",
        default=os.environ.get(
            JOURNAL_ENV, os.path.join(tempfile.gettempdir(), "ctpipe-log-journal")
        ),
        help=f"local folder journaling log rows until they are written (default: ${JOURNAL_ENV}, "
        "else under the temp dir; '': no journal, a crash loses the rows not yet written)",
    )
    serving.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest request body accepted"
    )
    serving.add_argument(
        "--max-batch-rows", type=int, default=10_000, help="most rows in one request"
    )
    serving.add_argument(
        "--request-id-window-seconds",
        type=float,
        default=600.0,
        help="refuse (409) a row id logged this recently (0: no check); needs the prediction log",
    )
    serving.add_argument(
        "--request-id-window-ids",
        type=int,
        default=100_000,
        help="most row ids remembered for the duplicate check",
    )
    serving.add_argument(
        "--enable-repository-routes",
        action="store_true",
        help="route KServe's v2 repository load/unload: anyone who reaches the port can "
        "take the model out of service",
    )
    serving.add_argument("--enable-explain", action="store_true", help="route KServe's v1 :explain")
    serving.add_argument(
        "--reload-seconds", type=float, default=10.0, help="how often to check the alias (0: never)"
    )
    serving.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serving.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OpenMP/BLAS threads per prediction (1 is fastest for small requests)",
    )
    serving.add_argument(
        "--config", help="ctpipe.yaml, for the local MLflow store when MLFLOW_TRACKING_URI is unset"
    )
    # KServe's gRPC port has repository load/unload too, with no guard in front: off unless asked.
    serving.set_defaults(enable_grpc=False)
    return serving


def tracking_uri(config_path: str | None) -> str | None:
    from ctpipe import registry

    if os.environ.get(registry.TRACKING_ENV):
        return os.environ[registry.TRACKING_ENV]
    if config_path is None:
        return None
    from ctpipe.config import load

    return registry.tracking_uri(load(config_path).state_dir)


def build_model(args: argparse.Namespace) -> Any:
    from ctpipe.predlog import PredictionLogWriter
    from ctpipe.serving.model import ChampionModel
    from ctpipe.serving.payload import RecentIds
    from ctpipe.serving.source import ModelSource

    uri = args.model_uri or f"models:/{args.model_name}@{CHAMPION_ALIAS}"
    tracking = tracking_uri(args.config)
    source = ModelSource(
        uri, tracking, args.model_sha256, args.allow_unverified, args.model_version
    )
    if args.shadow_queue_rows < 1:
        raise ConfigError(f"--shadow-queue-rows must be at least 1, got {args.shadow_queue_rows}")
    shadow_uri = shadow_model_uri(args.shadow_model_uri, source)
    shadow = None
    if shadow_uri is not None:
        shadow = ModelSource(
            shadow_uri,
            tracking,
            args.shadow_model_sha256,
            args.allow_unverified,
            args.shadow_model_version,
        )
    writer = None
    if args.predictions_uri:
        writer = PredictionLogWriter(
            args.predictions_uri,
            args.model_name,
            max_rows=args.log_flush_rows,
            max_bytes=int(args.log_flush_mb * 2**20),
            max_seconds=args.log_flush_seconds,
            journal_dir=args.log_journal_dir or None,
        )
    recent_ids = None
    if writer is not None and args.request_id_window_seconds > 0 and args.request_id_window_ids > 0:
        recent_ids = RecentIds(args.request_id_window_ids, args.request_id_window_seconds)
    return ChampionModel(
        args.model_name,
        source,
        log_writer=writer,
        max_rows=args.max_batch_rows,
        reload_seconds=args.reload_seconds,
        recent_ids=recent_ids,
        shadow=shadow,
        shadow_queue_rows=args.shadow_queue_rows,
        role=args.role,
        rollout_state=args.rollout_state,
    )


def shadow_model_uri(given: str, champion: ModelSource) -> str | None:
    """The shadow's URI from --shadow-model-uri: 'auto' follows the challenger alias of a
    champion alias (nothing for any other champion source), 'none' is no shadow."""
    if given == SHADOW_NONE:
        return None
    if given != SHADOW_AUTO:
        return given
    alias = champion.alias
    if alias is None or alias[1] != CHAMPION_ALIAS:
        return None
    return f"models:/{alias[0]}@{CHALLENGER_ALIAS}"


def serve(args: argparse.Namespace) -> None:
    import kserve
    from kserve import model_server
    from threadpoolctl import threadpool_limits

    from ctpipe.serving.http import InferenceGuard
    from ctpipe.serving.source import THREADS_ENV

    # Requests are small and arrive concurrently: a pool of spinning OpenMP threads per
    # request costs far more than it saves (and oversubscribes the pod's CPU limit).
    # threadpoolctl limits only the libraries loaded already (BLAS, with numpy), and an
    # OpenMP limit only in the thread that sets it; OpenMP itself is loaded with the first
    # model and reads this variable then, for every thread (requests, the shadow worker).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    threadpool_limits(limits=args.threads)
    os.environ[THREADS_ENV] = str(args.threads)
    quiet_kserve_deprecation()
    model = build_model(args)
    model.load()
    model_server.app.add_middleware(
        InferenceGuard,
        max_body_bytes=args.max_body_bytes,
        model_name=args.model_name,
        enable_explain=args.enable_explain,
        enable_repository=args.enable_repository_routes,
        enable_docs=args.enable_docs_url,
        served=model.served,
    )
    if args.enable_grpc:
        logging.getLogger("ctpipe.serving").warning(
            "gRPC is on (port %s): it is KServe's own surface, repository load/unload "
            "included, with no body limit or request id checks",
            args.grpc_port,
        )
    customize_rest_server(args.host)
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,  # one process: the hot-reload watcher and the log writer live in it
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
    ).start([model])
    model.stop()  # flush the prediction log once the server has stopped


def quiet_kserve_deprecation() -> None:
    """KServe's v1 endpoint answers with FastAPI's deprecated ORJSONResponse, which warns on
    every use. Python shows such a warning once per place, but scikit-learn and pandas enter
    `warnings.catch_warnings` during every prediction, and that resets the record of what
    was shown: the pod's log got two lines of the same warning per request, and each one
    cost a source-line lookup and a write on the request path."""
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=UserWarning)


def customize_rest_server(host: str) -> None:
    """The REST server ctpipe's predictor runs: KServe's, with three changes. KServe always
    binds 0.0.0.0; a laptop server should listen on loopback.

    KServe also adds a timing middleware that logs a line with wall and CPU time for every
    request (~0.15 ms of a single-row request); ctpipe's own Prometheus histogram already
    records the latency, so that middleware is left out.

    A refused request is logged as one escaped line, not KServe's traceback (which quotes
    the request as it came), and a repeated request id is a 409. Every 4xx is one line with
    its reason; only a 5xx logs a traceback."""
    from fastapi.exceptions import RequestValidationError
    from kserve import model_server
    from kserve.errors import InvalidInput, ModelNotFound
    from timing_asgi import TimingMiddleware

    from ctpipe.serving.model import (
        duplicate_request_handler,
        invalid_input_handler,
        model_not_found_handler,
        validation_error_handler,
    )
    from ctpipe.serving.payload import DuplicateRequestId

    base = model_server.RESTServer

    class BoundRESTServer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.config.host = host

        def _add_middlewares(self, app: Any) -> None:
            super()._add_middlewares(app)
            app.user_middleware[:] = [
                m for m in app.user_middleware if m.cls is not TimingMiddleware
            ]

        def _add_exception_handlers(self, app: Any) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, invalid_input_handler)
            app.add_exception_handler(DuplicateRequestId, duplicate_request_handler)
            app.add_exception_handler(ModelNotFound, model_not_found_handler)
            app.add_exception_handler(RequestValidationError, validation_error_handler)

    model_server.RESTServer = BoundRESTServer


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        # kserve.model_server parses the process's own argv when it is imported (a caller
        # such as `ctpipe serve --config FILE` would have its --config read as kserve's
        # --configure_logging): it must see the server's arguments.
        sys.argv = [sys.argv[0], *argv]
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        serve(args)
    except CtpipeError as exc:
        print(f"ctpipe serving: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
