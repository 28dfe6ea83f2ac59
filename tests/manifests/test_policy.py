"""What every rendered overlay must and must not contain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ctpipe import __version__, deploy
from ctpipe.components import images
from ctpipe.config import from_dict
from ctpipe.pipelines import continuous_training as pipeline
from ctpipe.pipelines import submit
from tests.manifests.conftest import (
    MANIFESTS,
    NAMESPACE,
    Doc,
    containers,
    find,
    one,
    overlay,
    pod_specs,
)

THIRD_PARTY_IMAGES = {"prom/pushgateway:v1.11.1"}
SECRETS = deploy.SECRETS
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)


def all_containers(docs: list[Doc]) -> list[tuple[str, Doc, Doc]]:
    return [
        (f"{where} {c['name']}", pod, c)
        for doc in docs
        for where, pod in pod_specs(doc)
        for c in containers(pod)
    ]


def test_every_image_is_pinned(rendered: list[Doc]) -> None:
    for where, _, container in all_containers(rendered):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and "/" not in tag), f"{where}: {image} has no tag"
        assert tag != "latest", f"{where}: {image}"
        # ctpipe/<image>, or <registry>/ctpipe/<image> where an overlay's deploy.image says so.
        if images.role_of(image):
            assert tag == __version__, f"{where}: {image} (the ctpipe version is {__version__})"
        else:
            assert image in THIRD_PARTY_IMAGES, f"{where}: unexpected image {image}"


def test_rbac_is_least_privilege(rendered: list[Doc]) -> None:
    assert not find(rendered, "ClusterRole") and not find(rendered, "ClusterRoleBinding")
    for role in find(rendered, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"Role/{role['metadata']['name']}: {key} *"
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(
                rule["verbs"]
            )
    assert {r["metadata"]["name"] for r in find(rendered, "Role")} == {
        "ctpipe-deployer",
        "ctpipe-rollout",
    }


def test_the_monitor_may_apply_the_predictor_and_nothing_more(rendered: list[Doc]) -> None:
    """The rollout runs in the monitor's CronJob and server-side-applies the predictor's
    InferenceService (ctpipe.deploy.apply): a PATCH that creates the object when it is not
    there. That, and reading it back, is all its Kubernetes identity may do."""
    role = one(rendered, "Role", "ctpipe-rollout")
    isvc = {"apiGroups": [deploy.GROUP], "resources": [deploy.PLURAL]}
    assert role["rules"] == [
        {**isvc, "resourceNames": ["ctpipe-demo"], "verbs": ["get", "patch"]},
        {**isvc, "verbs": ["create"]},  # RBAC cannot limit create by name
    ]
    binding = one(rendered, "RoleBinding", "ctpipe-rollout")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "ctpipe-rollout",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ctpipe-monitor", "namespace": NAMESPACE}
    ]
    # The monitor's bindings: this Role and KFP's; nothing else binds its service account.
    bound = {
        b["metadata"]["name"]
        for b in find(rendered, "RoleBinding")
        if any(s["name"] == "ctpipe-monitor" for s in b["subjects"])
    }
    assert bound == {"ctpipe-rollout", "ctpipe-monitor-kfp-edit"}
    # Its API token: projected into the monitor container only (not the compaction before
    # it), where in-cluster clients look, for the API server's own audience.
    from kubernetes.config import incluster_config

    token_dir, token_file = incluster_config.SERVICE_TOKEN_FILENAME.rsplit("/", 1)
    pod = one(rendered, "CronJob", "ctpipe-monitor")["spec"]["jobTemplate"]["spec"]["template"]
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    (monitor,) = spec["containers"]
    (mount,) = [m for m in monitor["volumeMounts"] if m["mountPath"] == token_dir]
    assert mount["readOnly"] is True
    for init in spec["initContainers"]:
        assert mount["name"] not in {m["name"] for m in init["volumeMounts"]}, init["name"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token["path"] == token_file and "audience" not in token
    (ca,) = [s["configMap"] for s in sources if "configMap" in s]
    ca_file = incluster_config.SERVICE_CERT_FILENAME.rsplit("/", 1)[1]
    assert ca["name"] == "kube-root-ca.crt" and ca["items"] == [{"key": "ca.crt", "path": ca_file}]


def test_every_container_has_resources_and_the_restricted_fields(rendered: list[Doc]) -> None:
    found = all_containers(rendered)
    assert len(found) >= 3
    for where, pod, c in found:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), (
                f"{where}: resources.{kind} needs cpu and memory"
            )
        ctx, pod_ctx = c.get("securityContext", {}), pod.get("securityContext", {})
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not ctx.get("capabilities", {}).get("add"), where
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        assert not ctx.get("privileged"), where
        # Every one of our containers can run read-only: each writes only to mounted volumes.
        assert ctx.get("readOnlyRootFilesystem") is True, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where
        assert not any("hostPath" in v for v in pod.get("volumes", [])), where
        assert pod.get("automountServiceAccountToken") is False, f"{where}: no API token needed"


def test_only_the_gpu_overlay_asks_for_gpus() -> None:
    def gpu_containers(docs: list[Doc]) -> set[str]:
        return {
            where
            for where, _, c in all_containers(docs)
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
        }

    assert not gpu_containers(overlay("kind"))
    gpu = overlay("gpu-cloud")
    assert gpu_containers(gpu) == {"InferenceService/ctpipe-demo predictor kserve-container"}
    predictor = one(gpu, "InferenceService", "ctpipe-demo")["spec"]["predictor"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor[
        "tolerations"
    ]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_monitor_cronjob(rendered: list[Doc]) -> None:
    cron = one(rendered, "CronJob", "ctpipe-monitor")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    # Schedule and time zone come from monitor-schedule.env, through kustomize replacements.
    settings = dict(
        line.split("=", 1)
        for line in (MANIFESTS / "base/monitor-schedule.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert spec["schedule"] == settings["MONITOR_SCHEDULE"]
    assert spec["timeZone"] == settings["MONITOR_TIME_ZONE"]
    assert not find(rendered, "ConfigMap", "ctpipe-monitor-schedule")  # local-config only

    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:1] == ["monitor"] and "--submit=kfp" in container["args"]
    assert pod["serviceAccountName"] == "ctpipe-monitor"
    # The projected token, with the audience the KFP API accepts, where kfp.Client and
    # KfpSubmitter read it.
    token_dir, token_file = submit.DEFAULT_TOKEN_PATH.rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == token_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert source["serviceAccountToken"]["path"] == token_file
    env = {e["name"]: e for e in container.get("env", [])}
    assert env[submit.TOKEN_ENV]["value"] == submit.DEFAULT_TOKEN_PATH
    # KF_PIPELINES_ENDPOINT reaches it through the ctpipe-env ConfigMap.
    refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    assert refs == ["ctpipe-env"]
    endpoints = one(rendered, "ConfigMap", "ctpipe-env")["data"]
    assert endpoints[submit.HOST_ENV].startswith("http://ml-pipeline.kubeflow.svc")
    # The policy file it reads is the ConfigMap's ctpipe.yaml.
    (config_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/ctpipe"]
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == config_mount["name"]]
    assert config_volume["configMap"]["name"].startswith("ctpipe-config")
    assert "--config=/etc/ctpipe/ctpipe.yaml" in container["args"]


def test_monitor_may_use_the_kfp_api_in_multi_user_mode(rendered: list[Doc]) -> None:
    binding = one(rendered, "RoleBinding", "ctpipe-monitor-kfp-edit")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kubeflow-pipelines-edit",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ctpipe-monitor", "namespace": NAMESPACE}
    ]


def test_the_policy_configmap_is_a_valid_cluster_config(rendered: list[Doc]) -> None:
    (policy,) = [
        d for d in find(rendered, "ConfigMap") if d["metadata"]["name"].startswith("ctpipe-config")
    ]
    config = from_dict(yaml.safe_load(policy["data"]["ctpipe.yaml"]), source="ctpipe.yaml")
    # Pods are ephemeral: all state in the object store.
    assert config.state_dir.startswith("s3://")
    assert config.monitor.predictions and config.monitor.predictions.startswith("s3://")
    assert config.monitor.labels and config.monitor.labels.startswith("s3://")
    # The predictor serves this model and logs where the monitor reads.
    isvc = one(rendered, "InferenceService", config.model_name)
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    assert f"--model_name={config.model_name}" in args
    assert f"--model-uri=models:/{config.model_name}@champion" in args
    assert f"--predictions-uri={config.monitor.predictions}" in args


def test_secrets_are_only_referenced(rendered: list[Doc]) -> None:
    assert not find(rendered, "Secret"), "Secrets are created out of band, never committed"
    for where, _, c in all_containers(rendered):
        for env in c.get("env", []):
            if "value" in env and SECRET_NAME.search(env["name"]):
                assert env["name"].endswith("_PATH"), f"{where}: {env['name']} has a literal value"
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in SECRETS, where
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in SECRETS, f"{where}: {env['name']}"
    for doc in find(rendered, "ConfigMap"):
        for key in doc.get("data", {}):
            assert not SECRET_NAME.search(key), f"ConfigMap/{doc['metadata']['name']}: {key}"


def test_namespaces_and_network_policy(rendered: list[Doc]) -> None:
    namespace = one(rendered, "Namespace", NAMESPACE, namespace=None)  # type: ignore[arg-type]
    assert "pod-security.kubernetes.io/enforce" in namespace["metadata"]["labels"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in {NAMESPACE, "kubeflow"}, (
                f"{doc['kind']}/{doc['metadata']['name']} has no namespace"
            )
    deny = one(rendered, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    covered = {
        tuple(sorted(p["spec"]["podSelector"].get("matchLabels", {}).items()))
        for p in find(rendered, "NetworkPolicy")
    }
    assert (("app.kubernetes.io/name", "mlflow"),) in covered
    assert (("serving.kserve.io/inferenceservice", "ctpipe-demo"),) in covered


def test_mlflow_admits_only_its_clients_and_asks_for_credentials(rendered: list[Doc]) -> None:
    """Issue 15: MLflow ran without authentication and admitted every pod of two namespaces;
    a registry write then became code execution in the predictor."""
    policy = one(rendered, "NetworkPolicy", "mlflow")
    label = dict([deploy.MLFLOW_CLIENT_LABEL])
    for source in policy["spec"]["ingress"][0]["from"]:
        assert source.get("podSelector", {}).get("matchLabels") == label, source
    server = one(rendered, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == deploy.MLFLOW_AUTH_SECRET
    auth = next(d for d in find(rendered, "ConfigMap") if "basic_auth.ini" in d.get("data", {}))
    assert "database_uri = sqlite:////mlflow/" in auth["data"]["basic_auth.ini"]  # on the volume
    assert "NO_PERMISSIONS" in auth["data"]["basic_auth.ini"]
    # Everything that talks to MLflow carries the label and the credentials.
    monitor = one(rendered, "CronJob", "ctpipe-monitor")["spec"]["jobTemplate"]["spec"]["template"]
    isvc = one(rendered, "InferenceService", "ctpipe-demo")["spec"]["predictor"]
    for where, labels, container in (
        ("monitor", monitor["metadata"]["labels"], monitor["spec"]["containers"][0]),
        ("predictor", isvc["labels"], isvc["containers"][0]),
    ):
        assert labels.get(deploy.MLFLOW_CLIENT_LABEL[0]) == "true", where
        refs = {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s}
        assert deploy.MLFLOW_AUTH_SECRET in refs, where
    assert deploy.BLESSING_SECRET in {
        s["secretRef"]["name"] for s in isvc["containers"][0]["envFrom"] if "secretRef" in s
    }


def test_kind_gives_the_pipeline_steps_the_same_endpoints() -> None:
    docs = overlay("kind")
    ours = one(docs, "ConfigMap", pipeline.ENV_CONFIG_MAP)["data"]
    steps = one(docs, "ConfigMap", pipeline.ENV_CONFIG_MAP, namespace="kubeflow")["data"]
    assert set(steps) == set(pipeline.ENV_FROM_CONFIG_MAP)
    assert steps == {k: ours[k] for k in steps}
    assert ours["AWS_ENDPOINT_URL_S3"].startswith("http://minio-service.kubeflow.svc")
    # KFP's NetworkPolicies admit only its own namespace: ours opens the two doors we use.
    for name, port in (("ctpipe-to-object-store", 8333), ("ctpipe-to-kfp-api", 8888)):
        (rule,) = one(docs, "NetworkPolicy", name, namespace="kubeflow")["spec"]["ingress"]
        assert rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}
        ]
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
    # In standalone KFP the deploy step runs as kubeflow/pipeline-runner.
    binding = one(docs, "RoleBinding", "ctpipe-deployer")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]


def test_gpu_cloud_is_a_kubeflow_profile_namespace() -> None:
    docs = overlay("gpu-cloud")
    env = one(docs, "ConfigMap", pipeline.ENV_CONFIG_MAP)["data"]
    assert env[submit.NAMESPACE_ENV] == NAMESPACE
    assert "AWS_ENDPOINT_URL_S3" not in env  # AWS S3 itself
    binding = one(docs, "RoleBinding", "ctpipe-deployer")
    assert binding["subjects"][0]["name"] == "default-editor"
    assert find(docs, "PrometheusRule") and find(docs, "PodMonitor")


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("*.y*ml"))
)
def test_manifest_sources_parse(path: str) -> None:
    assert list(yaml.safe_load_all((MANIFESTS / path).read_text()))


def test_base_image_tags_follow_the_version() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "base/kustomization.yaml").read_text())
    assert {i["name"]: i["newTag"] for i in kustomization["images"]} == {
        "ctpipe/base": __version__,
        "ctpipe/serving": __version__,
        "ctpipe/trainer-gpu": __version__,
    }, "bump the image tags in manifests/base/kustomization.yaml with the version"


def test_readme_commands_point_at_real_files() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for path in re.findall(r"\b(?:manifests|scripts|images)/[\w./-]+", readme):
        assert (Path(__file__).resolve().parents[2] / path.rstrip(".")).exists(), path
