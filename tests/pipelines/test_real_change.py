"""The loop through real change, end to end: each stream replays under `never` and `auto`
with the default validation, evolution, policy and rollout settings (only the candidate
grid is small, and the canary share sized to the batches). Every replay must reach the
end, the retrain that a change used to break must happen and be recorded with its schema
diff, and `auto` must do at least as well as `never` over the whole replay.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ctpipe import registry
from ctpipe.data import scenarios, synthetic
from ctpipe.data.schema import SchemaStore
from tests.conftest import replay_config, simulate_cli

pytestmark = pytest.mark.pipeline

SEARCH = (
    "    - {family: linear, params: {C: 1.0}}\n"
    "    - {family: hist_gradient_boosting, params: {max_iter: 60}}\n"
)

# stream -> (target, batch rows, initial batches, schema change the retrain must record)
CASES: dict[str, tuple[str, int, int, str | None]] = {
    "constant_comes_alive": ("label", 300, 3, "rate: came alive: constant 0.0035"),
    "new_category": ("label", 300, 3, "channel: new category 'chat'"),
    "seasonal_month": ("label", 300, 3, "month: new categor"),
    "label_prior_shift": ("label", 300, 3, None),
    "seattle_weather": ("wet", 90, 4, None),
}

# A pure prior shift leaves a ranking metric where it was (scenarios.label_prior_shift):
# what retraining must win there is accuracy.
ACCURACY_CASES = {"label_prior_shift"}


def _write_stream(name: str, path: Path) -> None:
    if name == "seattle_weather":
        pytest.importorskip("vega_datasets")
        scenarios.write_seattle_weather(str(path))
    else:
        synthetic.write(scenarios.SCENARIOS[name](6000, 0), str(path))


def _replay(name: str, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    target, batch, initial, _ = CASES[name]
    data = tmp_path / f"{name}.csv"
    _write_stream(name, data)
    config = replay_config(tmp_path, target, SEARCH)
    # Each stream changes one column of five, and that change must start the retrain it
    # used to break (these replays test validation and schema evolution, not the
    # triggers): one drifted column is dataset drift here (share 0.2), thresholds are the
    # fixed ones (calibrated, a new month is just the season), and data drift acts on its
    # own (labels never outrank it) whether or not the champion's metric fell.
    # The rollout is the default progressive one, sized to batches of a few hundred rows:
    # at the default 10% a canary sees about 30 labelled rows a batch, too few for an
    # interval to clear the margin before the timeout, and no challenger would ever serve.
    # The streams are 20 batches long, so a change at the middle leaves time to prove one.
    config.write_text(
        config.read_text() + "monitor:\n  drift:\n    share: 0.2\n    thresholds: fixed\n"
        "  triggers:\n    label_horizon: null\n"
        "deploy:\n  canary_traffic_percent: 50\n"
    )
    out = tmp_path / "out"
    result = simulate_cli(
        tmp_path,
        "--data", str(data), "--target", target, "--time", "event_time", "--batch", str(batch),
        "--label-delay", "1", "--initial-batches", str(initial), "--policy", "never,auto",
        "--config", str(config), "--out", str(out),
        timeout=1200,
    )  # fmt: skip
    return out, result


def _recorded_changes(state_dir: Path, model: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Every stored schema version's changes, and the schema diffs tagged on model versions."""
    store = SchemaStore(str(state_dir), model)
    stored = [change for v in store.versions() for change in store.load(v).changes]
    client = registry.client_for(registry.tracking_uri(str(state_dir)))
    tagged = [
        json.loads(v.tags.get(registry.TAG_SCHEMA_CHANGES) or "{}")
        for v in client.search_model_versions(f"name='{model}'")
    ]
    return stored, [t for t in tagged if t]


@pytest.mark.parametrize("name", list(CASES))
def test_the_loop_keeps_going_through_real_change(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The replay's MLflow is the sqlite store under its own state_dir, whatever an earlier
    # test left in this process's environment.
    monkeypatch.delenv(registry.TRACKING_ENV, raising=False)
    out, result = _replay(name, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {row["policy"]: row for row in comparison["policies"]}
    never, auto = rows["never"], rows["auto"]
    summary = json.loads((out / "auto" / "summary.json").read_text())
    # Both replays reach the end of the stream, and every run auto started finished.
    assert never["batches"] == auto["batches"] == summary["batches"] > 5
    assert auto["failed_runs"] == 0, [b.get("error") for b in summary["timeline"]]
    assert auto["retrains"] >= 1, result.stdout[-3000:]
    # Over the whole replay, retraining when the monitor says so is no worse than never.
    if name in ACCURACY_CASES:
        accuracy = {
            p: json.loads((out / p / "summary.json").read_text())["prequential"]["accuracy"]
            for p in ("never", "auto")
        }
        assert accuracy["auto"] >= accuracy["never"], accuracy
    else:
        column = comparison["read"]
        assert auto[column] >= never[column], (auto, never)

    expected = CASES[name][3]
    if expected is None:
        return
    state = out / "auto" / "state"
    model = next((state / "schemas").iterdir()).name
    stored, tagged = _recorded_changes(state, model)
    assert any(c.startswith(expected) for c in stored), stored
    assert any(any(c.startswith(expected) for c in t["changes"]) for t in tagged), tagged
    assert all(t["to"] == t["from"] + 1 for t in tagged), tagged
