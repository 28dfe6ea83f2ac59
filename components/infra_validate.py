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
    over v2 REST, and require identical predictions. Then time it against the champion,
    served beside it on the same rows (deploy.infra_latency_ratio, under the ceiling
    deploy.infra_latency_ms); `served`'s metadata records both models' p50/p95. A failure
    stops the run; the champion stays. register logs `served` as it is."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("infra-validate") as say:
        result, metadata = stages.infra_validate(
            from_dict(config), model.path, dict(model.metadata), test.path, schema.path, served.path
        )
        # The training record (all register reads) and the latency both models showed.
        served.metadata.update({**metadata, **result.metadata()})
        say(result.describe())
        return result.describe()
