"""MLflow: where models are logged, registered, and named `champion`.

The `champion` alias marks the model proven in production; `previous` keeps the one it
replaced, for rollback; `challenger` marks a blessed version on its way there (shadow,
then canary: ctpipe.rollout). Every move goes through `move_alias`, which first writes an
audit record (who, why, with which evidence) under <state_dir>/monitor/<model>/aliases/
and then tags the version. `promote` refuses when the champion changed since the
challenger was evaluated against it.

Models are stored with cloudpickle, and the SHA-256 of the pickle is recorded on the
model version at registration and checked before every load. (MLflow's skops format is
no safer: its trusted-type list is read from the model's own files. It also imports
every scikit-learn module, torch included, which costs seconds in each step.)

A model directory also carries, under code/, the ctpipe modules its pickle refers to
(ctpipe.features, and the torch MLP's modules for that family), so plain
`mlflow.pyfunc.load_model` and `mlflow models serve` work where ctpipe is not installed.
ctpipe's own loader never imports them: it unpickles with the installed ctpipe. The
blessing signs the pickle's SHA-256 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctpipe import storage
from ctpipe.config import Config
from ctpipe.errors import RegistryError

if TYPE_CHECKING:
    from ctpipe.data.schema import Schema
    from ctpipe.evaluation import Evaluation
    from ctpipe.training.search import TrainResult

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
TAG_ALIAS = "ctpipe.alias."  # + alias: JSON of the latest move onto this version
MODEL_ARTIFACT = "model"
TRACKING_ENV = "MLFLOW_TRACKING_URI"

# Tags on runs and model versions (lineage).
TAG_DATASET_URI = "ctpipe.dataset.uri"
TAG_DATASET_HASH = "ctpipe.dataset.hash"
TAG_DATASET_ROWS = "ctpipe.dataset.rows"
TAG_KFP_RUN_ID = "ctpipe.kfp.run_id"
TAG_KFP_RUN_NAME = "ctpipe.kfp.run_name"
TAG_SCHEMA_VERSION = "ctpipe.schema.version"
TAG_REASON = "ctpipe.reason"
TAG_CANDIDATE = "ctpipe.candidate"
TAG_MODEL_SHA256 = "ctpipe.model.sha256"
TAG_TEST_METRICS = "ctpipe.test_metrics"  # JSON: every test-slice metric of the model
TAG_CLASSES = "ctpipe.model.classes"  # JSON list, in predict_proba column order
TAG_DATA_TIME_MAX = "ctpipe.dataset.time_max"  # newest row the model was trained on (ISO 8601)
TAG_SCHEMA_CHANGES = "ctpipe.schema.changes"  # JSON: {"from": 3, "to": 4, "changes": [...]}
# JSON: the rows the model learned from (rows, start, end, slices, window) and the final
# refit's record (applied, the agreement measure, its value and tolerance, why).
TAG_FIT = "ctpipe.fit"
_VERSION_TAGS = (
    TAG_DATASET_HASH,
    TAG_KFP_RUN_ID,
    TAG_SCHEMA_VERSION,
    TAG_SCHEMA_CHANGES,
    TAG_REASON,
    TAG_DATA_TIME_MAX,
    TAG_TEST_METRICS,
    TAG_CLASSES,
    TAG_FIT,
)
PICKLE_FILE = "model.pkl"  # inside an MLflow sklearn model directory
# Inside an MLflow model directory: the ctpipe modules its pickle needs (MLmodel's `code`),
# so that mlflow.pyfunc.load_model works where ctpipe is not installed.
CODE_DIR = "code"
PACKAGE = "ctpipe"
# Input tags on a run's dataset input (mlflow.data): what the digest (36 characters at
# most in MLflow's store) cannot hold, and the time window the data covers.
INPUT_TAG_HASH = "ctpipe.content_hash"
INPUT_TAG_ROWS = "ctpipe.rows"
INPUT_TAG_TIME_MIN = "ctpipe.time_min"
INPUT_TAG_TIME_MAX = "ctpipe.time_max"
INPUT_TAG_WINDOW = "ctpipe.fit_window"  # JSON: the rows the model learned from (TAG_FIT)


def tracking_uri(state_dir: str) -> str:
    """MLFLOW_TRACKING_URI, or a sqlite database under a local state_dir."""
    uri = os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    if storage.is_s3(state_dir):
        raise RegistryError(
            f"{TRACKING_ENV} is not set and state_dir ({state_dir}) is not local: "
            "point MLFLOW_TRACKING_URI at your MLflow server"
        )
    root = Path(state_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_location(state_dir: str) -> str | None:
    # A tracking server decides where artifacts go; a local sqlite store needs to be told,
    # or MLflow writes ./mlruns wherever the process happens to run.
    if os.environ.get(TRACKING_ENV) or storage.is_s3(state_dir):
        return None
    return (Path(state_dir).resolve() / "mlartifacts").as_uri()


def client(config: Config) -> Any:
    """An MlflowClient for this config's store (MLFLOW_TRACKING_URI or sqlite in state_dir)."""
    return client_for(tracking_uri(config.state_dir))


