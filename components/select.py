"""select: the best candidate on the validation slice."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Model, Output

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select(
    config: dict, models: Input[list[Model]], best: Output[Model], leaderboard: Output[Markdown]
) -> str:
    """Copy the winner to `best`, with its metadata; write the leaderboard."""
    from pathlib import Path

    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("select") as say:
        selection = stages.select(
            from_dict(config), [(m.path, dict(m.metadata)) for m in models], best.path
        )
        best.metadata.update(selection.chosen.metadata())
        Path(leaderboard.path).write_text(selection.leaderboard)
        say(selection.describe())
        return selection.chosen.candidate.id
