"""The champion's InferenceService: rendered from the config, applied by server-side apply.

This is the one module that talks to the Kubernetes API. The pipeline's service account
needs, in the deploy namespace: `get`, `create` and `patch` on
`inferenceservices.serving.kserve.io` (server-side apply is a PATCH that may create).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ctpipe import __version__, registry, storage
from ctpipe.config import Config
from ctpipe.errors import CtpipeError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
FIELD_MANAGER = "ctpipe"
HTTP_PORT = 8080
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
DOWNLOADABLE = ("s3://", "gs://", "https://", "pvc://", "hdfs://", "webhdfs://")
ENV_CONFIG_MAP = "ctpipe-env"
S3_SECRET = "ctpipe-s3"
MLFLOW_AUTH_SECRET = "ctpipe-mlflow-auth"  # MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
BLESSING_SECRET = "ctpipe-blessing"  # CTPIPE_BLESSING_KEY (see ctpipe.blessing)
# Only pods with this label reach MLflow (manifests/base/networkpolicy.yaml).
MLFLOW_CLIENT_LABEL = ("ctpipe.io/mlflow-client", "true")
SECRETS = (S3_SECRET, MLFLOW_AUTH_SECRET, BLESSING_SECRET)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class DeployError(CtpipeError):
    """The InferenceService could not be rendered or applied."""


@dataclass(frozen=True)
class ModelLocation:
    """Where the predictor finds a model version."""

    version: str
    sha256: str
    storage_uri: str | None  # None: the predictor pulls it from the MLflow registry itself


def service_name(config: Config) -> str:
    name = config.deploy.service or config.model_name
    if len(name) > 45 or not _NAME.match(name):
        raise DeployError(
            f"deploy.service: {name!r} is not a valid InferenceService name (lowercase letters, digits and "
            "'-', at most 45 characters); set deploy.service"
        )
    return name


def locate(config: Config, ref: registry.ModelRef, mlflow_client: Any = None) -> ModelLocation:
    """The version's artifact location when KServe's storage initializer can fetch it."""
    mlflow_client = mlflow_client or registry.client(config)
    uri = str(mlflow_client.get_model_version_download_uri(ref.name, ref.version))
    return ModelLocation(
        ref.version, registry.blessed_sha256(ref), uri if uri.startswith(DOWNLOADABLE) else None
    )


def render(config: Config, model: ModelLocation, traffic_percent: int) -> dict[str, Any]:
    """The InferenceService manifest for a model version, with `traffic_percent` of the
    traffic going to it (the rest stays on the previous revision) when below 100."""
    deploy = config.deploy
    name = service_name(config)
    predictions = config.monitor.predictions or storage.join(config.state_dir, "predictions")
    args = [
        "--model_name", config.model_name,
        "--http_port", str(HTTP_PORT),
        "--enable_grpc", "false",
        "--predictions-uri", predictions,
        "--model-version", model.version,
    ]  # fmt: skip
    env = [{"name": "CTPIPE_MODEL_VERSION", "value": model.version}]
    if model.storage_uri:
        args += ["--model-uri", MODEL_MOUNT, "--model-sha256", model.sha256]
        env.append({"name": "STORAGE_URI", "value": model.storage_uri})
    else:
        args += [
            "--model-uri",
            f"models:/{config.model_name}/{model.version}",
            "--reload-seconds",
            "0",
        ]
    limits: dict[str, Any] = {"cpu": deploy.cpu_limit, "memory": deploy.memory_limit}
    if deploy.gpu:
        limits["nvidia.com/gpu"] = deploy.gpu
    container = {
        "name": "kserve-container",
        "image": deploy.image or f"ctpipe/serving:{__version__}",
        "args": args,
        "env": env,
        # The same endpoints and credentials every pipeline step gets (manifests/base).
        "envFrom": [
            {"configMapRef": {"name": ENV_CONFIG_MAP, "optional": True}},
            *({"secretRef": {"name": name, "optional": True}} for name in SECRETS),
        ],
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": deploy.cpu_request, "memory": deploy.memory_request},
            "limits": limits,
        },
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{config.model_name}/ready", "port": HTTP_PORT}
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor: dict[str, Any] = {
        "labels": dict([MLFLOW_CLIENT_LABEL]),
        "serviceAccountName": deploy.service_account,
        "minReplicas": deploy.min_replicas,
        "maxReplicas": deploy.max_replicas,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if 0 < traffic_percent < 100:
        predictor["canaryTrafficPercent"] = traffic_percent
    if deploy.node_selector:
        predictor["nodeSelector"] = dict(deploy.node_selector)
    if deploy.tolerations:
        predictor["tolerations"] = [dict(t) for t in deploy.tolerations]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": deploy.namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "ctpipe"},
            "annotations": {
                "ctpipe.io/model": config.model_name,
                "ctpipe.io/model-version": model.version,
            },
        },
        "spec": {"predictor": predictor},
    }


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def should_apply(config: Config) -> bool:
    mode = config.deploy.apply
    return mode == "always" or (mode == "auto" and in_cluster())


def apply(manifest: dict[str, Any], api_client: Any = None) -> dict[str, Any]:
    """Server-side apply (PATCH application/apply-patch+yaml, fieldManager=ctpipe)."""
    if api_client is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except Exception as exc:  # no kubeconfig: deploy.apply is "always" off-cluster
                raise DeployError(
                    f"deploy.apply is {'always'!r} but no cluster is reachable: neither in-cluster "
                    f"credentials nor a kubeconfig ({exc})"
                ) from exc
        api_client = client.ApiClient()
    meta = manifest["metadata"]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}"
    try:
        result = api_client.call_api(
            path,
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            body=manifest,
            auth_settings=["BearerToken"],
            response_type="object",
            _return_http_data_only=True,
        )
    except Exception as exc:  # kubernetes.client.ApiException, urllib3 errors
        status = getattr(exc, "status", None)
        hint = (
            " (the service account needs patch on inferenceservices.serving.kserve.io)"
            if status == 403
            else ""
        )
        raise DeployError(
            f"applying InferenceService {meta['namespace']}/{meta['name']} failed: {exc}{hint}"
        ) from exc
    return dict(result or {})


def to_yaml(manifest: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False)
