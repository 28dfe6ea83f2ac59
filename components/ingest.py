"""ingest: read the configured data into one Parquet dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(config: dict, data: Output[Dataset]) -> str:
    """Read local or s3:// CSV / Parquet / JSON Lines within the time window."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("ingest") as say:
        result = stages.ingest(from_dict(config), data.path)
        data.metadata.update(result.metadata())
        say(result.describe())
        return result.describe()
