"""The continuous-training graph run in this process, every step a plain call, timed.

The same `graph` that compiles to the KFP pipeline (graph.py), built from the stage
functions instead of the components: a step runs as soon as the graph reaches it, its
outputs are files in one work folder, candidates train one after another and the blessed
branch runs only when the gate blessed. For benchmarks and tests.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctpipe import stages
from ctpipe.config import Config
from ctpipe.pipelines.graph import Steps, graph

if TYPE_CHECKING:
    from ctpipe.evaluation import Evaluation
    from ctpipe.registry import Registration

RUN = "in-process"  # the run id, run name and reason a registered version records


@dataclass
class InProcessRun:
    """The pipeline's steps as plain calls in this process (for benchmarks and tests)."""

    seconds: dict[str, float]
    evaluation: Evaluation
    registration: Registration | None


def run_in_process(config: Config, work: str | Path, *, infra: bool = True) -> InProcessRun:
    """Every step of the continuous-training pipeline, in order, in one process, timed.

    Candidates train one after another; infra validation still starts its server process
    (`infra=False`: the challenger is only saved as the registry stores it).
    """
    root = Path(work)
    root.mkdir(parents=True, exist_ok=True)
    steps = InProcessSteps(root, infra=infra)
    graph(steps.steps(), config, RUN)
    assert steps.evaluation is not None, "the graph always evaluates"
    return InProcessRun(steps.seconds, steps.evaluation, steps.registration)


@dataclass(frozen=True)
class Local:
    """A step's output artifact: a file in the work folder and the metadata the component
    records on it (where a later step reads it)."""

    path: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """A step that has run, shaped like a KFP task: `.outputs[name]`, `.output`."""

    outputs: dict[str, Any]

    @property
    def output(self) -> Any:
        return self.outputs["Output"]


@dataclass(frozen=True)
class Each:
    """A parallel_for's tasks; `.outputs[name]` lists that output of each, in order."""

    tasks: list[Done]

    @property
    def outputs(self) -> dict[str, list[Any]]:
        gathered: dict[str, list[Any]] = defaultdict(list)  # no candidates: empty lists
        for task in self.tasks:
            for name, value in task.outputs.items():
                gathered[name].append(value)
        return gathered


