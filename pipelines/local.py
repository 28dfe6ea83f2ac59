"""Run the compiled pipeline on this machine with kfp.local, and report on it.

The same components run here as in a cluster: kfp.local's SubprocessRunner starts each
step as a fresh process through `kfp.dsl.executor_main`, exactly as a pod would. With
`Containers`, DockerRunner starts each step in its image instead (Docker, or podman's
Docker-compatible socket through DOCKER_HOST).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ctpipe import registry, steplog, storage
from ctpipe.config import Config
from ctpipe.errors import ConfigError
from ctpipe.registry import TRACKING_ENV
from ctpipe.training.families import THREADS_ENV

LOCAL_PARALLELISM = 2  # kfp.local's cap on concurrent tasks (conservative_max in kfp 2.17)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_SKIPPED = re.compile(r"Skipping conditional task (\S+)")
_STEP_LINE = re.compile(r"^\[" + steplog.MARK + r":([\w-]+)\] ?(.*)$")


class ProgressView(io.TextIOBase):
    """Turns kfp.local's verbose log into one line per event.

    kfp.local logs every executor input and output as JSON; a person running the
    pipeline wants to see the steps, what they found, and why something failed.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.perf_counter()
        self.task_started: dict[str, list[float]] = {}
        self.pending = ""
        self.recent: list[str] = []  # raw lines since the last step boundary, for tracebacks
        self.errors_seen: set[str] = set()
        self.failed: str | None = None
        self.error_lines: list[str] = []
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def _emit(self, step: str, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.out.write(f"{elapsed:6.1f}s  {step:<12} {message}\n")
        self.out.flush()

    def _line(self, raw: str) -> None:
        line = raw.strip()
        match = _STEP_LINE.match(line)
        if match:
            step, message = match.groups()
            if message.startswith(steplog.ERROR):
                self.errors_seen.add(step)
                self.error_lines.append(message[len(steplog.ERROR) :].strip())
                self._emit(step, "✗ " + message[len(steplog.ERROR) :].strip())
            else:
                self._emit(step, message)
            return
        if match := _STARTED.search(line):
            self.task_started.setdefault(match.group(1), []).append(time.perf_counter())
            self.recent = []
            return
        if match := _FINISHED.search(line):
            name, status = match.groups()
            starts = self.task_started.get(name) or [time.perf_counter()]
            seconds = time.perf_counter() - starts.pop(0)
            if status == "SUCCESS":
                self._emit(name, f"✓ {seconds:.1f}s")
            else:
                self.failed = self.failed or name
                if name not in self.errors_seen:
                    tail = _traceback_tail(self.recent)
                    self.error_lines.extend(tail)
                    for text in tail:
                        self._emit(name, "✗ " + text)
                self._emit(name, f"✗ failed after {seconds:.1f}s")
            return
        if match := _SKIPPED.search(line):
            if match.group(1).startswith("condition") or "blessed" in match.group(1):
                self._emit("register", "– skipped: the gate did not bless the challenger")
            return
        self.recent.append(line)
        del self.recent[:-60]


def _traceback_tail(lines: list[str]) -> list[str]:
    starts = [i for i, text in enumerate(lines) if text.startswith("Traceback")]
    if not starts:
        return [text for text in lines if text][-3:]
    block = [text for text in lines[starts[-1] :] if text]
    return block[-1:] if block else []


@dataclass
class LocalRun:
    """What one local pipeline run did, read back from its output folder."""

    ok: bool
    run_dir: Path
    seconds: float
    failed_step: str | None = None
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    validation: str | None = None
    split: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen: str | None = None
    evaluation: dict[str, Any] | None = None
    champion_before: str | None = None
    registered_version: str | None = None
    infra: str | None = None
    deployed: str | None = None
    refit: str | None = None
    final_refit: str | None = None

    @property
    def blessed(self) -> bool:
        return bool(self.evaluation and self.evaluation["decision"]["blessed"])


def runs_root(config: Config) -> Path:
    base = Path(config.state_dir) if not storage.is_s3(config.state_dir) else Path(".ctpipe")
    return base / "runs"


@dataclass(frozen=True)
class Containers:
    """Run every step in its image, as the cluster does: images `<registry>/ctpipe/<role>:<tag>`
    (podman names locally built images localhost/...), endpoints from this environment."""

    registry: str | None = None
    tag: str | None = None
    # The host's network: steps reach MLflow and S3 as this machine does, loopback included.
    network_mode: str = "host"


def container_environment() -> dict[str, str]:
    """What a step needs from this environment: the variables the cluster's ConfigMap and
    Secret give every pod, plus their local variants."""
    from ctpipe import blessing
    from ctpipe.pipelines.continuous_training import (
        ENV_FROM_CONFIG_MAP,
        ENV_FROM_MLFLOW_AUTH,
        ENV_FROM_SECRET,
    )

    names = (
        *ENV_FROM_CONFIG_MAP,
        *ENV_FROM_SECRET,
        *ENV_FROM_MLFLOW_AUTH,
        *storage.ENDPOINT_ENV,
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "MLFLOW_S3_ENDPOINT_URL",
        THREADS_ENV,
    )
    found = {name: os.environ[name] for name in dict.fromkeys(names) if os.environ.get(name)}
    # A step in a container cannot read this machine's key file: it gets the key itself.
    return {**found, **blessing.environment()}


def check_reachable_from_containers(config: Config) -> None:
    """A step in a container sees none of this machine's files: state and data must live
    behind endpoints (MLflow server, S3) that it reaches."""
    if not storage.is_s3(config.state_dir):
        raise ConfigError(
            f"state_dir: {config.state_dir} is a local path, which a step in a container "
            "cannot see; use an s3:// URI"
        )
    if not os.environ.get(TRACKING_ENV, "").startswith(("http://", "https://")):
        raise ConfigError(
            f"{TRACKING_ENV} must name an MLflow server (http:// or https://) when steps run "
            "in containers"
        )
    if config.data.uri and not storage.is_s3(config.data.uri):
        raise ConfigError(
            f"data.uri: {config.data.uri} is a local path, which a step in a container "
            "cannot see; use an s3:// URI"
        )


def _run_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    """kfp's run_docker_container, but the container is removed only after its exit code
    is read. kfp asks the engine to remove it on exit and then asks for the code; podman
    answers that race with a 500 instead of a 404, which fails a step that succeeded."""
    import docker
    from kfp.local import docker_task_handler

    image = docker_task_handler.add_latest_tag_if_not_present(image)
    try:
        client.images.get(image)  # one lookup: kfp lists every image, ~1 s a step on podman
    except docker.errors.ImageNotFound:
        print(f"Pulling image {image!r}")
        client.images.pull(image)
    container = client.containers.run(
        image=image,
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        **run_args,
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def _containers_removed_after_exit() -> Iterator[None]:
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def _runner(containers: Containers | None) -> Any:
    from kfp import local

    if containers is None:
        return local.SubprocessRunner(use_venv=False)
    return local.DockerRunner(
        environment=container_environment(), network_mode=containers.network_mode
    )


def run_local(
    config: Config,
    *,
    reason: str = "manual",
    verbose: bool = False,
    out: TextIO | None = None,
    containers: Containers | None = None,
) -> LocalRun:
    """Run the pipeline with kfp.local; never raises for a failed step (see LocalRun.ok).

    Raises PreflightError before any step starts when S3 or the MLflow server does not
    answer: in seconds, instead of failing in evaluate after minutes of training.
    """
    from kfp import local

    from ctpipe import preflight
    from ctpipe.pipelines.continuous_training import build, continuous_training

    out = out or sys.stdout
    # kfp.local runs up to two steps at once; give each its share of the CPUs.
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 2) // LOCAL_PARALLELISM)))
    pipeline = continuous_training
    if containers is not None:
        check_reachable_from_containers(config)
        pipeline = build(registry=containers.registry, tag=containers.tag)
    preflight.check(config)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    root = (runs_root(config) / stamp).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if containers is not None:
        # Steps run as the images' own user (uid 1000), whoever runs this; the folder is
        # new and holds only this run's outputs.
        root.chmod(0o777)
    local.init(runner=_runner(containers), pipeline_root=str(root), raise_on_error=True)
    view = ProgressView(out) if not verbose else None
    started = time.perf_counter()
    ok = True
    errors: list[str] = []
    # kfp.local indents a task's output by swapping builtins.print; two tasks running at
    # once restore each other's swap and leave print indented for good. Undo that after.
    original_print = builtins.print
    root_logger = logging.getLogger()
    original_handlers, original_level = root_logger.handlers[:], root_logger.level
    with warnings.catch_warnings():
        # Our logical image name does not say "python", which makes kfp.local warn.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        redirect = contextlib.redirect_stdout(view) if view else contextlib.nullcontext()
        engine = _containers_removed_after_exit() if containers else contextlib.nullcontext()
        with redirect, engine:
            try:
                pipeline(config=config.to_dict(), reason=reason)
            except RuntimeError as exc:
                ok = False
                errors.append(str(exc))
            finally:
                builtins.print = original_print
                # kfp.local swaps the root logger's handlers the same way, with the same race.
                root_logger.handlers[:] = original_handlers
                root_logger.setLevel(original_level)
    run_dirs = [p for p in root.iterdir() if p.is_dir()]
    run = read_run(run_dirs[0] if run_dirs else root, time.perf_counter() - started, ok)
    if view:
        run.failed_step = view.failed
        run.errors = view.error_lines or errors
    else:
        run.errors = errors
    return run


def _outputs(run_dir: Path, task: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(run_dir.glob(f"**/{task}/executor_output.json")):
        found.append(json.loads(path.read_text()))
    return found


def _artifact(output: dict[str, Any], name: str) -> dict[str, Any]:
    artifacts = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
    return artifacts[0] if artifacts else {}


def read_run(run_dir: Path, seconds: float, ok: bool) -> LocalRun:
    run = LocalRun(ok=ok, run_dir=run_dir, seconds=seconds)
    for output in _outputs(run_dir, "ingest"):
        run.data = _artifact(output, "data").get("metadata", {})
    for output in _outputs(run_dir, "validate"):
        run.validation = output.get("parameterValues", {}).get("Output")
    for output in _outputs(run_dir, "split"):
        run.split = output.get("parameterValues", {}).get("Output")
    for output in _outputs(run_dir, "refit"):
        run.refit = output.get("parameterValues", {}).get("Output")
    for output in _outputs(run_dir, "final-refit"):
        final = _artifact(output, "model").get("metadata", {}).get("final_refit")
        run.final_refit = json.loads(final).get("reason") if isinstance(final, str) else None
    for output in _outputs(run_dir, "train"):
        run.candidates.append(_artifact(output, "model").get("metadata", {}))
    for output in _outputs(run_dir, "select"):
        run.chosen = output.get("parameterValues", {}).get("Output")
    for output in _outputs(run_dir, "evaluate"):
        uri = _artifact(output, "evaluation").get("uri")
        if uri and Path(uri).exists():
            record = json.loads(Path(uri).read_text())
            run.evaluation = record["evaluation"]
            run.champion_before = record["champion_version"]
    for output in _outputs(run_dir, "register"):
        run.registered_version = output.get("parameterValues", {}).get("version")
    for output in _outputs(run_dir, "infra-validate"):
        run.infra = output.get("parameterValues", {}).get("Output")
    for output in _outputs(run_dir, "deploy"):
        run.deployed = output.get("parameterValues", {}).get("Output")
    return run


def _champion_after_failure(run: LocalRun, config: Config) -> str:
    """What a failed run left as the champion: asked of the registry when the run got as
    far as registering (a failed deploy moves the alias back; say so only if it did)."""
    if not run.registered_version:
        return "nothing was promoted"
    try:
        current = registry.champion(config)
    except Exception as exc:
        return f"v{run.registered_version} was registered; the champion is unknown ({exc})"
    now = f"v{current.version}" if current else "none"
    if current is not None and current.version == run.registered_version:
        return f"v{run.registered_version} was registered and IS the champion"
    return f"v{run.registered_version} was registered but not promoted; the champion is {now}"


def summary(run: LocalRun, config: Config) -> str:
    """The closing report of `ctpipe run`."""
    lines = [""]
    if run.ok:
        if run.registered_version:
            before = (
                f" (previous: v{run.champion_before})"
                if run.champion_before
                else " (first champion)"
            )
            lines.append(f"Champion is now {config.model_name} v{run.registered_version}{before}.")
        elif run.evaluation is not None:
            kept = f"v{run.champion_before}" if run.champion_before else "none"
            lines.append(f"The gate refused the challenger; the champion stays ({kept}).")
    else:
        step = f" in step {run.failed_step!r}" if run.failed_step else ""
        lines.append(f"The run FAILED{step}; {_champion_after_failure(run, config)}.")
        lines += [f"  {e}" for e in run.errors]
    lines.append("")
    if run.data:
        lines.append(
            f"  data        {run.data.get('rows', 0):,} rows x {len(run.data.get('columns', []))} columns "
            f"from {run.data.get('source')} ({str(run.data.get('content_hash', ''))[:19]})"
        )
    if run.validation:
        lines.append(f"  validation  {run.validation}")
    if run.split:
        lines.append(f"  split       {run.split}")
    if run.candidates:
        ranked = sorted(run.candidates, key=lambda m: m.get("validation_score", 0.0), reverse=True)
        metric = ranked[0].get("metric", "")
        higher = config.higher_is_better(metric) if metric else True
        if not higher:
            ranked.reverse()
        lines.append(f"  candidates  {len(ranked)} trained, validation {metric}:")
        for meta in ranked:
            mark = "  <- chosen" if meta.get("candidate") == run.chosen else ""
            lines.append(
                f"                {meta.get('candidate', '?'):<28} {meta.get('validation_score', 0.0):.4f}{mark}"
            )
    if run.refit:
        lines.append(f"  refit       {run.refit}")
    if run.evaluation is not None:
        decision = run.evaluation["decision"]
        metric = run.evaluation["metric"]
        verdict = "BLESSED" if decision["blessed"] else "REFUSED"
        lines.append(
            f"  gate        {verdict}: test {metric} {run.evaluation['metrics'][metric]:.4f} on {run.evaluation['rows']:,} newest rows"
        )
        comparison = decision.get("comparison")
        if comparison:
            pct = round(comparison["confidence"] * 100)
            lines.append(
                f"              vs champion v{comparison['champion_version']} {comparison['champion']:.4f}: "
                f"improvement {comparison['improvement']:+.4f}, {pct}% CI [{comparison['low']:+.4f}, {comparison['high']:+.4f}], "
                f"margin {config.gate.margin}"
            )
        for reason in decision["reasons"]:
            lines.append(f"              - {reason}")
    if run.final_refit:
        lines.append(f"  final refit {run.final_refit}")
    if run.infra:
        lines.append(f"  serving     {run.infra}")
    if run.registered_version:
        lines.append(
            f"  champion    {config.model_name} v{run.registered_version} (MLflow alias 'champion')"
        )
    if run.deployed:
        lines.append(f"  deploy      {run.deployed}")
    lines.append(f"  took        {run.seconds:.1f}s; step outputs in {run.run_dir}")
    return "\n".join(lines)