def client_for(uri: str) -> Any:
    """An MlflowClient for a tracking URI; also points MLflow's fluent API at it."""
    # Telemetry would try to reach the internet from every step; pods often cannot.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    # MLflow's own S3 client reads MLFLOW_S3_ENDPOINT_URL; follow the one endpoint setting.
    endpoint = storage.s3_endpoint()
    if endpoint and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    # set_tracking_uri (and set_registry_uri) also export environment variables, which
    # would then override the state_dir of every later config in this process and its
    # subprocesses.
    exported = {name: os.environ.get(name) for name in (TRACKING_ENV, "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client: Any, config: Config) -> str:
    found = mlflow_client.get_experiment_by_name(config.model_name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            mlflow_client.create_experiment(
                config.model_name, artifact_location=_artifact_location(config.state_dir)
            )
        )
    except Exception:
        # Another run created it between our look and our create.
        found = mlflow_client.get_experiment_by_name(config.model_name)
        if found is None:
            raise
        return str(found.experiment_id)


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    created_at: float = 0.0  # registration time, seconds since the epoch

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def get_alias(config: Config, alias: str, mlflow_client: Any = None) -> ModelRef | None:
    """The model version an alias points at, or None when it is not set."""
    return alias_ref(mlflow_client or client(config), config.model_name, alias)


def alias_ref(mlflow_client: Any, name: str, alias: str) -> ModelRef | None:
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise RegistryError(
            f"MLflow: cannot read alias {alias!r} of {name!r}: {exc.message}"
        ) from exc
    return _ref(name, version)


def version_ref(mlflow_client: Any, name: str, version: str) -> ModelRef:
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"MLflow: no version {version} of {name!r} ({exc.message})") from exc
    return _ref(name, found)


def _ref(name: str, version: Any) -> ModelRef:
    return ModelRef(
        name,
        str(version.version),
        version.run_id,
        version.source,
        dict(version.tags or {}),
        (version.creation_timestamp or 0) / 1000.0,
    )


def champion(config: Config, mlflow_client: Any = None) -> ModelRef | None:
    return get_alias(config, CHAMPION, mlflow_client)


def load_model(ref: ModelRef) -> Any:
    """Download a model version, verify its blessing and checksum, and load it."""
    expected = blessed_sha256(ref)  # before any download: no blessing, no load
    return load_model_dir(download_model(ref), expected, f"{ref.name} v{ref.version}")


def blessed_sha256(ref: ModelRef) -> str:
    """The pickle's SHA-256 as the version's signed blessing states it.

    The plain TAG_MODEL_SHA256 tag is not trusted for this: whoever can write a tag can
    write both. Raises UnblessedModel when the blessing is missing, forged or copied."""
    from ctpipe import blessing

    return blessing.verify(ref.tags, ref.name, ref.version).sha256


def download_model(ref: ModelRef) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri))


def read_mlmodel(path: Path, label: str) -> dict[str, Any]:
    """An MLflow model directory's MLmodel file, read as YAML.

    Reading it directly keeps MLflow's import (seconds) out of the predictor and out of
    every step that only loads a model."""
    import yaml

    mlmodel = Path(path) / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{label}: {mlmodel} does not exist; not an MLflow model directory")
    found = yaml.safe_load(mlmodel.read_text())
    if not isinstance(found, dict):
        raise RegistryError(f"{label}: {mlmodel} is not an MLmodel file")
    return found


def load_model_dir(path: Path, expected_sha256: str, label: str) -> Any:
    """Load an MLflow sklearn model directory after checking its pickle's SHA-256."""
    import cloudpickle

    flavor = read_mlmodel(path, label).get("flavors", {}).get("sklearn") or {}
    if flavor.get("serialization_format") != "cloudpickle":
        raise RegistryError(
            f"{label}: expected an MLflow sklearn model stored with cloudpickle (how ctpipe registers "
            f"models), found serialization_format {flavor.get('serialization_format')!r}"
        )
    pickle_path = Path(path) / str(flavor.get("pickled_model") or PICKLE_FILE)
    if not pickle_path.is_file():
        raise RegistryError(
            f"{label}: {pickle_path} does not exist; not an MLflow sklearn model directory"
        )
    actual = file_sha256(pickle_path)
    if actual != expected_sha256:
        raise RegistryError(
            f"{label}: {pickle_path.name} has SHA-256 {actual[:16]}…, but {expected_sha256[:16]}… "
            "was recorded at registration; the artifact was changed. Refusing to load it."
        )
    # What mlflow.sklearn.load_model does for this format, once the checksum matched.
    with open(pickle_path, "rb") as handle:
        return cloudpickle.load(handle)


