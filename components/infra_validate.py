"""infra_validate: serve the challenger in the serving runtime before it is registered."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def infra_validate(
    config: dict,
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    served: Output[Model],
) -> str:
    """Save the challenger as the registry stores it (`served`, an MLflow model directory),
    start `python -m ctpipe.serving` on it on a loopback port, send the newest test rows
    over v2 REST, and require identical predictions within the latency budget. A failure
    stops the run; the champion stays. register logs `served` as it is."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("infra-validate") as say:
        result, metadata = stages.infra_validate(
            from_dict(config), model.path, dict(model.metadata), test.path, schema.path, served.path
        )
        served.metadata.update(metadata)  # with the training record: all register reads
        say(result.describe())
        return result.describe()
