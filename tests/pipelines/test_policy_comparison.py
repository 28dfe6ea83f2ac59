"""`ctpipe simulate --policy a,b`: every policy replayed on the same stream, one comparison.

The table builder and the list parsing are pure and tested on hand-made summaries; one
small end-to-end run goes through the CLI with the real monitor and pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctpipe import policy_comparison as pcmp
from ctpipe.data import synthetic
from ctpipe.errors import ConfigError
from tests.conftest import replay_config, replay_stream, simulate_cli

PNG = b"\x89PNG\r\n\x1a\n"


def summary(
    policy: str,
    metrics: list[float | None],
    *,
    pooled: float = 0.8,
    retrains: int = 0,
    promotions: int = 0,
    failed: int | None = None,
    runs: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A Simulation.summary() as simulate writes it, small."""
    timeline = [
        {
            "batch": 4 + i,
            "start": f"2026-01-{i + 1:02d} 00:00",
            "rows": 100,
            "metric": m,
            "run": f"run-{i}" if i in runs else None,
            "blessed": (i in runs) or None,
        }
        for i, m in enumerate(metrics)
    ]
    out: dict[str, Any] = {
        "policy": policy,
        "batches": len(metrics),
        "rows": 100 * len(metrics),
        "prequential": {"accuracy": 0.7, "roc_auc": pooled},
        "retrains": retrains,
        "promotions": promotions,
        "compute_seconds": {"pipeline": 12.4, "monitor": 3.0, "predict": 0.5, "total": 20.26},
        "timeline": timeline,
    }
    if failed is not None:
        out["failed_runs"] = failed
    return out


def test_parse_policies_keeps_order_and_canonical_names() -> None:
    assert pcmp.parse_policies("never,schedule:4,auto") == ["never", "schedule:4", "auto"]
    assert pcmp.parse_policies("drift, schedule:07") == ["drift", "schedule:7"]
    assert pcmp.slug("schedule:4") == "schedule-4"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("never,sometimes", "'sometimes'"),
        ("auto,auto", "listed twice"),
        ("schedule:4,schedule:04", "listed twice"),
        ("never,,auto", "empty item"),
        ("never,", "empty item"),
        ("never,schedule:0", "schedule:K"),
    ],
)
def test_parse_policies_refuses_a_bad_list(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="--policy") as caught:
        pcmp.parse_policies(text)
    assert says in str(caught.value)


def test_build_one_row_per_policy_with_both_overall_figures() -> None:
    summaries = [
        summary("never", [0.70, 0.60, None, 0.50], pooled=0.58),
        summary(
            "schedule:2",
            [0.70, 0.80, 0.90, 0.80],
            pooled=0.77,
            retrains=2,
            promotions=1,
            failed=1,
            runs=(1, 3),
        ),
    ]
    comparison = pcmp.build(summaries, metric="roc_auc")
    never, schedule = comparison.rows
    assert [r.policy for r in comparison.rows] == ["never", "schedule:2"]
    assert never.pooled == 0.58 and never.mean_per_batch == pytest.approx(0.6)
    assert never.scored_batches == 3 and never.batches == 4
    assert never.failed_runs == 0  # summaries from before failed runs were counted
    assert schedule.mean_per_batch == pytest.approx(0.8)
    assert (schedule.retrains, schedule.promotions, schedule.failed_runs) == (2, 1, 1)
    assert schedule.compute_seconds == 20.26 and schedule.pipeline_seconds == 12.4
    assert schedule.folder == "schedule-2"
    assert comparison.read == pcmp.MEAN_PER_BATCH
    assert comparison.best() == ["schedule:2"]
    assert comparison.ratio("schedule:2", "never") == pytest.approx(0.8 / 0.6)
    assert comparison.series["schedule:2"][1].retrained
    assert comparison.series["schedule:2"][1].promoted
    assert not comparison.series["never"][1].retrained
    assert not comparison.series["schedule:2"][1].failed

    markdown = comparison.markdown()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 3  # header + one row per policy
    assert "| never | 0.5800 | 0.6000 | 0 | 0 | 0 | 20 | 12 |" in markdown
    assert "| schedule:2 | 0.7700 | 0.8000 | 2 | 1 | 1 | 20 | 12 |" in markdown
    assert "Read 'mean per batch'" in markdown and "not calibrated" in markdown
    assert "Best by that column: schedule:2." in markdown

    text = comparison.text()
    assert text.splitlines()[0].split()[:3] == ["policy", "roc_auc", "pooled"]
    assert "schedule:2" in text and "Read 'mean per batch'" in text

    document = json.loads(json.dumps(comparison.to_dict()))
    assert document["metric"] == "roc_auc" and document["read"] == "mean_per_batch"
    assert document["best"] == ["schedule:2"]
    assert [p["policy"] for p in document["policies"]] == ["never", "schedule:2"]
    assert len(document["series"]["never"]) == 4


