"""drift_report: an evidently HTML report, the champion's training data vs the new data."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def drift_report(
    config: dict,
    data: Input[Dataset],
    schema: Input[Artifact],
    champion: Input[Artifact],
    report: Output[HTML],
) -> str:
    """For people, in the KFP UI; no later step depends on it. `champion` is evaluate's
    snapshot of the champion it judged against, so this step never talks to MLflow."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("drift-report") as say:
        summary = stages.drift_report(
            from_dict(config), data.path, schema.path, champion.path, report.path
        )
        say(summary)
        return summary
