"""plan: expand the configured search space into the candidates to train."""

from kfp import dsl

from ctpipe.components.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan(config: dict) -> list:
    """One dict per candidate (id, family, params), for dsl.ParallelFor."""
    from ctpipe import stages, steplog
    from ctpipe.config import from_dict

    with steplog.step("plan") as say:
        candidates = stages.plan(from_dict(config))
        say(f"{len(candidates)} candidates: {', '.join(c['id'] for c in candidates)}")
        return candidates
