"""register: log the blessed challenger to MLflow and make it the champion."""

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
) -> NamedTuple("Outputs", [("version", str), ("storage_uri", str), ("sha256", str)]):  # type: ignore[valid-type]  # KFP reads this form
    """Register the model directory infra validation served (`served`) as a new version,
    with its training snapshot (`profile`, `reference`); move `champion` to it and
    `previous` to the old one. Returns the version and where it is stored (storage_uri ""
    when KServe cannot fetch it; the predictor then asks MLflow)."""
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
        Outputs = namedtuple("Outputs", ["version", "storage_uri", "sha256"])
        return Outputs(registration.version, registration.storage_uri or "", registration.sha256)