def download_reference(ref: ModelRef) -> Any:
    """The champion's training snapshot (see ctpipe.drift.profile), downloaded to a temp dir."""
    import mlflow.artifacts

    from ctpipe.drift import profile as reference

    if not ref.run_id:
        raise RegistryError(f"{ref.name} v{ref.version} has no MLflow run, so no reference data")
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=ref.run_id, artifact_path=reference.ARTIFACT_DIR
            )
        )
    except Exception as exc:
        raise RegistryError(
            f"{ref.name} v{ref.version} has no reference data "
            f"({reference.ARTIFACT_DIR}/ in run {ref.run_id}): {exc}"
        ) from exc
    return reference.ReferenceFiles(local / reference.PROFILE_FILE, local / reference.SAMPLE_FILE)


def log_monitor_report(config: Config, ref: ModelRef, html: str, name: str) -> str:
    """Attach a monitor's drift report to the champion's MLflow run; returns its artifact URI."""
    if not ref.run_id:
        raise RegistryError(f"{ref.name} v{ref.version} has no MLflow run to attach the report to")
    mlflow_client = client(config)
    mlflow_client.log_text(ref.run_id, html, f"monitor/{name}")
    run = mlflow_client.get_run(ref.run_id)
    return f"{run.info.artifact_uri}/monitor/{name}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    previous_version: str | None
    promoted: bool
    # Where the predictor finds this version: what deploy renders without asking MLflow.
    storage_uri: str | None  # None: KServe cannot fetch it; the predictor asks MLflow
    sha256: str

    @property
    def alias(self) -> str:
        return CHAMPION if self.promoted else CHALLENGER

    def describe(self) -> str:
        if not self.promoted:
            return (
                f"registered {self.name} v{self.version}; alias {CHALLENGER!r} -> v{self.version} "
                f"(champion v{self.previous_version} serves until the rollout promotes it)"
            )
        before = (
            f" (previous: v{self.previous_version})"
            if self.previous_version
            else " (first champion)"
        )
        return (
            f"registered {self.name} v{self.version}; alias {CHAMPION!r} -> v{self.version}{before}"
        )


@dataclass(frozen=True)
class SavedModel:
    """A model written as an MLflow sklearn directory: what infra validation serves and
    register logs, byte for byte."""

    path: str
    sha256: str  # of the pickle
    classes: tuple[Any, ...]  # predict_proba's column order; () for a regressor
    train_device: str | None  # a torch MLP's training device, else None

    def metadata(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "classes": json.dumps(list(self.classes)),
            "train_device": self.train_device or "",
        }

    @classmethod
    def from_metadata(cls, path: str, meta: dict[str, Any]) -> SavedModel:
        return cls(
            path,
            str(meta["sha256"]),
            tuple(json.loads(meta["classes"])),
            meta.get("train_device") or None,
        )


def save_model_dir(model: Any, example: Any, target: str | Path) -> SavedModel:
    """Write `model` as the registry stores it: MLflow sklearn format, cloudpickle, with
    its signature and `example` as the input example."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from ctpipe.training.torch_mlp import train_device

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    modules, imports = model_code(model)
    with tempfile.TemporaryDirectory() as staging:
        package = stage_code(modules, Path(staging))
        mlflow.sklearn.save_model(
            model,
            str(target),
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            serialization_format="cloudpickle",
            # Listing requirements skips MLflow's slow import-tracing inference.
            pip_requirements=requirements(torch="torch" in imports),
            # code/ctpipe/...: mlflow.pyfunc puts code/ on sys.path before unpickling.
            code_paths=[str(package)] if package else None,
        )
    classes = getattr(model, "classes_", None)
    return SavedModel(
        str(target),
        file_sha256(Path(target) / PICKLE_FILE),
        tuple(c.item() if hasattr(c, "item") else c for c in classes)
        if classes is not None
        else (),
        train_device(model),
    )


def model_code(model: Any) -> tuple[list[str], set[str]]:
    """The ctpipe modules `model`'s pickle needs to load and predict, and the top-level
    modules they import.

    Those are the modules the pickle names (cloudpickle refers to importable functions
    and classes by module), then every ctpipe module they import, at the top or inside a
    function (torch_mlp imports torch_net when it predicts), except under TYPE_CHECKING.
    """
    import cloudpickle

    named = {m for m in _pickled_modules(cloudpickle.dumps(model)) if _is_ctpipe(m)}
    needed: set[str] = set()
    imports: set[str] = set()
    pending = sorted(named)
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        for imported in _imports_of(name):
            imports.add(imported.split(".")[0])
            if _is_ctpipe(imported) and imported not in needed:
                pending.append(imported)
    return sorted(needed), imports


def stage_code(modules: list[str], root: Path) -> Path | None:
    """Write `modules` as a package tree under root (root/ctpipe/...), each package that is
    not itself needed as an empty stub, so `import ctpipe.features` works from root and
    nothing else of ctpipe comes along. Returns root/ctpipe, or None when nothing is needed."""
    import importlib.util

    if not modules:
        return None
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise RegistryError(f"the model needs {name}, which has no Python source to ship")
        parts = name.split(".")
        is_package = spec.submodule_search_locations is not None
        target = (
            root.joinpath(*parts, "__init__.py")
            if is_package
            else root.joinpath(*parts[:-1], parts[-1] + ".py")
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.origin, target)
        # Every package above it: a stub unless the package's own __init__ is needed.
        for depth in range(1, len(parts)):
            stub = root.joinpath(*parts[:depth], "__init__.py")
            if not stub.exists():
                stub.write_text(
                    f'"""{".".join(parts[:depth])}: only the modules an MLflow model needs, '
                    'shipped with it by ctpipe.registry."""\n'
                )
    return root / PACKAGE


