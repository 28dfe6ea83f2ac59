"""split: time-aware train / validation / test slices (test = the newest rows)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(
    config: dict,
    data: Input[Dataset],
    schema: Input[Artifact],
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    window: Output[Dataset],
    profile: Output[Artifact],
    reference: Output[Dataset],
    report: Output[Markdown],
) -> str:
    """Cut in time order so that nothing from the test period leaks into training, within
    train.window (auto: chosen by a backtest, figures in `report`); `window` holds the rows
    a final refit learns from. Profile those rows (`profile`, `reference` sample) for the
    drift monitor."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("split") as say:
        result = stages.split(
            from_dict(config),
            data.path,
            schema.path,
            train.path,
            validation.path,
            test.path,
            profile.path,
            reference.path,
            window_out=window.path,
            report_out=report.path,
        )
        for name, artifact in (
            ("train", train),
            ("validation", validation),
            ("test", test),
            ("window", window),
        ):
            artifact.metadata.update(result.metadata(name))
        say(result.describe())
        return result.describe()
