"""validate: check the data against the stored schema; stop the run on hard anomalies."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(
    config: dict,
    data: Input[Dataset],
    schema: Output[Artifact],
    report: Output[Markdown],
    kfp_run_id: str = "",
) -> str:
    """Infer schema v1 on first use; later, list every violation and fail on errors.
    Data that differs only in distribution gets the next schema version (`schema`), stored
    by register, or under `validation.evolution: manual` waits for `ctpipe schema accept`."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("validate") as say:
        result = stages.validate(
            from_dict(config), data.path, schema.path, report.path, run_id=kfp_run_id
        )
        schema.metadata["version"] = result.evolved_version or result.schema_version
        if result.evolved:
            schema.metadata["evolved_from"] = result.schema_version
            for change in result.evolved:
                say(f"schema v{result.evolved_version} proposed: {change}")
        for violation in result.warnings:
            for text in violation.lines():
                say(f"warning: {text}")
        say(result.summary)
        result.raise_if_failed()
        return result.summary
