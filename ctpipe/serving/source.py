"""Where the predictor's model comes from, and how it is loaded safely.

    models:/<name>@<alias>      a registry alias (champion): watched, and hot-reloaded
    models:/<name>/<version>    one registered version
    runs:/<run_id>/model        a run's model
    /path/to/model, s3://...    an MLflow model directory (KServe's storageUri lands in
                                /mnt/models); needs --model-sha256, or --allow-unverified

Every model is a pickle, so none is loaded before its SHA-256 matches one that is
trusted: the signed blessing of a registry version (see ctpipe.blessing), or the
--model-sha256 that the deploy step pinned after checking that blessing. A run's tags are
not trusted. A loaded model must also predict its stored input example before it serves.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctpipe import blessing, registry, storage
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
            # A run's tags are as writable as the model: only an explicit --model-sha256 counts.
            if self.sha256 is None and not self.allow_unverified:
                raise _no_checksum(self.uri)
            self._client()
            import mlflow.artifacts

            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.uri))
            return self._from_dir(local, self.sha256, run_id=match["run"], label=self.uri)
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
        expected = registry.blessed_sha256(ref)  # before the download: unblessed, never fetched
        local = registry.download_model(ref)
        label = f"{ref.name} v{ref.version}"
        model = registry.load_model_dir(local, expected, label)
        return _loaded(model, ref.version, Signature.of(local), local, label)

    def _from_dir(
        self, path: Path, expected: str | None, label: str, run_id: str | None = None
    ) -> Loaded:
        if expected is None:
            if not self.allow_unverified:
                raise _no_checksum(label)
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(str(path))
        else:
            model = registry.load_model_dir(path, expected, label)
        version = self.version or (run_id[:8] if run_id else _version_of(path))
        return _loaded(model, version, Signature.of(path), path, label)


def _no_checksum(label: str) -> RegistryError:
    return RegistryError(
        f"{label}: no SHA-256 to check the model against; pass --model-sha256 (the SHA-256 in the "
        f"version's signed {blessing.TAG_RECORD} record), or --allow-unverified to load it anyway"
    )


def _version_of(path: Path) -> str:
    """A local directory has no registry version; its content hash stands in for one."""
    pickle = path / registry.PICKLE_FILE
    return "sha-" + registry.file_sha256(pickle)[:12] if pickle.exists() else "local"


def _loaded(model: Any, version: str, signature: Signature, path: Path, label: str) -> Loaded:
    found = getattr(model, "classes_", None)
    classes = list(found) if found is not None else []
    task = "classification" if found is not None else "regression"
    device = _place(model)
    check_input_example(model, path, signature, label)
    return Loaded(
        model,
        version,
        signature,
        task,
        tuple(c.item() if hasattr(c, "item") else c for c in classes),
        device,
    )


def check_input_example(model: Any, path: Path, signature: Signature, label: str) -> None:
    """The model must answer its own stored input example before it serves: a model that
    loads but cannot predict would otherwise fail every request while /ready says true."""
    try:
        example = read_input_example(path, signature, label)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{label}: its stored input example cannot be read ({exc})") from exc
    try:
        predictions = model.predict(example)
    except Exception as exc:
        raise RegistryError(
            f"{label}: the model failed on its own input example ({type(exc).__name__}: {exc}); "
            "refusing to serve it"
        ) from exc
    if len(predictions) != len(example):
        raise RegistryError(
            f"{label}: the model answered {len(predictions)} predictions for its {len(example)}-row "
            "input example; refusing to serve it"
        )


_NUMERIC = {"double", "float", "long", "integer"}


def read_input_example(path: Path, signature: Signature, label: str) -> Any:
    """The input example MLflow stored with the model (split-oriented JSON), typed by the
    signature. Read without MLflow, whose import costs the predictor seconds."""
    import json

    import pandas as pd

    info = registry.read_mlmodel(path, label).get("saved_input_example_info") or {}
    if info.get("type") != "dataframe" or info.get("pandas_orient", "split") != "split":
        raise RegistryError(
            f"{label}: the model has no stored dataframe input example to check it against "
            f"(found {info or 'none'}); refusing to serve it"
        )
    raw = json.loads((path / str(info.get("artifact_path") or "input_example.json")).read_text())
    frame = pd.DataFrame(raw["data"], columns=raw["columns"])
    for name, kind in signature.columns:
        if kind in _NUMERIC and name in frame:
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
    return frame


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
