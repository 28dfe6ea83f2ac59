#!/usr/bin/env bash
# make cluster: a kind cluster running ctpipe end to end.
#
#   1. a kind cluster (kind, docker);
#   2. Kubeflow Pipelines standalone, from the pinned platform-agnostic manifests;
#   3. KServe (Standard mode, with cert-manager), unless KSERVE=0;
#   4. the object-store credentials as the Secret ctpipe-s3, and the buckets; MLflow's
#      credentials (ctpipe-mlflow-auth) and the blessing key (ctpipe-blessing), made once;
#   5. `skaffold run -p kind`: images built and loaded, manifests applied (MLflow, the
#      drift-monitor CronJob, the InferenceService, ...);
#   6. the pipeline uploaded, the recurring run created, and a first run submitted.
#
# Safe to rerun: every step skips or updates what exists. Settings (environment):
#   CLUSTER=ctpipe  KFP_VERSION=2.17.2  KSERVE=1  KSERVE_VERSION=v0.20.0
#   CERT_MANAGER_VERSION=v1.17.0  KIND_NODE_IMAGE=(kind's default)  TAG=(ctpipe version)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-ctpipe}"
KFP_VERSION="${KFP_VERSION:-2.17.2}"
KSERVE="${KSERVE:-1}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"
PYTHON="${PYTHON:-.venv/bin/python}"
KUBECTL="${KUBECTL:-$(command -v .venv/bin/kubectl || command -v kubectl || true)}"
TAG="${TAG:-$("$PYTHON" -c 'import ctpipe; print(ctpipe.__version__)')}"
CONTEXT="kind-${CLUSTER}"
KFP_MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"

say() { printf '\n==> %s\n' "$*"; }
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "cluster-up: '$1' is needed: $2" >&2; exit 1; }
}
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need docker "kind and skaffold build with a Docker engine"
need skaffold "https://skaffold.dev/docs/install/"
need git "kubectl fetches the KFP manifests from GitHub with git"
[ -n "$KUBECTL" ] || { echo "cluster-up: kubectl not found (run make first)" >&2; exit 1; }
[ "$KSERVE" = 0 ] || need helm "KServe is installed from its Helm charts (or KSERVE=0)"
k() { "$KUBECTL" --context "$CONTEXT" "$@"; }

say "kind cluster ${CLUSTER}"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "exists"
else
  kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi

say "Kubeflow Pipelines ${KFP_VERSION} (standalone, platform-agnostic)"
k apply -k "${KFP_MANIFESTS}/cluster-scoped-resources?ref=${KFP_VERSION}"
k wait --for condition=established --timeout=120s crd/applications.app.k8s.io
k apply -k "${KFP_MANIFESTS}/env/platform-agnostic?ref=${KFP_VERSION}"
echo "waiting for KFP to come up (several minutes on a first install)"
k -n kubeflow wait --for=condition=Available deployment --all --timeout=20m

if [ "$KSERVE" = 0 ]; then
  say "KServe skipped (KSERVE=0): only its InferenceService CRD, so the manifests apply; nothing serves"
  k apply --server-side -f tests/manifests/schemas/serving.kserve.io_inferenceservices.yaml
else
  say "cert-manager ${CERT_MANAGER_VERSION} and KServe ${KSERVE_VERSION} (Standard mode)"
  k apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
  k -n cert-manager wait --for=condition=Available deployment --all --timeout=10m
  helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
    --kube-context "$CONTEXT" --namespace kserve --create-namespace \
    --version "$KSERVE_VERSION" --wait
  helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources \
    --kube-context "$CONTEXT" --namespace kserve --version "$KSERVE_VERSION" \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true \
    --wait --timeout 10m
fi

say "object-store credentials (Secret ctpipe-s3, from KFP's own) and buckets"
k create namespace ctpipe --dry-run=client -o yaml | k apply -f -
access="$(k -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)"
secret="$(k -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)"
for ns in ctpipe kubeflow; do  # kubeflow: where standalone KFP runs the pipeline's steps
  k -n "$ns" create secret generic ctpipe-s3 \
    --from-env-file=<(printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$access" "$secret") \
    --dry-run=client -o yaml | k apply -f -
done
unset access secret
"$PYTHON" scripts/kfp_bootstrap.py --context "$CONTEXT" buckets

say "MLflow credentials (Secret ctpipe-mlflow-auth) and the blessing key (Secret ctpipe-blessing)"
token() { "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))'; }
# Made once, then kept: MLflow keeps its first admin password, and a new blessing key would
# unbless every registered version. The steps of standalone KFP (kubeflow) get copies.
ensure_secret() {  # NAME KEY=VALUE...
  local name="$1"; shift
  if ! k -n ctpipe get secret "$name" >/dev/null 2>&1; then
    k -n ctpipe create secret generic "$name" --from-env-file=<(printf '%s\n' "$@")
  fi
  k -n ctpipe get secret "$name" -o json | "$PYTHON" -c '
import json, sys
secret = json.load(sys.stdin)
secret["metadata"] = {"name": secret["metadata"]["name"], "namespace": "kubeflow"}
print(json.dumps(secret))' | k apply -f -
}
ensure_secret ctpipe-mlflow-auth MLFLOW_TRACKING_USERNAME=ctpipe \
  "MLFLOW_TRACKING_PASSWORD=$(token)" "MLFLOW_FLASK_SERVER_SECRET_KEY=$(token)"
ensure_secret ctpipe-blessing "CTPIPE_BLESSING_KEY=$(token)"

say "skaffold run -p kind (images ${TAG}, manifests/overlays/kind)"
# The fixed tag is the one the checked-in compiled pipeline names (ctpipe/base:${TAG}).
skaffold run -p kind --kube-context "$CONTEXT" --tag "$TAG" --status-check=true

say "pipeline upload, recurring run, first run"
"$PYTHON" scripts/kfp_bootstrap.py --context "$CONTEXT" pipeline

cat <<DONE

ctpipe is running in kind cluster ${CLUSTER}.
  Kubeflow dashboard:  ${KUBECTL} --context ${CONTEXT} -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
                       then open http://localhost:8080 (Runs: the first run; Recurring Runs: ctpipe-nightly)
  MLflow:              ${KUBECTL} --context ${CONTEXT} -n ctpipe port-forward svc/mlflow 5000:5000
  The monitor now:     ${KUBECTL} --context ${CONTEXT} -n ctpipe create job --from=cronjob/ctpipe-monitor monitor-now
  Remove it all:       make cluster-down
DONE