class InProcessSteps:
    """The graph's steps as stage calls, timed per step name (`seconds`); keeps what the
    run reports (`evaluation`, `registration`)."""

    run_id = RUN
    run_name = RUN

    def __init__(self, work: Path, *, infra: bool = True) -> None:
        self.work = work
        self.infra = infra
        self.seconds: dict[str, float] = {}
        self.evaluation: Evaluation | None = None
        self.registration: Registration | None = None
        self._models = 0

    def steps(self) -> Steps:
        # Every field of Steps by its own name: a step the graph gains fails here at once.
        return Steps(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Steps)})

    def _path(self, name: str) -> str:
        return str(self.work / name)

    def _timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return result

    @staticmethod
    def parallel_for(items: Any, name: str, body: Callable[[Any], Any]) -> Each:
        return Each([body(item) for item in items])

    @staticmethod
    def collected(outputs: list[Any]) -> list[Any]:
        return outputs

    @staticmethod
    def when(flag: Any, name: str, body: Callable[[], None]) -> None:
        if flag:
            body()

    @staticmethod
    def on_gpu(task: Any) -> None:
        """Nothing to schedule: a model asking for device "auto" takes a GPU when torch sees one."""

    # Keyword arguments and output names as the components have them: the graph cannot
    # tell the two apart.

    def ingest(self, *, config: Config) -> Done:
        data = self._path("data")
        result = self._timed("ingest", stages.ingest, config, data)
        return Done({"data": Local(data, result.metadata())})

    def validate(self, *, config: Config, data: Local, kfp_run_id: str) -> Done:
        schema, report = self._path("schema"), self._path("report")
        # No run id: a schema change waiting for `ctpipe schema accept` (evolution: manual)
        # is filed under the data's digest, not under the one id every in-process run has.
        result = self._timed("validate", stages.validate, config, data.path, schema, report)
        result.raise_if_failed()
        return Done({"schema": Local(schema), "report": Local(report)})

    def split(self, *, config: Config, data: Local, schema: Local) -> Done:
        names = ("train", "validation", "test", "window", "profile", "reference", "report")
        out = {name: self._path("split_report" if name == "report" else name) for name in names}
        self._timed(
            "split",
            stages.split,
            config,
            data.path,
            schema.path,
            out["train"],
            out["validation"],
            out["test"],
            out["profile"],
            out["reference"],
            window_out=out["window"],
            report_out=out["report"],
        )
        return Done({name: Local(path) for name, path in out.items()})

    def plan(self, *, config: Config) -> Done:
        return Done({"Output": self._timed("plan", stages.plan, config)})

    def train(
        self,
        *,
        config: Config,
        candidate: dict[str, Any],
        schema: Local,
        train: Local,
        validation: Local,
    ) -> Done:
        model = self._path(f"model-{self._models}")
        self._models += 1
        result = self._timed(
            "train",
            stages.train,
            config,
            candidate,
            schema.path,
            train.path,
            validation.path,
            model,
        )
        return Done({"model": Local(model, result.metadata())})

    def select(self, *, config: Config, models: list[Local]) -> Done:
        best = self._path("best")
        selection = self._timed(
            "select", stages.select, config, [(m.path, m.metadata) for m in models], best
        )
        chosen = selection.chosen
        return Done({"best": Local(best, chosen.metadata()), "Output": chosen.candidate.id})

    def refit(
        self, *, config: Config, best: Local, schema: Local, train: Local, validation: Local
    ) -> Done:
        model = self._path("challenger")
        result = self._timed(
            "refit",
            stages.refit,
            config,
            best.metadata,
            schema.path,
            train.path,
            validation.path,
            model,
        )
        return Done({"model": Local(model, result.metadata())})

    def evaluate(self, *, config: Config, model: Local, test: Local, schema: Local) -> Done:
        evaluation, champion = self._path("evaluation"), self._path("champion")
        result = self._timed(
            "evaluate",
            stages.evaluate,
            config,
            model.path,
            model.metadata,
            test.path,
            schema.path,
            evaluation,
            champion,
        )
        self.evaluation = result
        return Done(
            {"evaluation": Local(evaluation), "champion": Local(champion), "Output": result.blessed}
        )

    def drift_report(self, *, config: Config, data: Local, schema: Local, champion: Local) -> Done:
        report = self._path("drift")
        summary = self._timed(
            "drift_report",
            stages.drift_report,
            config,
            data.path,
            schema.path,
            champion.path,
            report,
        )
        return Done({"report": Local(report), "Output": summary})

    def final_refit(
        self,
        *,
        config: Config,
        blessed: Local,
        schema: Local,
        window: Local,
        test: Local,
    ) -> Done:
        model = self._path("final")
        result = self._timed(
            "final_refit",
            stages.final_refit,
            config,
            blessed.path,
            blessed.metadata,
            schema.path,
            window.path,
            test.path,
            model,
        )
        return Done({"model": Local(model, result.metadata())})

    def infra_validate(self, *, config: Config, model: Local, test: Local, schema: Local) -> Done:
        served = self._path("served")
        if self.infra:
            _, metadata = self._timed(
                "infra_validate",
                stages.infra_validate,
                config,
                model.path,
                model.metadata,
                test.path,
                schema.path,
                served,
            )
        else:  # register takes the directory infra validation would have served
            _, _, metadata = stages.save_challenger(
                model.path, model.metadata, test.path, schema.path, served
            )
        return Done({"served": Local(served, metadata)})

    def register(
        self,
        *,
        config: Config,
        served: Local,
        schema: Local,
        evaluation: Local,
        profile: Local,
        reference: Local,
        data: Local,
        kfp_run_id: str,
        kfp_run_name: str,
        reason: str,
    ) -> Done:
        registration = self._timed(
            "register",
            stages.register,
            config,
            served_path=served.path,
            served_metadata=served.metadata,
            schema_path=schema.path,
            evaluation_path=evaluation.path,
            profile_path=profile.path,
            sample_path=reference.path,
            dataset_metadata=data.metadata,
            kfp_run_id=kfp_run_id,
            kfp_run_name=kfp_run_name,
            reason=reason,
        )
        self.registration = registration
        return Done(
            {
                "version": registration.version,
                "storage_uri": registration.storage_uri or "",
                "sha256": registration.sha256,
                "alias": registration.alias,
            }
        )

    def deploy(
        self, *, config: Config, version: str, storage_uri: str, sha256: str, alias: str
    ) -> Done:
        manifest = self._path("manifest")
        result = self._timed(
            "deploy",
            stages.deploy_registered,
            config,
            manifest,
            version,
            sha256,
            storage_uri,
            alias,
        )
        return Done({"manifest": Local(manifest), "Output": result.describe()})
