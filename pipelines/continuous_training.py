"""The continuous-training pipeline: data in, a blessed champion out.

ingest -> validate -> split -> train x N (ParallelFor) -> select -> evaluate
       -> If(blessed): register (MLflow alias `champion`)
               validate -> drift_report (evidently HTML, for people; nothing waits on it)
"""

# No `from __future__ import annotations`: KFP reads the signature types at runtime.

from typing import Any

from kfp import dsl

from ctpipe import config as config_module
from ctpipe.components.drift_report import drift_report
from ctpipe.components.evaluate import evaluate
from ctpipe.components.ingest import ingest
from ctpipe.components.plan import plan
from ctpipe.components.register import register
from ctpipe.components.select import select
from ctpipe.components.split import split
from ctpipe.components.train import train
from ctpipe.components.validate import validate

PIPELINE_NAME = "continuous-training"


def default_config() -> dict[str, Any]:
    """The shipped ctpipe.yaml as a dict, paths left as written (compiles identically anywhere)."""
    import yaml

    return config_module.from_dict(yaml.safe_load(config_module.default_config_text())).to_dict()


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="ctpipe: validate new data, train candidates, gate against the champion, promote the winner.",
)
def continuous_training(config: dict = default_config(), reason: str = "manual") -> None:  # noqa: B008
    # Every step depends on data or state outside its inputs (files behind a URI, the
    # schema store, the current champion), so KFP's cache could only ever serve stale results.
    ingest_task = ingest(config=config).set_caching_options(False)
    validate_task = validate(config=config, data=ingest_task.outputs["data"]).set_caching_options(
        False
    )
    split_task = split(
        config=config, data=ingest_task.outputs["data"], schema=validate_task.outputs["schema"]
    ).set_caching_options(False)
    drift_report(
        config=config, data=ingest_task.outputs["data"], schema=validate_task.outputs["schema"]
    ).set_caching_options(False)
    plan_task = plan(config=config).set_caching_options(False)

    with dsl.ParallelFor(plan_task.output, name="candidates") as candidate:
        train_task = train(
            config=config,
            candidate=candidate,
            schema=validate_task.outputs["schema"],
            train=split_task.outputs["train"],
            validation=split_task.outputs["validation"],
        ).set_caching_options(False)

    select_task = select(
        config=config, models=dsl.Collected(train_task.outputs["model"])
    ).set_caching_options(False)
    evaluate_task = evaluate(
        config=config,
        model=select_task.outputs["best"],
        test=split_task.outputs["test"],
        schema=validate_task.outputs["schema"],
    ).set_caching_options(False)

    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 (a KFP expression)
        register(
            config=config,
            model=select_task.outputs["best"],
            schema=validate_task.outputs["schema"],
            evaluation=evaluate_task.outputs["evaluation"],
            test=split_task.outputs["test"],
            profile=split_task.outputs["profile"],
            reference=split_task.outputs["reference"],
            data=ingest_task.outputs["data"],
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            reason=reason,
        ).set_caching_options(False)
