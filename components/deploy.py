"""deploy: the new champion's InferenceService (canary first), applied in a cluster."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(
    config: dict,
    version: str,
    storage_uri: str,
    sha256: str,
    alias: str,
    manifest: Output[Artifact],
) -> str:
    """Render the InferenceService for `version` (stored at `storage_uri`, "" when the
    predictor pulls it from the registry) at deploy.canary_traffic_percent, and apply it by
    server-side apply inside a cluster; locally only the manifest is written (a local
    `ctpipe serve` follows the champion alias on its own). A `challenger` (progressive
    rollout) is left to the rollout controller, which owns the InferenceService until it
    promotes or rolls back. Register hands over where the version is and its alias, so
    this step never imports MLflow."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("deploy") as say:
        result = stages.deploy_registered(
            from_dict(config), manifest.path, version, sha256, storage_uri, alias
        )
        manifest.metadata.update(
            {"service": result.service, "version": result.version, "applied": result.applied}
        )
        say(result.describe())
        return result.describe()
