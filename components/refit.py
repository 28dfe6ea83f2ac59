"""refit: the chosen candidate, fitted again on train + validation, for the gate to judge."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def refit(
    config: dict,
    best: Input[Model],
    schema: Input[Artifact],
    train: Input[Dataset],
    validation: Input[Dataset],
    model: Output[Model],
) -> str:
    """Selection used the validation slice; now it is training data too, so the challenger
    learns from the newest rows before the test slice."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("refit") as say:
        result = stages.refit(
            from_dict(config),
            dict(best.metadata),
            schema.path,
            train.path,
            validation.path,
            model.path,
        )
        model.metadata.update(result.metadata())
        say(result.describe())
        return result.describe()
