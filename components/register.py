"""register: log the blessed challenger to MLflow and make it the champion."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    config: dict,
    model: Input[Model],
    schema: Input[Artifact],
    evaluation: Input[Artifact],
    test: Input[Dataset],
    profile: Input[Artifact],
    reference: Input[Dataset],
    data: Input[Dataset],
    kfp_run_id: str,
    kfp_run_name: str,
    reason: str,
) -> str:
    """Register a new model version with its training snapshot (`profile`, `reference`);
    move `champion` to it and `previous` to the old one."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("register") as say:
        registration = stages.register(
            from_dict(config),
            model_path=model.path,
            model_metadata=dict(model.metadata),
            schema_path=schema.path,
            evaluation_path=evaluation.path,
            test_path=test.path,
            profile_path=profile.path,
            sample_path=reference.path,
            dataset_metadata=dict(data.metadata),
            kfp_run_id=kfp_run_id,
            kfp_run_name=kfp_run_name,
            reason=reason,
        )
        say(registration.describe())
        return registration.version
