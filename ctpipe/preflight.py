"""Before anything is trained or judged: can the services this config needs be reached?

A run whose MLflow server is down trains for minutes and then fails in evaluate after
MLflow's own retries (about four minutes of them); a monitor waits as long before it
says anything. One request per service, with a short timeout and no retries, fails in
seconds instead, and names the URI and what to check.

    S3      when state_dir, data.uri or the monitor's prediction log or labels are s3://:
            each bucket must answer (HeadBucket) at the configured endpoint
    MLflow  when the tracking URI is http(s)://: its REST API must answer a search
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ctpipe import registry, storage
from ctpipe.config import Config
from ctpipe.errors import CtpipeError

CONNECT_SECONDS = 5.0  # a server that is up accepts at once; this covers a slow network
READ_SECONDS = 10.0
MLFLOW_PROBE = "/api/2.0/mlflow/experiments/search"
S3 = "s3"
MLFLOW = "mlflow"


class PreflightError(CtpipeError):
    """A service the config needs does not answer; nothing was trained or judged."""

    def __init__(self, message: str, service: str) -> None:
        super().__init__(message)
        self.service = service  # S3 or MLFLOW: which one failed


@dataclass(frozen=True)
class Checked:
    """What the preflight reached, for the caller to report."""

    buckets: tuple[str, ...]
    tracking_uri: str | None  # None: a local store (sqlite), nothing to reach


def check(config: Config) -> Checked:
    """Raise PreflightError naming the first service that does not answer."""
    buckets = s3_buckets(config)
    for bucket in buckets:
        check_bucket(bucket)
    uri = registry.tracking_uri(config.state_dir)
    if not uri.startswith(("http://", "https://")):
        return Checked(buckets, None)
    check_mlflow(uri)
    return Checked(buckets, uri)


def s3_buckets(config: Config) -> tuple[str, ...]:
    """The buckets of every s3:// location in the config, in order, once each."""
    uris = (config.state_dir, config.data.uri, config.monitor.predictions, config.monitor.labels)
    found = [storage.split_s3(uri)[0] for uri in uris if uri and storage.is_s3(uri)]
    return tuple(dict.fromkeys(found))


def check_bucket(bucket: str) -> None:
    """One HeadBucket, one attempt: boto3's own retries and 60 s timeouts would take minutes."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    endpoint = storage.s3_endpoint()
    where = endpoint or "AWS S3 (no AWS_ENDPOINT_URL_S3 set)"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=BotoConfig(
            connect_timeout=CONNECT_SECONDS,
            read_timeout=READ_SECONDS,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as exc:
        raise PreflightError(
            f"preflight: no S3 credentials for s3://{bucket} at {where}; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)",
            S3,
        ) from exc
    except ClientError as exc:
        raise PreflightError(_s3_refusal(bucket, where, exc), S3) from exc
    except BotoCoreError as exc:
        raise PreflightError(
            f"preflight: cannot reach S3 at {where} for s3://{bucket} ({exc}); check that the "
            "object store is running and that AWS_ENDPOINT_URL_S3 names it",
            S3,
        ) from exc


def _s3_refusal(bucket: str, where: str, exc: Exception) -> str:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchBucket"):
        return (
            f"preflight: bucket s3://{bucket} does not exist at {where}; create it, or fix the "
            "s3:// URIs in the config (state_dir, data.uri, monitor.predictions, monitor.labels)"
        )
    if code in ("401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            f"preflight: S3 at {where} refused access to s3://{bucket} (HTTP {code}); check "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return f"preflight: S3 at {where} answered HeadBucket s3://{bucket} with {code or exc}"


def check_mlflow(uri: str) -> None:
    """One GET on the tracking server's REST API, with MLflow's own credentials and TLS
    settings (MLFLOW_TRACKING_USERNAME, _TOKEN, ...) but none of its retries."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(uri),
            MLFLOW_PROBE,
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=(CONNECT_SECONDS, READ_SECONDS),
            raise_on_status=False,
            params={"max_results": 1},
        )
    except Exception as exc:  # MlflowException wraps requests' connection errors and timeouts
        raise PreflightError(
            f"preflight: cannot reach the MLflow tracking server at {uri} "
            f"({registry.TRACKING_ENV}): {_connection_failure(exc)}; check that the server is running "
            f"and that {registry.TRACKING_ENV} names it",
            MLFLOW,
        ) from exc
    status = int(response.status_code)
    if status in (401, 403):
        raise PreflightError(
            f"preflight: the MLflow tracking server at {uri} refused the credentials "
            f"(HTTP {status}); check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN)",
            MLFLOW,
        )
    if status != 200 or not _is_json(response):
        raise PreflightError(
            f"preflight: {uri} ({registry.TRACKING_ENV}) answered GET {MLFLOW_PROBE} with "
            f"HTTP {status}, not as an MLflow tracking server does; check the URI (host, port, "
            "path prefix) and the server's log",
            MLFLOW,
        )


def _is_json(response: object) -> bool:
    try:
        return isinstance(response.json(), dict)  # type: ignore[attr-defined]
    except ValueError:
        return False


# What requests/urllib3 say deep inside MLflow's message, in a few words.
_CAUSES = (
    (re.compile(r"connection refused", re.I), "connection refused (nothing listens there)"),
    (re.compile(r"timed? ?out", re.I), f"no answer within {CONNECT_SECONDS:g}-{READ_SECONDS:g} s"),
    (
        re.compile(r"name or service not known|nodename nor servname|getaddrinfo failed", re.I),
        "the host name does not resolve",
    ),
    (re.compile(r"ssl|certificate", re.I), "TLS failed (see MLFLOW_TRACKING_INSECURE_TLS)"),
)


def _connection_failure(exc: BaseException) -> str:
    text = str(exc).strip()
    for pattern, words in _CAUSES:
        if pattern.search(text):
            return words
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 300 else first[:299] + "…"
