"""The rollout controller: one state machine, advanced once per monitor visit.

    (challenger named) -> shadow -> canary -> promoted
                              \\         \\-> rolled_back
                               \\-> rolled_back            (and canary is skipped at 0%)

Each visit reads the registry's aliases and the rollout state, judges the live evidence
(ctpipe.rollout.judge), acts (aliases through registry.move_alias; the InferenceService
through ctpipe.deploy, the one writer) and writes one decision record. `champion` moves
only at promotion; a rollback removes `challenger` and puts back exactly the champion
and the traffic that served before the rollout began.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ctpipe import registry, storage
from ctpipe.config import Config
from ctpipe.rollout import evidence, judge
from ctpipe.rollout.health import Health, HealthSource
from ctpipe.rollout.state import CANARY, PROMOTED, ROLLED_BACK, SHADOW, Rollout, RolloutStore

BY = "rollout controller"
MANIFEST = "inferenceservice.yaml"


@dataclass(frozen=True)
class RolloutStep:
    """What one visit did to the rollout."""

    rollout: Rollout | None  # None: nothing to roll out
    action: str  # "idle", "began", judge.WAIT, CANARY, PROMOTED, ROLLED_BACK
    reasons: tuple[str, ...] = ()
    comparison: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    record: str | None = None
    manifest: str | None = None  # the InferenceService rendered for the new phase
    applied: bool = False

    def summary(self) -> str:
        if self.rollout is None:
            return "rollout: nothing to roll out"
        r = self.rollout
        head = (
            f"rollout of v{r.challenger} (champion v{r.champion}): {self.action}, now {r.phase}"
            + (f" at {r.traffic_percent}%" if r.phase == CANARY else "")
        )
        return "\n".join([head, *(f"  {reason}" for reason in self.reasons)])


@dataclass
class Controller:
    config: Config
    predictions_root: str
    labels_root: str
    health: HealthSource | None = None
    say: Callable[[str], None] = lambda _: None
    mlflow_client: Any = None
    store: RolloutStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RolloutStore(self.config.state_dir, self.config.model_name)
        self.mlflow_client = self.mlflow_client or registry.client(self.config)

    # ----------------------------------------------------------------------- the step

    def step(self, now: datetime) -> RolloutStep:
        config = self.config
        if config.deploy.rollout.strategy != "progressive":
            return RolloutStep(None, "idle", ("deploy.rollout.strategy is immediate",))
        champion = registry.champion(config, self.mlflow_client)
        challenger = registry.get_alias(config, registry.CHALLENGER, self.mlflow_client)
        rollout = self.store.load()
        live = rollout is not None and not rollout.final
        if live and rollout is not None:
            ended = self._ended_outside(rollout, champion, challenger, now)
            if ended is not None:
                return ended
        if challenger is None or champion is None:
            return RolloutStep(rollout, "idle")
        if rollout is None or rollout.challenger != challenger.version or not live:
            if rollout is not None and rollout.challenger == challenger.version:
                return RolloutStep(rollout, "idle")  # finished; its alias move is pending
            return self._begin(champion, challenger, now)
        assert rollout is not None
        return self._judge(rollout, champion, now)

    def _ended_outside(
        self,
        rollout: Rollout,
        champion: registry.ModelRef | None,
        challenger: registry.ModelRef | None,
        now: datetime,
    ) -> RolloutStep | None:
        """A live rollout whose premises someone else changed: another challenger, a
        champion moved by hand, the alias removed. It ends (rolled back) without moving an
        alias; the InferenceService goes back to the champion as it is now."""
        why = None
        if champion is None or champion.version != rollout.champion:
            now_champion = f"v{champion.version}" if champion else "none"
            why = f"the champion moved outside the rollout (v{rollout.champion} -> {now_champion})"
        elif challenger is None:
            why = "the challenger alias was removed outside the rollout"
        elif challenger.version != rollout.challenger:
            why = f"superseded by challenger v{challenger.version}"
        if why is None:
            return None
        ended = rollout.moved(ROLLED_BACK, now, why, 0)
        manifest, applied = (None, False)
        if champion is not None:
            manifest, applied = self._deploy(ended, champion=champion)
        return self._save(ended, ROLLED_BACK, (why,), now, manifest=manifest, applied=applied)

    def _begin(
        self, champion: registry.ModelRef, challenger: registry.ModelRef, now: datetime
    ) -> RolloutStep:
        phase = judge.first_phase(self.config)
        percent = judge.canary_percent(self.config) if phase == CANARY else 0
        why = f"challenger v{challenger.version} named; {phase} first"
        rollout = Rollout(
            self.config.model_name,
            champion.version,
            challenger.version,
            phase,
            now.isoformat(),
            now.isoformat(),
            percent,
            ({"phase": phase, "at": now.isoformat(), "why": why},),
            self._baseline() if phase == CANARY else {},
        )
        manifest, applied = self._deploy(rollout, champion=champion, challenger=challenger)
        self.say(f"rollout: v{challenger.version} begins in {phase}")
        return self._save(rollout, "began", (why,), now, manifest=manifest, applied=applied)

    def _judge(self, rollout: Rollout, champion: registry.ModelRef, now: datetime) -> RolloutStep:
        comparison = evidence.compare(
            self.config, rollout, self.predictions_root, self.labels_root, champion, until=now
        )
        health = self._health(rollout, now) if rollout.phase == CANARY else None
        verdict = judge.judge(self.config, rollout, comparison, health, now)
        compared = comparison.to_dict()
        measured = {v: h.to_dict() for v, h in health.items()} if health is not None else None
        extra: dict[str, Any] = {"comparison": compared, "health": measured}
        if verdict.action == judge.WAIT:
            return self._save(
                rollout, judge.WAIT, verdict.reasons, now, comparison=compared, health=measured
            )
        why = verdict.reasons[-1]
        challenger = registry.version_ref(
            self.mlflow_client, self.config.model_name, rollout.challenger
        )
        evidence_record = {**extra, "reasons": list(verdict.reasons)}
        if verdict.action == CANARY:
            moved = rollout.moved(
                CANARY, now, why, judge.canary_percent(self.config), baseline=self._baseline()
            )
            manifest, applied = self._deploy(moved, champion=champion, challenger=challenger)
        elif verdict.action == PROMOTED:
            registry.promote(
                self.config,
                rollout.challenger,
                rollout.champion,
                self.mlflow_client,
                by=BY,
                why=f"live traffic: {why}",
                evidence=evidence_record,
            )
            moved = rollout.moved(PROMOTED, now, why, 100)
            try:
                manifest, applied = self._deploy(moved, champion=challenger)
            except Exception:
                self._take_back(rollout)
                raise
        else:
            registry.move_alias(
                self.config,
                registry.CHALLENGER,
                None,
                self.mlflow_client,
                by=BY,
                why=f"rolled back: {why}",
                evidence=evidence_record,
                now=now,
            )
            moved = rollout.moved(ROLLED_BACK, now, why, 0)
            manifest, applied = self._deploy(moved, champion=champion)
        self.say(f"rollout: v{rollout.challenger} {rollout.phase} -> {moved.phase}: {why}")
        return self._save(
            moved,
            verdict.action,
            verdict.reasons,
            now,
            manifest=manifest,
            applied=applied,
            comparison=compared,
            health=measured,
        )

    # ------------------------------------------------------------------------ effects

    def _health(self, rollout: Rollout, now: datetime) -> dict[str, Health] | None:
        if self.health is None:
            return None
        return self.health.measure(self.config.model_name, rollout.since, now, rollout.baseline)

    def _baseline(self) -> dict[str, Any]:
        return self.health.baseline(self.config.model_name) if self.health is not None else {}

    def _deploy(
        self,
        rollout: Rollout,
        *,
        champion: registry.ModelRef,
        challenger: registry.ModelRef | None = None,
    ) -> tuple[str, bool]:
        """Render the InferenceService for the phase (and apply it in a cluster); the
        manifest is kept beside the rollout state either way."""
        from ctpipe import deploy

        serving = deploy.locate(self.config, champion, self.mlflow_client)
        other = (
            deploy.locate(self.config, challenger, self.mlflow_client)
            if challenger is not None
            else None
        )
        if rollout.phase == SHADOW:
            manifest = deploy.render(self.config, serving, shadow=other)
        elif rollout.phase == CANARY:
            assert other is not None
            manifest = deploy.render(
                self.config, other, canary_traffic_percent=rollout.traffic_percent, role=CANARY
            )
        else:  # promoted (champion is the new one) or rolled back: one model, all traffic
            manifest = deploy.render(self.config, serving)
        uri = storage.join(self.store.root, MANIFEST)
        storage.write_bytes(uri, deploy.to_yaml(manifest).encode())
        applied = deploy.should_apply(self.config)
        if applied:
            deploy.apply(manifest)
        return uri, applied

    def _take_back(self, rollout: Rollout) -> None:
        """The promotion's InferenceService could not be applied: the aliases go back to
        where they were (the champion, and the challenger still in canary), so that the
        registry never names a champion the cluster does not serve. The state was not
        saved: the next visit judges the canary again."""
        registry.undo_promotion(self.config, rollout.challenger, self.mlflow_client)
        registry.move_alias(
            self.config,
            registry.CHALLENGER,
            rollout.challenger,
            self.mlflow_client,
            by=BY,
            why="its promotion could not be applied to the InferenceService; still in canary",
        )

    def _save(
        self,
        rollout: Rollout,
        action: str,
        reasons: tuple[str, ...],
        now: datetime,
        *,
        manifest: str | None = None,
        applied: bool = False,
        comparison: dict[str, Any] | None = None,
        health: dict[str, Any] | None = None,
    ) -> RolloutStep:
        self.store.save(rollout)
        record = self.store.record(
            {
                "at": now.isoformat(),
                "model": rollout.model,
                "champion": rollout.champion,
                "challenger": rollout.challenger,
                "action": action,
                "phase": rollout.phase,
                "traffic_percent": rollout.traffic_percent,
                "reasons": list(reasons),
                "comparison": comparison,
                "health": health,
                "manifest": manifest,
                "applied": applied,
            },
            now,
        )
        return RolloutStep(rollout, action, reasons, comparison, health, record, manifest, applied)
