"""infra_validate: serve the challenger in the serving runtime before it is registered."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def infra_validate(
    config: dict, model: Input[Model], test: Input[Dataset], schema: Input[Artifact]
) -> str:
    """Start `python -m ctpipe.serving` with the challenger on a loopback port, send the
    newest test rows over v2 REST, and require identical predictions within the latency
    budget. A failure stops the run; the champion stays."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("infra-validate") as say:
        result = stages.infra_validate(from_dict(config), model.path, test.path, schema.path)
        say(result.describe())
        return result.describe()
