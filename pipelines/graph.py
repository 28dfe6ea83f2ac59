"""The continuous-training DAG, written once.

`graph` wires the steps together; a `Steps` says what a step and each control-flow
primitive are. Two implementations exist: `continuous_training.KFP_STEPS` (the KFP
components inside dsl.ParallelFor, dsl.Collected and dsl.If: what compiles to YAML) and
`in_process.InProcessSteps` (the stage functions, called at once and timed). A step added
here runs in both, so the benchmarks and tests that run in one process exercise the
pipeline that ships.

Nothing here imports KFP: the in-process side must not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CPU = "cpu"
GPU = "gpu"
PROFILES = (CPU, GPU)

Step = Callable[..., Any]  # keyword arguments as the component takes them; returns a task


@dataclass(frozen=True)
class Steps:
    """What `graph` builds with. A step returns a task: `.outputs[name]` for each output,
    `.output` for its single return value."""

    ingest: Step
    validate: Step
    split: Step
    plan: Step
    train: Step
    select: Step
    refit: Step
    evaluate: Step
    drift_report: Step
    final_refit: Step
    infra_validate: Step
    register: Step
    deploy: Step
    # (items, name, body): body(item) for each item; returns what stands for all of them.
    parallel_for: Callable[[Any, str, Callable[[Any], Any]], Any]
    collected: Callable[[Any], Any]  # one output of a parallel_for's body, for every item
    # (flag, name, body): body() when the boolean step output `flag` is true.
    when: Callable[[Any, str, Callable[[], None]], None]
    on_gpu: Callable[[Any], None]  # the `gpu` profile's training steps
    run_id: Any  # the run's id and name, as the register step records them
    run_name: Any


def graph(steps: Steps, config: Any, reason: Any, profile: str = CPU) -> None:
    ingest_task = steps.ingest(config=config)
    validate_task = steps.validate(
        config=config, data=ingest_task.outputs["data"], kfp_run_id=steps.run_id
    )
    split_task = steps.split(
        config=config, data=ingest_task.outputs["data"], schema=validate_task.outputs["schema"]
    )
    plan_task = steps.plan(config=config)

    train_task = steps.parallel_for(
        plan_task.output,
        "candidates",
        lambda candidate: steps.train(
            config=config,
            candidate=candidate,
            schema=validate_task.outputs["schema"],
            train=split_task.outputs["train"],
            validation=split_task.outputs["validation"],
        ),
    )
    select_task = steps.select(config=config, models=steps.collected(train_task.outputs["model"]))
    refit_task = steps.refit(
        config=config,
        best=select_task.outputs["best"],
        schema=validate_task.outputs["schema"],
        train=split_task.outputs["train"],
        validation=split_task.outputs["validation"],
    )
    if profile == GPU:
        steps.on_gpu(train_task)
        steps.on_gpu(refit_task)
    evaluate_task = steps.evaluate(
        config=config,
        model=refit_task.outputs["model"],
        test=split_task.outputs["test"],
        schema=validate_task.outputs["schema"],
    )

    # For people: the new data against the training sample of the champion evaluate judged
    # against. Nothing waits on it; in a cluster it runs beside infra-validate and register.
    steps.drift_report(
        config=config,
        data=ingest_task.outputs["data"],
        schema=validate_task.outputs["schema"],
        champion=evaluate_task.outputs["champion"],
    )

    def blessed() -> None:
        final_task = steps.final_refit(
            config=config,
            blessed=refit_task.outputs["model"],
            schema=validate_task.outputs["schema"],
            window=split_task.outputs["window"],
            test=split_task.outputs["test"],
        )
        if profile == GPU:
            steps.on_gpu(final_task)
        # Serve the challenger exactly as production will before anything is registered.
        infra_task = steps.infra_validate(
            config=config,
            model=final_task.outputs["model"],
            test=split_task.outputs["test"],
            schema=validate_task.outputs["schema"],
        )
        register_task = steps.register(
            config=config,
            served=infra_task.outputs["served"],
            schema=validate_task.outputs["schema"],
            evaluation=evaluate_task.outputs["evaluation"],
            profile=split_task.outputs["profile"],
            reference=split_task.outputs["reference"],
            data=ingest_task.outputs["data"],
            kfp_run_id=steps.run_id,
            kfp_run_name=steps.run_name,
            reason=reason,
        )
        steps.deploy(
            config=config,
            version=register_task.outputs["version"],
            storage_uri=register_task.outputs["storage_uri"],
            sha256=register_task.outputs["sha256"],
            alias=register_task.outputs["alias"],
        )

    # kfp.local resolves conditions on a task's `Output` only: evaluate returns the blessing.
    steps.when(evaluate_task.outputs["Output"], "blessed", blessed)