def _is_ctpipe(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _pickled_modules(payload: bytes) -> set[str]:
    """Every module a pickle imports from: GLOBAL's module, and STACK_GLOBAL's (the string
    pushed, or fetched from the memo, two pushes before it)."""
    import pickletools

    found: set[str] = set()
    pushed: list[Any] = []  # what each op put on the stack, as far as strings go
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(payload):
        name = opcode.name
        if name == "GLOBAL":
            found.add(str(arg).split(" ")[0])
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str):
                found.add(pushed[-2])
            pushed.append(None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(arg))] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(str(arg))))
        elif name != "FRAME":
            pushed.append(arg if isinstance(arg, str) and "UNICODE" in name else None)
    return found


def _imports_of(module: str) -> set[str]:
    """The modules `module`'s source imports, anywhere but under `if TYPE_CHECKING:`."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return set()
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    package = module if spec.submodule_search_locations is not None else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from ctpipe.training import torch_net` names a module; `from x import y`
                # a name defined in x.
                found.add(submodule if _is_ctpipe(base) and _module_exists(submodule) else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# What Model.log assigns to a logged model; everything else comes from the saved directory.
_LOGGED_IDENTITY = frozenset(
    {"artifact_path", "run_id", "model_uuid", "model_id", "utc_time_created"}
)


def _saved_dir_flavor(source: str) -> Any:
    """A `flavor` for mlflow.models.Model.log whose save_model copies a directory that
    save_model_dir wrote, keeping the identity (run, model id) that Model.log assigns.

    Logging the directory rather than the model object registers exactly the bytes that
    were served, and keeps scikit-learn's import (seconds) out of the register step.
    """
    import types

    from mlflow.models import Model

    def save_model(path: str, mlflow_model: Any, **_: Any) -> None:
        shutil.copytree(source, path)
        mlmodel = os.path.join(path, "MLmodel")
        for name, value in vars(Model.load(mlmodel)).items():
            if name not in _LOGGED_IDENTITY:
                setattr(mlflow_model, name, value)
        mlflow_model.save(mlmodel)

    # Model.log records flavor.__name__ on the logged model, as for mlflow.sklearn itself.
    return types.SimpleNamespace(__name__="mlflow.sklearn", save_model=save_model)


def log_and_register(
    config: Config,
    saved: SavedModel,
    *,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    texts: dict[str, str],
    files: dict[str, str] | None = None,
    evidence: dict[str, Any] | None = None,
    dataset: DatasetInput | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    """Log a run with the saved model directory and register a new version, signing its
    blessing (see ctpipe.blessing) with `evidence`, the gate's figures. `dataset` is logged
    as the run's training input (mlflow.data); `description` goes on the version. Returns
    (run_id, version).

    No alias moves here: a registered version is inert until `promote`.
    """
    import mlflow
    import mlflow.artifacts
    from mlflow.models import Model

    from ctpipe import blessing

    blessing.key()  # no key, no version: an unsigned version could never be served

    mlflow_client = client(config)
    experiment = experiment_id(mlflow_client, config)
    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
        mlflow.set_tags(tags)
        if dataset is not None:
            dataset.log()
        for name, text in texts.items():
            mlflow.log_text(text, name)
        if files:
            with tempfile.TemporaryDirectory() as staging:
                # log_artifact keeps local file names; stage each file under its final path.
                for name, local in files.items():
                    target = Path(staging, name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(local, target)
                mlflow.log_artifacts(staging)
        info = Model.log(
            artifact_path=None,
            name=MODEL_ARTIFACT,
            flavor=_saved_dir_flavor(saved.path),
            registered_model_name=config.model_name,
            # MLflow's check loads the model and predicts on the example; the directory
            # was already served and checked over REST (infra validation).
            validate_serving_input=False,
        )
        version = str(info.registered_model_version)
        # Hash what the registry holds (not our local copy): that is what loaders get.
        stored = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{config.model_name}/{version}"
            )
        )
        checksum = file_sha256(stored / PICKLE_FILE)
        if checksum != saved.sha256:
            raise RegistryError(
                f"{config.model_name} v{version}: the stored {PICKLE_FILE} has SHA-256 {checksum[:16]}…, "
                f"but the saved model had {saved.sha256[:16]}…; the copy into the registry changed it"
            )
        mlflow.set_tag(TAG_MODEL_SHA256, checksum)
    version_tags = {k: v for k, v in tags.items() if k in _VERSION_TAGS}
    signed = blessing.sign(config.model_name, version, checksum, evidence or {})
    for key, value in {**version_tags, TAG_MODEL_SHA256: checksum, **signed}.items():
        mlflow_client.set_model_version_tag(config.model_name, version, key, value)
    if description:
        mlflow_client.update_model_version(
            config.model_name, version, description=description[:5000]
        )
    return run.info.run_id, version


def fit_record(ref: ModelRef) -> dict[str, Any]:
    """What a registered version learned from (TAG_FIT: rows, start, end; {} if unrecorded)."""
    try:
        record = json.loads(ref.tags.get(TAG_FIT) or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class DatasetInput:
    """The data a run trained on, as an MLflow dataset input (run.inputs.dataset_inputs):
    where it came from, its content hash, and the time window it covers."""

    source: str  # ingest's source URI (a path or s3://…)
    content_hash: str  # ingest.content_hash: "sha256:<hex>", of the data itself
    rows: int | None = None
    time_min: str | None = None  # oldest and newest row (ISO 8601)
    time_max: str | None = None
    window: dict[str, Any] | None = None  # the rows the model learned from (TAG_FIT's rows)
    name: str = "training-data"
    context: str = "training"

    @classmethod
    def from_metadata(
        cls, dataset: dict[str, Any], fit: dict[str, Any] | None = None
    ) -> DatasetInput:
        """From ingest's metadata (IngestResult.metadata) and the fit record (TAG_FIT)."""
        fit = fit or {}
        window: dict[str, Any] = {k: fit[k] for k in ("rows", "start", "end", "window") if k in fit}
        return cls(
            source=str(dataset.get("source") or ""),
            content_hash=str(dataset.get("content_hash") or ""),
            rows=int(dataset["rows"]) if dataset.get("rows") is not None else None,
            time_min=dataset.get("time_min") or None,
            time_max=dataset.get("time_max") or None,
            window=window or None,
        )

    @property
    def digest(self) -> str:
        # MLflow's store keeps 36 characters of a digest; the full hash is an input tag.
        return self.content_hash.removeprefix("sha256:")[:36] or "unknown"

    def input_tags(self) -> dict[str, str]:
        tags = {
            INPUT_TAG_HASH: self.content_hash,
            INPUT_TAG_ROWS: "" if self.rows is None else str(self.rows),
            INPUT_TAG_TIME_MIN: self.time_min or "",
            INPUT_TAG_TIME_MAX: self.time_max or "",
            INPUT_TAG_WINDOW: json.dumps(self.window, sort_keys=True) if self.window else "",
        }
        return {k: v for k, v in tags.items() if v}

    def mlflow_dataset(self) -> Any:
        import warnings

        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        try:
            with warnings.catch_warnings():
                # A local path matches several local source types; any of them will do.
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(self.source)
        except Exception:
            source = CodeDatasetSource({"uri": self.source})
        # MetaDataset defines `profile`; mypy misreads the abstract property it overrides.
        return MetaDataset(source, name=self.name, digest=self.digest)  # type: ignore[abstract]

    def log(self) -> None:
        """mlflow.log_input on the active run."""
        import mlflow

        mlflow.log_input(self.mlflow_dataset(), context=self.context, tags=self.input_tags())


