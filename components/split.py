"""split: time-aware train / validation / test slices (test = the newest rows)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(
    config: dict,
    data: Input[Dataset],
    schema: Input[Artifact],
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    profile: Output[Artifact],
    reference: Output[Dataset],
) -> str:
    """Cut in time order so that nothing from the test period leaks into training; profile
    the training slice (`profile`, `reference` sample) for the drift monitor."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("split") as say:
        result = stages.split(
            from_dict(config),
            data.path,
            schema.path,
            train.path,
            validation.path,
            test.path,
            profile.path,
            reference.path,
        )
        for name, artifact in (("train", train), ("validation", validation), ("test", test)):
            artifact.metadata.update(result.metadata(name))
        say(result.describe())
        return result.describe()