def test_build_reads_the_metric_off_the_summary_and_pooled_for_accuracy() -> None:
    roc = pcmp.build([summary("auto", [0.7])])
    assert roc.metric == "roc_auc"
    accuracy = summary("auto", [0.7, 0.9])
    accuracy["prequential"] = {"accuracy": 0.75}
    comparison = pcmp.build([accuracy])
    assert comparison.metric == "accuracy" and comparison.read == pcmp.POOLED
    assert comparison.rows[0].pooled == 0.75
    assert "Read 'pooled' (higher is better)" in comparison.markdown()
    rmse = summary("never", [2.0, 3.0])
    rmse["prequential"] = {"rmse": 2.6}
    better = summary("auto", [1.0, 1.0])
    better["prequential"] = {"rmse": 1.1}
    comparison = pcmp.build([rmse, better])
    assert comparison.metric == "rmse" and "lower is better" in comparison.advice
    assert comparison.best() == ["auto"]


def test_ties_are_named_as_ties() -> None:
    same = [summary(p, [0.8, 0.7]) for p in ("never", "schedule:4", "auto")]
    assert pcmp.build(same).best() == ["never", "schedule:4", "auto"]
    assert "All policies tie on that column." in pcmp.build(same).text()
    two = pcmp.build([*same[:2], summary("auto", [0.6, 0.6])])
    assert "Best by that column: never, schedule:4 (tied)." in two.markdown()
    unscored = pcmp.build([summary("never", [None])])
    assert unscored.best() == [] and "Best" not in unscored.markdown()


def test_build_refuses_nothing_to_compare() -> None:
    with pytest.raises(ValueError, match="no summaries"):
        pcmp.build([])


def test_write_puts_table_json_and_plot_in_the_folder(tmp_path: Path) -> None:
    comparison = pcmp.build(
        [
            summary("never", [0.7, None, 0.6]),
            summary("auto", [0.7, 0.8, 0.85], retrains=2, promotions=1, failed=1, runs=(1, 2)),
        ]
    )
    comparison.series["auto"][2] = pcmp.Point("2026-01-03 00:00", 0.85, True, False, failed=True)
    paths = pcmp.write(comparison, tmp_path)
    assert [p.name for p in paths] == ["comparison.md", "comparison.json", "comparison.png"]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG
    assert json.loads((tmp_path / "comparison.json").read_text())["best"] == ["auto"]


@pytest.mark.parametrize(
    ("policy", "says"),
    [("never,sometimes", "'sometimes'"), ("auto,auto", "listed twice"), ("never,", "empty")],
)
def test_a_bad_policy_list_fails_before_any_work(tmp_path: Path, policy: str, says: str) -> None:
    out = tmp_path / "out"
    # The data file does not exist either: the list must be refused before it is read.
    result = simulate_cli(
        tmp_path,
        "--data", str(tmp_path / "missing.csv"), "--target", "label", "--time", "event_time",
        "--policy", policy, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--policy" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.pipeline
def test_simulate_compares_two_policies_on_one_stream(tmp_path: Path) -> None:
    data = tmp_path / "stream.csv"
    synthetic.write(replay_stream(3200), str(data))
    config = replay_config(tmp_path)
    out = tmp_path / "out"
    result = simulate_cli(
        tmp_path,
        "--data", str(data), "--target", "label", "--time", "event_time", "--batch", "400",
        "--label-delay", "1", "--policy", "never,schedule:2", "--initial-batches", "3",
        "--config", str(config), "--out", str(out),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.json",
        "comparison.md",
        "comparison.png",
        "never",
        "schedule-2",
    ]
    assert (out / "comparison.png").read_bytes()[:8] == PNG
    document = json.loads((out / "comparison.json").read_text())
    assert document["metric"] == "roc_auc" and document["read"] == "mean_per_batch"
    rows = {r["policy"]: r for r in document["policies"]}
    assert list(rows) == ["never", "schedule:2"]
    for policy, folder in (("never", "never"), ("schedule:2", "schedule-2")):
        own = json.loads((out / folder / "summary.json").read_text())
        assert (out / folder / "timeline.png").read_bytes()[:8] == PNG
        row = rows[policy]
        assert own["policy"] == policy and row["folder"] == folder
        assert row["pooled"] == pytest.approx(own["prequential"]["roc_auc"])
        scored = [b["metric"] for b in own["timeline"] if b["metric"] is not None]
        assert row["mean_per_batch"] == pytest.approx(sum(scored) / len(scored))
        assert row["batches"] == own["batches"] == 5
        assert row["retrains"] == own["retrains"]
        assert row["promotions"] == own["promotions"]
        assert row["failed_runs"] == own.get("failed_runs", 0)
        assert row["compute_seconds"] == pytest.approx(own["compute_seconds"]["total"])
        assert [p["metric"] for p in document["series"][policy]] == [
            b["metric"] for b in own["timeline"]
        ]
    assert rows["never"]["retrains"] == 0
    assert rows["schedule:2"]["retrains"] >= 1, result.stdout
    # Both start from the same first champion: the first batch is predicted alike.
    first = [document["series"][p][0]["metric"] for p in rows]
    assert first[0] == pytest.approx(first[1])

    markdown = (out / "comparison.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 3 and table[1].startswith("| never |")
    assert table[2].startswith("| schedule:2 |")
    assert "Read 'mean per batch'" in markdown
    # The table is printed at the end, after both replays.
    tail = result.stdout[result.stdout.rindex("policies on the same stream") :]
    assert "never" in tail and "schedule:2" in tail and "Read 'mean per batch'" in tail
    assert str(out / "comparison.png") in tail
