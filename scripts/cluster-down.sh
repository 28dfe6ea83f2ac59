#!/usr/bin/env bash
# make cluster-down: delete the kind cluster that `make cluster` created, and everything in it.
set -euo pipefail
CLUSTER="${CLUSTER:-ctpipe}"
command -v kind >/dev/null 2>&1 || { echo "cluster-down: 'kind' is not installed" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named ${CLUSTER}"
fi