@dataclass(frozen=True)
class Challenger:
    """A blessed challenger as the registry records it: the directory infra validation
    served, the gate's decision, and where it came from (data, schema, fit, run)."""

    saved: SavedModel
    trained: TrainResult  # the selection record: candidate and validation score
    evaluation: Evaluation  # the gate's decision; blessed
    schema: Schema  # as stored: the champion and its schema move together
    dataset: dict[str, Any]  # ingest's metadata (source, content_hash, rows, time_max)
    fit: dict[str, Any]  # what it learned from, and the final refit's record (TAG_FIT)
    kfp_run_id: str
    kfp_run_name: str
    reason: str

    def tags(self) -> dict[str, str]:
        schema, dataset, result = self.schema, self.dataset, self.evaluation
        return {
            TAG_DATASET_URI: str(dataset.get("source", "")),
            TAG_DATASET_HASH: str(dataset.get("content_hash", "")),
            TAG_DATASET_ROWS: str(dataset.get("rows", "")),
            TAG_DATA_TIME_MAX: str(dataset.get("time_max") or ""),
            TAG_KFP_RUN_ID: self.kfp_run_id,
            TAG_KFP_RUN_NAME: self.kfp_run_name,
            TAG_SCHEMA_VERSION: str(schema.version),
            TAG_SCHEMA_CHANGES: json.dumps(
                {
                    "from": schema.parent_version,
                    "to": schema.version,
                    "changes": list(schema.changes),
                }
                if schema.changes
                else {}
            ),
            TAG_REASON: self.reason,
            TAG_CANDIDATE: self.trained.candidate.id,
            TAG_TEST_METRICS: json.dumps({k: round(v, 6) for k, v in result.metrics.items()}),
            TAG_CLASSES: json.dumps(list(self.saved.classes)),
            TAG_FIT: json.dumps(self.fit, sort_keys=True),
        }

    def metrics(self) -> dict[str, float]:
        metrics = {f"test_{k}": v for k, v in self.evaluation.metrics.items()}
        metrics[f"validation_{self.trained.metric}"] = self.trained.score
        metrics.update(self.evaluation.gate_figures())
        return metrics

    def params(self) -> dict[str, Any]:
        params = {"family": self.trained.candidate.family, **self.trained.candidate.params}
        # The device it trained on, not the "auto" asked for.
        if self.saved.train_device is not None:
            params["device"] = self.saved.train_device
        return params

    def evidence(self) -> dict[str, Any]:
        """What the blessing signs: the gate's figures and the run that decided."""
        return {**self.evaluation.evidence(), "kfp_run_id": self.kfp_run_id, "reason": self.reason}

    def dataset_input(self) -> DatasetInput:
        return DatasetInput.from_metadata(self.dataset, self.fit)

    def description(self, promotion: str | None = None) -> str:
        """The model version's description (Markdown): what it is, what it scored, why the
        gate blessed it, where it came from, and `promotion`, what became of it."""
        result, candidate, dataset = self.evaluation, self.trained.candidate, self.dataset
        comparison = result.decision.comparison
        run = self.kfp_run_name or "(no name)"
        if self.kfp_run_id:
            run += f" (run id {self.kfp_run_id})"
        lines = [
            f"**{candidate.family}** model, candidate `{candidate.id}`, trained by KFP run "
            f"{run}; trigger: {self.reason or '(none recorded)'}.",
            "",
            f"- Test {result.metric}: {result.metrics[result.metric]:.4f} on "
            f"{result.rows:,} newest rows (validation {self.trained.metric} "
            f"{self.trained.score:.4f}).",
        ]
        if comparison is not None:
            pct = round(comparison.confidence * 100)
            lines.append(
                f"- Gate vs champion v{comparison.champion_version}: {comparison.metric} "
                f"{comparison.challenger:.4f} vs {comparison.champion:.4f}, improvement "
                f"{comparison.improvement:+.4f}, {pct}% interval "
                f"[{comparison.low:+.4f}, {comparison.high:+.4f}] "
                f"({comparison.samples} paired bootstrap resamples)."
            )
        elif result.champion_error:
            lines.append(
                f"- Gate: NOT compared with the champion ({result.champion_error}); "
                "blessed on the thresholds alone."
            )
        else:
            lines.append("- Gate: no champion to compare with (first champion).")
        lines += [f"  - {reason}" for reason in result.decision.reasons]
        source = dataset.get("source") or "(unknown source)"
        window = ""
        if dataset.get("time_min") or dataset.get("time_max"):
            window = f", {dataset.get('time_min') or '?'} to {dataset.get('time_max') or '?'}"
        lines.append(
            f"- Data: {dataset.get('rows', '?')} rows from {source}{window} "
            f"({str(dataset.get('content_hash', ''))[:19]}); schema v{self.schema.version}."
        )
        if promotion:
            lines.append(f"- {promotion}")
        return "\n".join(lines)


