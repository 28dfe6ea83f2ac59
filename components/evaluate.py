"""evaluate: test metrics, paired bootstrap against the champion, and the blessing."""

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    config: dict,
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    champion: Output[Artifact],
) -> bool:
    """Return True when the challenger is blessed. The single return value is what
    dsl.If reads (kfp.local resolves conditions on a task's `Output` only). `champion`
    is the champion judged against (version, training sample), for the drift report."""
    from pathlib import Path

    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("evaluate") as say:
        result = stages.evaluate(
            from_dict(config),
            model.path,
            dict(model.metadata),
            test.path,
            schema.path,
            evaluation.path,
            champion.path,
        )
        for name, value in result.metrics.items():
            metrics.log_metric(f"test_{name}", value)
        if result.champion_metrics:
            for name, value in result.champion_metrics.items():
                metrics.log_metric(f"champion_test_{name}", value)
        for name, value in result.gate_figures().items():
            metrics.log_metric(name, value)
        if result.confusion:
            classification.log_confusion_matrix(
                result.confusion["categories"], result.confusion["matrix"]
            )
        if result.roc:
            classification.log_roc_curve(
                result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"]
            )
        evaluation.metadata.update({"blessed": result.blessed, "metric": result.metric})
        Path(report.path).write_text(result.markdown())
        say(result.summary())
        for reason in result.decision.reasons:
            say(f"  {reason}")
        return result.blessed
