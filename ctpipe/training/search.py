"""Expand the configured search space into candidates, and pick the best of them."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from ctpipe.config import Config, decode_params, encode_params
from ctpipe.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    id: str  # e.g. "random_forest-2": stable for a given config
    family: str
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params": encode_params(self.params)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Candidate:
        # KFP hands numbers over as doubles: 200 comes back as 200.0, which sklearn's
        # integer parameters refuse.
        params = {k: _restore_int(k, v) for k, v in decode_params(raw["params"]).items()}
        return cls(str(raw["id"]), str(raw["family"]), params)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.id} ({shown})" if shown else self.id


# Parameters where 1.0 (a fraction: all of them) and 1 (a count: one) are different models.
_FRACTION_PARAMS = frozenset({"max_features", "max_samples"})


def _restore_int(name: str, value: Any) -> Any:
    if not (isinstance(value, float) and value.is_integer()):
        return value
    if name in _FRACTION_PARAMS and value == 1.0:
        return value
    return int(value)


def expand(config: Config) -> list[Candidate]:
    """Every grid point of every family, in config order."""
    out: list[Candidate] = []
    for space in config.search.candidates:
        names = sorted(space.params)
        axes = [v if isinstance(v, list) else [v] for v in (space.params[n] for n in names)]
        for i, combo in enumerate(itertools.product(*axes)):
            out.append(
                Candidate(f"{space.family}-{i}", space.family, dict(zip(names, combo, strict=True)))
            )
    if len(out) > config.search.max_candidates:
        raise ConfigError(
            f"search.candidates: the grid has {len(out)} candidates, more than search.max_candidates "
            f"({config.search.max_candidates}); shrink the grid or raise the limit"
        )
    # Distinct ids even when a family is listed twice.
    seen: dict[str, int] = {}
    unique = []
    for c in out:
        n = seen.get(c.id, 0)
        seen[c.id] = n + 1
        unique.append(c if n == 0 else Candidate(f"{c.id}.{n}", c.family, c.params))
    return unique


@dataclass(frozen=True)
class TrainResult:
    candidate: Candidate
    metric: str
    score: float  # on the validation slice
    train_rows: int
    validation_rows: int
    seconds: float
    sha256: str = ""  # of the model file the train step wrote (see stages.load_step_model)

    def metadata(self) -> dict[str, Any]:
        return {
            "model_sha256": self.sha256,
            "candidate": self.candidate.id,
            "family": self.candidate.family,
            "params": json.dumps(self.candidate.params, sort_keys=True),
            "metric": self.metric,
            "validation_score": self.score,
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> TrainResult:
        candidate = Candidate(
            str(meta["candidate"]), str(meta["family"]), json.loads(meta["params"])
        )
        return cls(
            candidate,
            str(meta["metric"]),
            float(meta["validation_score"]),
            int(meta["train_rows"]),
            int(meta["validation_rows"]),
            float(meta["seconds"]),
            str(meta.get("model_sha256") or ""),
        )

    def describe(self) -> str:
        return f"{self.candidate.describe()}: validation {self.metric} {self.score:.4f} ({self.seconds:.1f}s)"


def best(results: list[TrainResult], higher_is_better: bool) -> int:
    """Index of the best result; ties go to the earlier (simpler, by config order) one."""
    if not results:
        raise ValueError("no trained candidates to choose from")
    sign = 1.0 if higher_is_better else -1.0
    # NaN ranks after every number, even an infinitely bad one.
    ranked = [
        (0, -(sign * r.score), i) if r.score == r.score else (1, 0.0, i)
        for i, r in enumerate(results)
    ]
    return min(ranked)[2]


def leaderboard(results: list[TrainResult], chosen: int, higher_is_better: bool) -> str:
    order = sorted(
        range(len(results)),
        key=lambda i: -results[i].score if higher_is_better else results[i].score,
    )
    metric = results[chosen].metric
    lines = [
        f"## Candidates (validation {metric}, {'higher' if higher_is_better else 'lower'} is better)",
        "",
        f"| rank | candidate | family | params | {metric} | train rows | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, i in enumerate(order, 1):
        r = results[i]
        mark = " **(chosen)**" if i == chosen else ""
        params = ", ".join(f"{k}={v}" for k, v in sorted(r.candidate.params.items()))
        lines.append(
            f"| {rank} | {r.candidate.id}{mark} | {r.candidate.family} | {params} | {r.score:.4f} | "
            f"{r.train_rows:,} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)
