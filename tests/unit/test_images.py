"""Image references: logical names, with a registry and tag chosen at compile time."""

from __future__ import annotations

import pytest

from ctpipe import __version__
from ctpipe.components import images


def test_image_defaults_to_the_logical_name_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.REGISTRY_ENV, raising=False)
    monkeypatch.delenv(images.TAG_ENV, raising=False)
    assert images.image("base") == f"ctpipe/base:{__version__}"
    monkeypatch.setenv(images.REGISTRY_ENV, "ghcr.io/acme/")
    monkeypatch.setenv(images.TAG_ENV, "sha-1")
    assert images.image("serving") == "ghcr.io/acme/ctpipe/serving:sha-1"
    # Arguments win over the environment; an empty registry means none.
    assert images.image("trainer-gpu", "", "2.0") == "ctpipe/trainer-gpu:2.0"
    with pytest.raises(ValueError, match="unknown image role 'gpu'"):
        images.image("gpu")


@pytest.mark.parametrize(
    ("reference", "role"),
    [
        ("ctpipe/base:0.1.0", "base"),
        ("localhost:5000/ctpipe/trainer-gpu:1", "trainer-gpu"),
        ("ghcr.io/acme/ctpipe/serving@sha256:" + "0" * 64, "serving"),
        ("ctpipe/base", "base"),
        ("python:3.11-slim-bookworm", None),
        ("acme/ctpipe-base:1", None),
        ("ctpipe/basement:1", None),
    ],
)
def test_role_of(reference: str, role: str | None) -> None:
    assert images.role_of(reference) == role
