"""train: fit one candidate (features + estimator in one sklearn Pipeline)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    config: dict,
    candidate: dict,
    schema: Input[Artifact],
    train: Input[Dataset],
    validation: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Fit on the train slice and score on the validation slice."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("train") as say:
        result = stages.train(
            from_dict(config), candidate, schema.path, train.path, validation.path, model.path
        )
        model.metadata.update(result.metadata())
        metrics.log_metric(f"validation_{result.metric}", result.score)
        metrics.log_metric("fit_seconds", round(result.seconds, 3))
        say(result.describe())