def register_challenger(
    config: Config,
    challenger: Challenger,
    *,
    profile: str,
    sample: str,
    expected_champion: str | None,
) -> tuple[str, ModelRef, str | None, bool]:
    """Log and register `challenger` with its training snapshot (`profile`, `sample`; see
    ctpipe.drift.profile), then name it: `challenger` under a progressive rollout (the
    rollout controller decides on live traffic), `champion` under an immediate one or when
    there is no champion yet (nothing to compare live traffic with). Nothing moves when the
    champion moved from `expected_champion` (see `promote`). Returns (run_id, the stored
    version, the champion it replaced or will be compared with, whether it is champion)."""
    from ctpipe.drift import profile as reference

    result = challenger.evaluation
    run_id, version = log_and_register(
        config,
        challenger.saved,
        run_name=challenger.kfp_run_name or f"ctpipe-{challenger.trained.candidate.id}",
        params=challenger.params(),
        metrics=challenger.metrics(),
        tags=challenger.tags(),
        texts={"schema.json": challenger.schema.to_json(), "evaluation.md": result.markdown()},
        files={
            f"{reference.ARTIFACT_DIR}/{reference.PROFILE_FILE}": profile,
            f"{reference.ARTIFACT_DIR}/{reference.SAMPLE_FILE}": sample,
        },
        evidence=challenger.evidence(),
        dataset=challenger.dataset_input(),
        description=challenger.description(),
    )
    mlflow_client = client(config)
    by = f"register (run {challenger.kfp_run_name or run_id})"
    evidence = {"gate": result.summary(), "reason": challenger.reason, "mlflow_run": run_id}
    progressive = config.deploy.rollout.strategy == "progressive"
    previous: str | None
    try:
        if progressive and expected_champion is not None:
            name_challenger(
                config, version, expected_champion, mlflow_client, by=by, evidence=evidence
            )
            previous, promoted = expected_champion, False
        else:
            why = "blessed by the gate" + (
                "; the first champion" if expected_champion is None else "; rollout: immediate"
            )
            previous = promote(
                config, version, expected_champion, mlflow_client, by=by, why=why, evidence=evidence
            )
            promoted = True
    except RegistryError as exc:
        _describe(mlflow_client, config, version, challenger.description(f"Not named: {exc}"))
        raise
    if not promoted:
        note = (
            f"Named {CHALLENGER!r}: champion v{previous} serves until the rollout (shadow, "
            "canary) promotes this version on live traffic."
        )
    elif previous:
        note = f"Promoted to {CHAMPION!r}, replacing v{previous} (now {PREVIOUS!r})."
    else:
        note = f"Promoted to {CHAMPION!r}: the first champion."
    _describe(mlflow_client, config, version, challenger.description(note))
    return run_id, version_ref(mlflow_client, config.model_name, version), previous, promoted


