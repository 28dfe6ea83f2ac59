"""Bootstrap ctpipe on a cluster where Kubeflow Pipelines runs (scripts/cluster-up.sh calls it).

    python scripts/kfp_bootstrap.py buckets  --config manifests/base/ctpipe.yaml
    python scripts/kfp_bootstrap.py pipeline --config manifests/base/ctpipe.yaml

`buckets` creates the object-store buckets that the config and MLflow use. `pipeline` uploads
the compiled pipeline as a new version (named by its content, so a rerun uploads nothing
new), creates the recurring run unless one of that name exists, and submits a first run.

Both reach in-cluster services through `kubectl port-forward` unless given an endpoint
(--s3-endpoint, --kfp-host). Credentials come from the cluster's Secret ctpipe-s3 and the
current kube context; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "manifests/base/ctpipe.yaml"
DEFAULT_ENV = ROOT / "manifests/base/env.properties"
DEFAULT_PACKAGE = ROOT / "pipelines/compiled/continuous_training.yaml"
# KFP's six-field cron (seconds first): 03:00 every day.
DEFAULT_CRON = "0 0 3 * * *"


CONTEXT: str | None = None  # kube context for every kubectl call (--context); None: current


def kubectl() -> list[str]:
    """The kubectl command, with the chosen context."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("kubectl not found (make installs it into .venv)")
    return [found, *(["--context", CONTEXT] if CONTEXT else [])]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_forward(namespace: str, service: str, port: int, timeout: float = 60.0) -> Iterator[str]:
    """`kubectl port-forward` to a Service for the duration of the block; yields the URL."""
    local = free_port()
    process = subprocess.Popen(
        [*kubectl(), "port-forward", "-n", namespace, f"svc/{service}", f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"port-forward to {namespace}/{service} failed: {process.stderr.read() if process.stderr else ''}"
                )
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", local)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"port-forward to {namespace}/{service} did not open in {timeout:.0f}s"
                )
            time.sleep(0.2)
        yield f"http://127.0.0.1:{local}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def read_secret(namespace: str, name: str) -> dict[str, str]:
    out = subprocess.run(
        [*kubectl(), "get", "secret", "-n", namespace, name, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {k: base64.b64decode(v).decode() for k, v in json.loads(out)["data"].items()}


def properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def buckets_of(config_path: Path, env_path: Path) -> list[str]:
    from ctpipe import storage
    from ctpipe.config import load

    config = load(config_path)
    uris = [config.state_dir, config.monitor.predictions, config.monitor.labels]
    uris.append(properties(env_path).get("MLFLOW_ARTIFACT_ROOT", ""))
    return sorted({storage.split_s3(u)[0] for u in uris if u and storage.is_s3(u)})


def cmd_buckets(args: argparse.Namespace) -> int:
    import boto3

    names = buckets_of(Path(args.config), Path(args.env))
    secret = read_secret(args.namespace, args.secret)
    with contextlib.ExitStack() as stack:
        endpoint = args.s3_endpoint or stack.enter_context(
            port_forward(args.s3_namespace, args.s3_service, args.s3_port)
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=secret["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret["AWS_SECRET_ACCESS_KEY"],
            region_name=args.region,
        )
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for name in names:
            if name in existing:
                print(f"bucket {name}: exists")
            else:
                s3.create_bucket(Bucket=name)
                print(f"bucket {name}: created")
    return 0


def version_name(package: Path) -> str:
    from ctpipe import __version__

    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    return f"{__version__}-{digest}"


def cmd_pipeline(args: argparse.Namespace) -> int:
    from ctpipe.config import load
    from ctpipe.pipelines.submit import KfpSubmitter

    config = load(args.config)
    package = Path(args.package)
    with contextlib.ExitStack() as stack:
        host = args.kfp_host or stack.enter_context(
            port_forward(args.kfp_namespace, "ml-pipeline", 8888)
        )
        submitter = KfpSubmitter(host, namespace=args.namespace)
        name = config.monitor.pipeline_name
        pipeline_id, version_id = submitter.upload(
            package, name, version_name(package), description="ctpipe continuous training"
        )
        print(f"pipeline {name}: version {version_id} (pipeline {pipeline_id})")
        existing = submitter.recurring_run_id(config, args.recurring_run)
        if existing:
            print(
                f"recurring run {args.recurring_run}: exists ({existing}); it runs the version it "
                "was created with: delete it in the dashboard and rerun to move it to this one"
            )
        else:
            created = submitter.schedule(config, args.cron, args.recurring_run)
            print(f"recurring run {args.recurring_run}: created ({created}), cron {args.cron!r}")
        if args.run_now:
            run = submitter.submit(
                config, "bootstrap", f"{config.model_name}-bootstrap-{int(time.time())}"
            )
            print(f"first run: {run.run_id}; follow it in the dashboard (Runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the cluster's ctpipe.yaml")
    parser.add_argument("--context", help="kube context (default: the current one)")
    commands = parser.add_subparsers(dest="command", required=True)

    buckets = commands.add_parser("buckets", help="create the buckets the config uses")
    buckets.add_argument(
        "--env", default=str(DEFAULT_ENV), help="env.properties (MLFLOW_ARTIFACT_ROOT)"
    )
    buckets.add_argument("--namespace", default="ctpipe", help="where the Secret ctpipe-s3 is")
    buckets.add_argument("--secret", default="ctpipe-s3")
    buckets.add_argument(
        "--s3-endpoint", help="S3 endpoint (default: port-forward to --s3-service)"
    )
    buckets.add_argument("--s3-namespace", default="kubeflow")
    buckets.add_argument("--s3-service", default="minio-service")
    buckets.add_argument("--s3-port", type=int, default=9000)
    buckets.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    buckets.set_defaults(func=cmd_buckets)

    pipeline = commands.add_parser("pipeline", help="upload, schedule, and run the pipeline")
    pipeline.add_argument("--package", default=str(DEFAULT_PACKAGE), help="compiled pipeline")
    pipeline.add_argument("--kfp-host", help="KFP API (default: port-forward to ml-pipeline)")
    pipeline.add_argument("--kfp-namespace", default="kubeflow", help="where ml-pipeline runs")
    pipeline.add_argument("--namespace", help="KFP profile namespace (multi-user only)")
    pipeline.add_argument("--recurring-run", default="ctpipe-nightly")
    pipeline.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"six fields (default {DEFAULT_CRON!r})"
    )
    pipeline.add_argument("--no-run-now", dest="run_now", action="store_false", help="no first run")
    pipeline.set_defaults(func=cmd_pipeline)

    args = parser.parse_args(argv)
    global CONTEXT
    CONTEXT = args.context
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
