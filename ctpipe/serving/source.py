"""Where the predictor's model comes from, and how it is loaded safely.

    models:/<name>@<alias>      a registry alias (champion): watched, and hot-reloaded
    models:/<name>/<version>    one registered version
    runs:/<run_id>/model        a run's model
    /path/to/model, s3://...    an MLflow model directory (KServe's storageUri lands in
                                /mnt/models); needs --model-sha256, or --allow-unverified

Every model is a pickle, so none is loaded before its SHA-256 matches the one recorded
at registration.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctpipe import registry, storage
from ctpipe.errors import ConfigError, RegistryError

_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w.-]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUN = re.compile(r"^runs:/(?P<run>[0-9a-f]+)/(?P<path>.+)$")
THREADS_ENV = "CTPIPE_SERVING_THREADS"


@dataclass(frozen=True)
class Signature:
    """The model's input columns, from its MLflow signature: (name, MLflow type)."""

    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @classmethod
    def of(cls, model_dir: Path) -> Signature:
        import json

        signature = registry.read_mlmodel(model_dir, str(model_dir)).get("signature") or {}
        inputs = signature.get("inputs")
        if not inputs:
            raise RegistryError(
                f"{model_dir}: the model has no input signature to validate requests against"
            )
        # MLflow stores a column signature as a JSON list of {"name", "type", ...}.
        specs = json.loads(inputs) if isinstance(inputs, str) else inputs
        if not isinstance(specs, list) or not all(
            isinstance(s, dict) and "name" in s and "type" in s for s in specs
        ):
            raise RegistryError(
                f"{model_dir}: the signature's inputs are not named columns (a tensor signature?)"
            )
        return cls(tuple((str(spec["name"]), str(spec["type"])) for spec in specs))


@dataclass(frozen=True)
class Loaded:
    """A model ready to serve."""

    model: Any
    version: str
    signature: Signature
    task: str  # classification | regression
    classes: tuple[Any, ...]
    device: str = "cpu"


@dataclass(frozen=True)
class ModelSource:
    uri: str
    tracking_uri: str | None = None
    sha256: str | None = None
    allow_unverified: bool = False
    version: str | None = None  # what a directory source reports as its version

    @property
    def alias(self) -> tuple[str, str] | None:
        match = _ALIAS.match(self.uri)
        return (match["name"], match["alias"]) if match else None

    def _client(self) -> Any:
        if self.tracking_uri is None:
            raise ConfigError(
                f"--model-uri {self.uri}: set MLFLOW_TRACKING_URI (or --config) to reach the registry"
            )
        return registry.client_for(self.tracking_uri)

    def current_version(self) -> str | None:
        """The version the alias points at now (None when this source is not an alias)."""
        if self.alias is None:
            return None
        name, alias = self.alias
        ref = registry.alias_ref(self._client(), name, alias)
        return ref.version if ref else None

    def load(self) -> Loaded:
        if match := _ALIAS.match(self.uri):
            ref = registry.alias_ref(self._client(), match["name"], match["alias"])
            if ref is None:
                raise RegistryError(
                    f"{self.uri}: alias {match['alias']!r} of {match['name']!r} is not set"
                )
            return self._from_ref(ref)
        if match := _VERSION.match(self.uri):
            return self._from_ref(
                registry.version_ref(self._client(), match["name"], match["version"])
            )
        if match := _RUN.match(self.uri):
            run = self._client().get_run(match["run"])
            expected = run.data.tags.get(registry.TAG_MODEL_SHA256) or self.sha256
            import mlflow.artifacts

            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.uri))
            return self._from_dir(local, expected, run_id=match["run"], label=self.uri)
        if storage.is_s3(self.uri):
            return self._from_dir(_download(self.uri), self.sha256, label=self.uri)
        path = Path(self.uri)
        if not path.is_dir():
            raise ConfigError(
                f"--model-uri {self.uri}: expected models:/<name>@<alias>, models:/<name>/<version>, "
                "runs:/<run_id>/<path>, an s3:// prefix or a local MLflow model directory"
            )
        return self._from_dir(path, self.sha256, label=self.uri)

    def _from_ref(self, ref: registry.ModelRef) -> Loaded:
        local = registry.download_model(ref)
        model = registry.load_model_dir(
            local, registry.expected_sha256(ref), f"{ref.name} v{ref.version}"
        )
        return _loaded(model, ref.version, Signature.of(local))

    def _from_dir(
        self, path: Path, expected: str | None, label: str, run_id: str | None = None
    ) -> Loaded:
        if expected is None:
            if not self.allow_unverified:
                raise RegistryError(
                    f"{label}: no SHA-256 to check the model against; pass --model-sha256 (the model "
                    f"version's {registry.TAG_MODEL_SHA256} tag), or --allow-unverified to load it anyway"
                )
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(str(path))
        else:
            model = registry.load_model_dir(path, expected, label)
        version = self.version or (run_id[:8] if run_id else _version_of(path))
        return _loaded(model, version, Signature.of(path))


def _version_of(path: Path) -> str:
    """A local directory has no registry version; its content hash stands in for one."""
    pickle = path / registry.PICKLE_FILE
    return "sha-" + registry.file_sha256(pickle)[:12] if pickle.exists() else "local"


def _loaded(model: Any, version: str, signature: Signature) -> Loaded:
    found = getattr(model, "classes_", None)
    classes = list(found) if found is not None else []
    task = "classification" if found is not None else "regression"
    device = _place(model)
    return Loaded(
        model,
        version,
        signature,
        task,
        tuple(c.item() if hasattr(c, "item") else c for c in classes),
        device,
    )


def _place(model: Any) -> str:
    """Put a torch estimator on the GPU when there is one; everything else stays on CPU."""
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    to_device = getattr(estimator, "to_device", None)
    if to_device is None:
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    # torch ignores the pod's CPU limit and starts a thread per core; requests are small.
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    to_device(device)
    return device


def _download(uri: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="ctpipe-model-"))
    prefix = uri.rstrip("/") + "/"
    files = storage.list_files(uri)
    if not files:
        raise RegistryError(f"{uri}: no model files under this prefix")
    for file in files:
        relative = file[len(prefix) :] if file.startswith(prefix) else file.rsplit("/", 1)[-1]
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(storage.read_bytes(file))
    return target
