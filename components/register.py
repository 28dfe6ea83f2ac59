"""register: log the blessed challenger to MLflow and name it challenger (or champion)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    config: dict,
    served: Input[Model],
    schema: Input[Artifact],
    evaluation: Input[Artifact],
    profile: Input[Artifact],
    reference: Input[Dataset],
    data: Input[Dataset],
    kfp_run_id: str,
    kfp_run_name: str,
    reason: str,
) -> NamedTuple(  # type: ignore[valid-type]  # KFP reads this form
    "Outputs", [("version", str), ("storage_uri", str), ("sha256", str), ("alias", str)]
):
    """Register the model directory infra validation served (`served`) as a new version,
    with its training snapshot (`profile`, `reference`), and name it: `challenger` under a
    progressive rollout, else `champion` (the old one becomes `previous`). Returns the
    version, where it is stored (storage_uri "" when KServe cannot fetch it; the predictor
    then asks MLflow) and the alias it got."""
    from collections import namedtuple

    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("register") as say:
        registration = stages.register(
            from_dict(config),
            served_path=served.path,
            served_metadata=dict(served.metadata),
            schema_path=schema.path,
            evaluation_path=evaluation.path,
            profile_path=profile.path,
            sample_path=reference.path,
            dataset_metadata=dict(data.metadata),
            kfp_run_id=kfp_run_id,
            kfp_run_name=kfp_run_name,
            reason=reason,
        )
        say(registration.describe())
        Outputs = namedtuple("Outputs", ["version", "storage_uri", "sha256", "alias"])
        return Outputs(
            registration.version,
            registration.storage_uri or "",
            registration.sha256,
            registration.alias,
        )
