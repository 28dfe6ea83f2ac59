"""`ctpipe rollout status`: the rollout as a person reads it."""

from __future__ import annotations

from datetime import timedelta

from ctpipe import registry
from ctpipe.config import Config, parse_duration
from ctpipe.rollout import judge
from ctpipe.rollout.state import CANARY, SHADOW, RolloutStore


def describe(config: Config, *, records: int = 5) -> str:
    settings = config.deploy.rollout
    mlflow_client = registry.client(config)
    lines = [f"model {config.model_name}: rollout strategy {settings.strategy}"]
    for alias in (registry.CHAMPION, registry.CHALLENGER, registry.PREVIOUS):
        ref = registry.get_alias(config, alias, mlflow_client)
        lines.append(f"  {alias:<10} {'v' + ref.version if ref else '-'}")
    store = RolloutStore(config.state_dir, config.model_name)
    rollout = store.load()
    if rollout is None:
        lines.append("no rollout yet")
        return "\n".join(lines)
    share = f" at {rollout.traffic_percent}% of traffic" if rollout.phase == CANARY else ""
    lines.append(
        f"rollout of v{rollout.challenger} against champion v{rollout.champion}: "
        f"{rollout.phase}{share} since {rollout.phase_since} (began {rollout.started_at})"
    )
    for step in rollout.history:
        lines.append(f"  {step['at']}  -> {step['phase']}: {step['why']}")
    history = store.history()
    if history:
        latest = history[-1]
        lines.append(f"latest decision ({latest['at']}): {latest['action']}")
        lines += [f"  {reason}" for reason in latest.get("reasons", [])]
    if not rollout.final:
        deadline = rollout.started + timedelta(seconds=parse_duration(settings.timeout))
        margin = config.gate.margin if settings.margin is None else settings.margin
        after = "canary" if rollout.phase == SHADOW and judge.canary_percent(config) else "promoted"
        lines.append(
            f"next: the monitor's next visit judges {settings.min_labelled}+ labelled rows per side: "
            f"-> {after} when the interval's low end >= -{margin}, rolled_back when it lies below 0"
            + (
                f" or the canary breaks error rate {settings.max_error_rate:.0%} / p95 "
                f"{settings.max_latency_ratio}x"
                if rollout.phase == CANARY
                else ""
            )
            + f"; rolled_back at the timeout ({settings.timeout}: {deadline.isoformat()})"
        )
    moves = registry.alias_history(config)[-records:]
    if moves:
        lines.append("alias moves (latest last):")
        for move in moves:
            target = f"v{move.version}" if move.version else "(removed)"
            lines.append(f"  {move.at}  {move.alias} -> {target} by {move.by}: {move.why}")
    return "\n".join(lines)
