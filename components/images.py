"""Container images of the pipeline steps.

Logical names, the same ones skaffold builds and kustomize maps; a registry and tag can
be set when the pipeline is compiled (CTPIPE_IMAGE_REGISTRY, CTPIPE_IMAGE_TAG).
"""

from __future__ import annotations

import os

from ctpipe import __version__

REGISTRY_ENV = "CTPIPE_IMAGE_REGISTRY"
TAG_ENV = "CTPIPE_IMAGE_TAG"


def image(role: str) -> str:
    registry = os.environ.get(REGISTRY_ENV, "").rstrip("/")
    tag = os.environ.get(TAG_ENV) or __version__
    name = f"ctpipe/{role}"
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"


BASE_IMAGE = image("base")
