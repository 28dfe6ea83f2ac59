"""Container images of the pipeline steps.

Logical names, the same ones skaffold builds (skaffold.yaml) and kustomize maps
(manifests/*/kustomization.yaml `images:`). A registry and tag can be set when the pipeline
is compiled: arguments to `image()`, or else CTPIPE_IMAGE_REGISTRY and CTPIPE_IMAGE_TAG.
"""

from __future__ import annotations

import os

from ctpipe import __version__

REGISTRY_ENV = "CTPIPE_IMAGE_REGISTRY"
TAG_ENV = "CTPIPE_IMAGE_TAG"

BASE = "base"  # every step, and the drift monitor
TRAINER_GPU = "trainer-gpu"  # the train step of the GPU profile
SERVING = "serving"  # the KServe predictor
ROLES = (BASE, TRAINER_GPU, SERVING)


def logical_name(role: str) -> str:
    """`ctpipe/<role>`: the image name without registry or tag."""
    if role not in ROLES:
        raise ValueError(f"unknown image role {role!r}; expected one of {', '.join(ROLES)}")
    return f"ctpipe/{role}"


def image(role: str, registry: str | None = None, tag: str | None = None) -> str:
    """The full image reference; registry and tag default to the environment, then to none
    and the ctpipe version."""
    registry = (registry if registry is not None else os.environ.get(REGISTRY_ENV, "")).rstrip("/")
    tag = tag or os.environ.get(TAG_ENV) or __version__
    name = logical_name(role)
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"


BASE_IMAGE = image(BASE)


def role_of(reference: str) -> str | None:
    """The role of an image reference to one of our images (any registry or tag), else None."""
    name = reference.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for role in ROLES:
        logical = logical_name(role)
        if name == logical or name.endswith(f"/{logical}"):
            return role
    return None
