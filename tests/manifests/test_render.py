"""Every overlay renders, and every object in it is one the API server would accept."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from tests.manifests.conftest import (
    OVERLAYS,
    ROOT,
    SCHEMAS,
    Doc,
    crd_schema,
    find,
    group,
    is_builtin,
    overlay,
    render,
)

# The oldest Kubernetes we support (CronJob timeZone is GA from 1.27) and a current one.
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")
CRD_SCHEMAS = {
    ("serving.kserve.io", "InferenceService"): (
        "serving.kserve.io_inferenceservices.yaml",
        "v1beta1",
    ),
    ("serving.kserve.io", "ServingRuntime"): ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    # Prometheus Operator kinds; test_monitoring checks what they select and alert on.
    **{
        ("monitoring.coreos.com", kind): (f"monitoring.coreos.com_{kind.lower()}s.yaml", "v1")
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
    },
}


@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_renders(path: str) -> None:
    docs = render(path)
    assert docs, f"{path} rendered nothing"
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "CronJob", "InferenceService", "NetworkPolicy"} <= kinds


def test_every_kind_is_validated_somewhere(rendered: list[Doc]) -> None:
    unknown = {
        (group(d), d["kind"])
        for d in rendered
        if not is_builtin(d) and (group(d), d["kind"]) not in CRD_SCHEMAS
    }
    assert not unknown, f"custom resources without a schema check: {sorted(unknown)}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_objects_pass_strict_validation(rendered: list[Doc], version: str) -> None:
    failures = []
    for doc in filter(is_builtin, rendered):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, f"Kubernetes {version}:\n" + "\n".join(failures)


def test_strict_validation_rejects_a_misspelled_field() -> None:
    (cronjob,) = find(overlay("kind"), "CronJob")
    cronjob["spec"]["concurencyPolicy"] = cronjob["spec"].pop("concurrencyPolicy")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, KUBERNETES_VERSIONS[0], strict=True)


def validate_custom(doc: Doc) -> None:
    filename, version = CRD_SCHEMAS[(group(doc), doc["kind"])]
    assert doc["apiVersion"] == f"{group(doc)}/{version}"
    jsonschema.Draft7Validator(crd_schema(filename, version)).validate(doc)


def test_custom_objects_match_the_crd_schemas(rendered: list[Doc]) -> None:
    checked = [d for d in rendered if (group(d), d["kind"]) in CRD_SCHEMAS]
    assert find(checked, "InferenceService"), "no InferenceService rendered"
    for doc in checked:
        validate_custom(doc)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda isvc: isvc["spec"]["predictor"].update(minReplica=1),
        lambda isvc: isvc["spec"]["predictor"]["containers"][0].update(imagePullPolicyy="Always"),
        lambda isvc: isvc["spec"]["predictor"]["containers"][0]["securityContext"].update(
            readOnlyRootFs=True
        ),
        lambda isvc: isvc["spec"]["predictor"].update(minReplicas="one"),
    ],
    ids=["predictor", "container", "securityContext", "wrong-type"],
)
def test_the_crd_check_rejects_unknown_fields(mangle: object) -> None:
    (isvc,) = find(overlay("kind"), "InferenceService")
    bad = copy.deepcopy(isvc)
    mangle(bad)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(bad)


def test_schema_copies_match_the_shared_originals() -> None:
    """tests/manifests/schemas holds unchanged upstream files; when the shared folder they
    came from sits beside the checkout, they must still be identical."""
    shared = ROOT.parent / "shared" / "schemas"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not here (a clean clone uses the copies)")
    for copy_path in SCHEMAS.iterdir():
        original = shared / copy_path.name
        assert original.is_file(), f"{copy_path.name} has no original in {shared}"
        assert copy_path.read_bytes() == original.read_bytes(), copy_path.name


def test_prometheus_operator_objects_are_checked_against_their_crds() -> None:
    docs = overlay("gpu-cloud")
    monitoring = [d for d in docs if group(d) == "monitoring.coreos.com"]
    assert {d["kind"] for d in monitoring} == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    for doc in monitoring:
        validate_custom(doc)


@pytest.mark.parametrize(
    ("kind", "mangle"),
    [
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(intervall="30s")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(honourLabels=True)),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(honorLabels="yes")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(fore="1h")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr")),
    ],
    ids=[
        "podmonitor-field",
        "servicemonitor-field",
        "servicemonitor-type",
        "rule-field",
        "rule-no-expr",
    ],
)
def test_the_prometheus_operator_check_rejects_bad_objects(kind: str, mangle: object) -> None:
    (doc,) = find(overlay("gpu-cloud"), kind)
    bad = copy.deepcopy(doc)
    mangle(bad)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(bad)