def _describe(mlflow_client: Any, config: Config, version: str, text: str) -> None:
    # MLflow keeps 5,000 characters of a description.
    mlflow_client.update_model_version(config.model_name, version, description=text[:5000])


# ------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class AliasMove:
    """One move of one alias: the audit record, also kept as a tag on the version."""

    model: str
    alias: str
    version: str | None  # None: the alias was removed
    before: str | None
    at: str  # ISO 8601
    by: str  # who or what moved it
    why: str
    evidence: dict[str, Any]
    record: str = ""  # where the record is


def audit_root(config: Config) -> str:
    return storage.join(config.state_dir, "monitor", config.model_name, "aliases")


def actor() -> str:
    """The person or process moving an alias, when no step names itself."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (a container's arbitrary uid)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def move_alias(
    config: Config,
    alias: str,
    version: str | None,
    mlflow_client: Any = None,
    *,
    by: str,
    why: str,
    evidence: dict[str, Any] | None = None,
    now: Any = None,
) -> AliasMove:
    """Point `alias` at `version` (None: remove it). The audit record is written first: a
    move that cannot be recorded does not happen."""
    from datetime import UTC, datetime

    mlflow_client = mlflow_client or client(config)
    now = now or datetime.now(UTC)
    current = get_alias(config, alias, mlflow_client)
    move = AliasMove(
        config.model_name,
        alias,
        version,
        current.version if current else None,
        now.isoformat(),
        by,
        why,
        dict(evidence or {}),
    )
    uri = storage.write_record(audit_root(config), move.__dict__, now)
    move = AliasMove(**{**move.__dict__, "record": uri})
    if version is None:
        if current is not None:
            mlflow_client.delete_registered_model_alias(config.model_name, alias)
    else:
        mlflow_client.set_registered_model_alias(config.model_name, alias, version)
    tagged = version or (current.version if current else None)
    if tagged is not None:
        text = json.dumps({k: v for k, v in move.__dict__.items() if k != "evidence"})
        mlflow_client.set_model_version_tag(
            config.model_name, tagged, f"{TAG_ALIAS}{alias}", text[:5000]
        )
    return move


def alias_history(config: Config) -> list[AliasMove]:
    """Every recorded alias move of the model, oldest first."""
    moves = []
    for uri in storage.list_files(audit_root(config), (".json",)):
        raw = json.loads(storage.read_bytes(uri))
        moves.append(AliasMove(**{**raw, "record": uri}))
    return moves


def name_challenger(
    config: Config,
    version: str,
    expected_champion: str | None,
    mlflow_client: Any = None,
    *,
    by: str,
    evidence: dict[str, Any] | None = None,
) -> None:
    """Point `challenger` at a blessed `version` that was compared with `expected_champion`;
    refuses (nothing moves) when the champion moved since."""
    mlflow_client = mlflow_client or client(config)
    blessed_sha256(version_ref(mlflow_client, config.model_name, version))
    _check_champion(config, version, expected_champion, mlflow_client, "named challenger")
    move_alias(
        config,
        CHALLENGER,
        version,
        mlflow_client,
        by=by,
        why=f"blessed by the gate against champion v{expected_champion}; live rollout next",
        evidence=evidence,
    )


def _check_champion(
    config: Config, version: str, expected: str | None, mlflow_client: Any, what: str
) -> str | None:
    current = champion(config, mlflow_client)
    current_version = current.version if current else None
    if current_version != expected:
        raise RegistryError(
            f"the champion of {config.model_name!r} moved from {_v(expected)} to {_v(current_version)} "
            f"while this run evaluated against it; v{version} is registered but not {what}. "
            "Run again to compare with the new champion."
        )
    return current_version


def promote(
    config: Config,
    version: str,
    expected_champion: str | None,
    mlflow_client: Any = None,
    *,
    by: str | None = None,
    why: str = "promoted",
    evidence: dict[str, Any] | None = None,
) -> str | None:
    """Point `champion` at `version` and `previous` at the old champion (and drop
    `challenger` when it named `version`).

    `expected_champion` is the version the challenger was compared with. If another run
    promoted something since, nothing moves: that comparison no longer holds.
    """
    mlflow_client = mlflow_client or client(config)
    by = by or actor()
    blessed_sha256(version_ref(mlflow_client, config.model_name, version))
    current_version = _check_champion(config, version, expected_champion, mlflow_client, "promoted")
    if current_version is not None:
        move_alias(
            config,
            PREVIOUS,
            current_version,
            mlflow_client,
            by=by,
            why=f"replaced by v{version}: {why}",
            evidence=evidence,
        )
    move_alias(config, CHAMPION, version, mlflow_client, by=by, why=why, evidence=evidence)
    challenger = get_alias(config, CHALLENGER, mlflow_client)
    if challenger is not None and challenger.version == version:
        move_alias(config, CHALLENGER, None, mlflow_client, by=by, why=f"now the champion: {why}")
    return current_version


def undo_promotion(config: Config, version: str, mlflow_client: Any = None) -> str | None:
    """Take `champion` back from `version` after its rollout failed: to the `previous`
    version (the champion it replaced), or unset when it was the first. Returns the
    champion now. Nothing moves when the champion is no longer `version` (another run
    promoted since)."""
    mlflow_client = mlflow_client or client(config)
    current = champion(config, mlflow_client)
    if current is None or current.version != version:
        return current.version if current else None
    before = get_alias(config, PREVIOUS, mlflow_client)
    by, why = actor(), f"the rollout of v{version} failed"
    if before is None or before.version == version:
        move_alias(config, CHAMPION, None, mlflow_client, by=by, why=why)
        return None
    move_alias(config, CHAMPION, before.version, mlflow_client, by=by, why=why)
    # `previous` named the champion that is back; what it named before is not recorded.
    move_alias(config, PREVIOUS, None, mlflow_client, by=by, why=f"v{before.version} is back")
    return before.version


def rollback(
    config: Config, mlflow_client: Any = None, *, by: str | None = None
) -> tuple[str, str]:
    """Make `previous` the champion again (and the demoted champion `previous`, so a second
    rollback undoes the first). Returns (new champion, demoted version)."""
    mlflow_client = mlflow_client or client(config)
    current = champion(config, mlflow_client)
    before = get_alias(config, PREVIOUS, mlflow_client)
    if current is None or before is None:
        raise RegistryError(f"{config.model_name!r} has no {PREVIOUS!r} version to roll back to")
    blessed_sha256(before)
    by = by or actor()
    why = f"rollback: v{current.version} out, v{before.version} back"
    move_alias(config, CHAMPION, before.version, mlflow_client, by=by, why=why)
    move_alias(config, PREVIOUS, current.version, mlflow_client, by=by, why=why)
    return before.version, current.version


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"


def requirements(*, torch: bool | None = None) -> list[str]:
    """What an MLflow consumer outside ctpipe's images installs to load our models (with
    the ctpipe modules the model ships in its code/ directory). `torch`: whether the model
    needs it; None: whether this process imported it."""
    import sys
    from importlib.metadata import version

    if torch is None:
        torch = "torch" in sys.modules
    names = ["scikit-learn", "numpy", "pandas", "scipy", "cloudpickle"] + (
        ["torch"] if torch else []
    )
    # A local version label (torch's "+cpu") names a build PyPI does not have.
    return [f"{name}=={version(name).split('+')[0]}" for name in names]
