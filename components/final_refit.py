"""final_refit: after a blessing, the blessed candidate fitted on every row of the window."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def final_refit(
    config: dict,
    blessed: Input[Model],
    schema: Input[Artifact],
    window: Input[Dataset],
    test: Input[Dataset],
    model: Output[Model],
) -> str:
    """`model` is the refit when its test predictions agree with the blessed model's
    (train.final_refit_tolerance), else the blessed model itself; `final_refit` in its
    metadata records which and why. Infra validation serves whichever goes on."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("final-refit") as say:
        result = stages.final_refit(
            from_dict(config),
            blessed.path,
            dict(blessed.metadata),
            schema.path,
            window.path,
            test.path,
            model.path,
        )
        model.metadata.update(result.metadata())
        say(result.final["reason"] if result.final else result.describe())
        return result.describe()
