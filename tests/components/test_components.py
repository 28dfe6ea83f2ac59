"""Each KFP component, called through `python_func` on real files: the same body a pod runs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from ctpipe.components.evaluate import evaluate
from ctpipe.components.final_refit import final_refit
from ctpipe.components.infra_validate import infra_validate
from ctpipe.components.ingest import ingest
from ctpipe.components.plan import plan
from ctpipe.components.refit import refit
from ctpipe.components.register import register
from ctpipe.components.select import select
from ctpipe.components.split import split
from ctpipe.components.train import train
from ctpipe.components.validate import validate
from ctpipe.config import Config, from_dict
from ctpipe.data import synthetic
from tests.conftest import make_config


def artifact(cls, tmp_path: Path, name: str):
    return cls(name=name, uri=str(tmp_path / name))


def as_kfp(value):
    """What a dict parameter looks like after KFP carried it: every number a double."""
    if isinstance(value, dict):
        return {k: as_kfp(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_kfp(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.fixture
def staged(tmp_path: Path, small_config: Config):
    """Run ingest, validate and split once; return the artifacts."""
    config = as_kfp(small_config.to_dict())
    data = artifact(Dataset, tmp_path, "data")
    ingest.python_func(config=config, data=data)
    schema = artifact(Artifact, tmp_path, "schema")
    validate.python_func(
        config=config, data=data, schema=schema, report=artifact(Markdown, tmp_path, "report")
    )
    slices = {
        name: artifact(Dataset, tmp_path, name)
        for name in ("train", "validation", "test", "window", "reference")
    }
    profile = artifact(Artifact, tmp_path, "profile")
    report = artifact(Markdown, tmp_path, "split.md")
    split.python_func(
        config=config, data=data, schema=schema, profile=profile, report=report, **slices
    )
    return {
        "config": config,
        "data": data,
        "schema": schema,
        "profile": profile,
        "split_report": report,
        **slices,
    }


def test_ingest_writes_parquet_with_lineage_metadata(tmp_path: Path, small_config: Config) -> None:
    data = artifact(Dataset, tmp_path, "data")
    message = ingest.python_func(config=small_config.to_dict(), data=data)
    table = pq.read_table(data.path)
    assert table.num_rows == 3000 == data.metadata["rows"]
    assert data.metadata["content_hash"].startswith("sha256:")
    assert "label" in data.metadata["columns"] and "_ctpipe_file" not in data.metadata["columns"]
    assert "3,000 rows" in message


def test_validate_infers_v1_then_reuses_it(staged, tmp_path: Path) -> None:
    schema = json.loads(Path(staged["schema"].path).read_text())
    assert schema["version"] == 1 and staged["schema"].metadata["version"] == 1
    again = artifact(Artifact, tmp_path, "schema2")
    summary = validate.python_func(
        config=staged["config"],
        data=staged["data"],
        schema=again,
        report=artifact(Markdown, tmp_path, "r2"),
    )
    assert "passed against schema v1" in summary and "inferred now" not in summary


def test_validate_stops_with_listed_violations(
    tmp_path: Path, small_config: Config, capsys
) -> None:
    config = small_config.to_dict()
    first = artifact(Dataset, tmp_path, "first")
    ingest.python_func(config=config, data=first)
    validate.python_func(
        config=config,
        data=first,
        schema=artifact(Artifact, tmp_path, "s1"),
        report=artifact(Markdown, tmp_path, "r1"),
    )
    bad_rows = synthetic.generate(500, 3).drop_columns(["num_3"])
    bad_file = tmp_path / "bad.csv"
    synthetic.write(bad_rows, str(bad_file))
    bad_config = small_config.replace(data=small_config.data.__class__(uri=str(bad_file))).to_dict()
    bad = artifact(Dataset, tmp_path, "bad")
    ingest.python_func(config=bad_config, data=bad)
    with pytest.raises(SystemExit) as stopped:
        validate.python_func(
            config=bad_config,
            data=bad,
            schema=artifact(Artifact, tmp_path, "s2"),
            report=artifact(Markdown, tmp_path, "r2"),
        )
    assert stopped.value.code != 0
    printed = capsys.readouterr().out
    assert (
        "[ctpipe:validate] ERROR" in printed
        and "'num_3'" in printed
        and "missing_column" in printed
    )


def test_split_profiles_the_rows_the_model_learns_from(staged) -> None:
    from ctpipe import drift

    profile = drift.ReferenceProfile.from_bytes(Path(staged["profile"].path).read_bytes())
    # an expanding window: every labelled row, the final refit's rows
    assert profile.rows == staged["window"].metadata["rows"] == 3000
    assert profile.calibration is not None  # thresholds from the rows' own variation
    assert "window expanding" in Path(staged["split_report"].path).read_text()
    assert profile.kinds["num_0"] == "numeric" and profile.kinds["region"] == "categorical"
    sample = pq.read_table(staged["reference"].path)
    assert 0 < sample.num_rows <= 5000 and "label" not in sample.column_names


def test_drift_report_without_a_champion_says_so(staged, tmp_path: Path) -> None:
    from kfp.dsl import HTML

    from ctpipe.components.drift_report import drift_report
    from ctpipe.drift import profile as reference

    champion = artifact(Artifact, tmp_path, "champion")
    report = artifact(HTML, tmp_path, "drift.html")

    def report_on(version: str | None, note: str) -> str:
        reference.write_snapshot(champion.path, version, None, note)  # as evaluate does
        return drift_report.python_func(
            config=staged["config"],
            data=staged["data"],
            schema=staged["schema"],
            champion=champion,
            report=report,
        )

    # A first run: the page is the new data's own profile, headed as such.
    assert "no champion yet" in report_on(None, "no champion yet")
    first = Path(report.path).read_text()
    assert "No drift report" not in first
    assert "<title>ctpipe data profile: " in first
    assert "first run: no champion to compare against" in first
    assert "none yet (no champion)" in first and "num_0" in first
    # A champion whose sample could not be fetched: a warning and a page saying why.
    summary = report_on("3", "no reference data in run 42")
    assert summary == "warning: no drift report (no reference data in run 42)"
    assert "no reference data in run 42" in Path(report.path).read_text()


def test_split_slices_are_time_ordered(staged) -> None:
    times = {
        n: pq.read_table(staged[n].path).column("event_time")
        for n in ("train", "validation", "test")
    }
    assert max(times["train"].to_pylist()) < min(times["validation"].to_pylist())
    assert max(times["validation"].to_pylist()) < min(times["test"].to_pylist())
    assert sum(staged[n].metadata["rows"] for n in ("train", "validation", "test")) == 3000


def test_plan_returns_one_dict_per_grid_point(small_config: Config) -> None:
    candidates = plan.python_func(config=small_config.to_dict())
    assert [c["family"] for c in candidates] == [
        "linear",
        "random_forest",
        "hist_gradient_boosting",
    ]


def _train_all(staged, tmp_path: Path) -> list[Model]:
    models = []
    for i, candidate in enumerate(plan.python_func(config=staged["config"])):
        candidate = as_kfp(candidate)
        model = artifact(Model, tmp_path, f"model{i}")
        train.python_func(
            config=staged["config"],
            candidate=candidate,
            schema=staged["schema"],
            train=staged["train"],
            validation=staged["validation"],
            model=model,
            metrics=artifact(Metrics, tmp_path, f"metrics{i}"),
        )
        models.append(model)
    return models


def test_train_select_evaluate_register(staged, tmp_path: Path, capsys) -> None:
    models = _train_all(staged, tmp_path)
    assert all(0.5 < m.metadata["validation_score"] <= 1.0 for m in models)
    best = artifact(Model, tmp_path, "best")
    chosen = select.python_func(
        config=staged["config"],
        models=models,
        best=best,
        leaderboard=artifact(Markdown, tmp_path, "board"),
    )
    top = max(models, key=lambda m: m.metadata["validation_score"])
    assert chosen == top.metadata["candidate"] == best.metadata["candidate"]
    assert Path(best.path).read_bytes() == Path(top.path).read_bytes()

    # The gate judges the chosen candidate fitted again on train + validation.
    challenger = artifact(Model, tmp_path, "challenger")
    said = refit.python_func(
        config=staged["config"],
        best=best,
        schema=staged["schema"],
        train=staged["train"],
        validation=staged["validation"],
        model=challenger,
    )
    learned = staged["train"].metadata["rows"] + staged["validation"].metadata["rows"]
    assert challenger.metadata["fitted_rows"] == learned and "train+validation" in said
    assert challenger.metadata["fitted_end"] == staged["validation"].metadata["end"]

    evaluation = artifact(Artifact, tmp_path, "evaluation")
    metrics = artifact(Metrics, tmp_path, "test_metrics")
    classification = artifact(ClassificationMetrics, tmp_path, "classification")
    blessed = evaluate.python_func(
        config=staged["config"],
        model=challenger,
        test=staged["test"],
        schema=staged["schema"],
        metrics=metrics,
        classification=classification,
        report=artifact(Markdown, tmp_path, "gate"),
        evaluation=evaluation,
        champion=artifact(Artifact, tmp_path, "champion-before"),
    )
    assert blessed is True  # no champion yet, thresholds met
    assert 0.6 < metrics.metadata["test_roc_auc"] <= 1.0
    assert (
        "confusionMatrix" in classification.metadata
        and "confidenceMetrics" in classification.metadata
    )

    # After the blessing: refit on the whole window, test slice included, kept when it
    # agrees with the blessed model on the test slice.
    final = artifact(Model, tmp_path, "final")
    final_refit.python_func(
        config=staged["config"],
        blessed=challenger,
        schema=staged["schema"],
        window=staged["window"],
        test=staged["test"],
        model=final,
    )
    record = json.loads(final.metadata["final_refit"])
    assert record["applied"] is True and record["value"] <= record["tolerance"]
    assert final.metadata["fitted_rows"] == 3000
    assert final.metadata["fitted_end"] == staged["test"].metadata["end"]

    # infra-validate serves the challenger from the directory that register then logs.
    served = artifact(Model, tmp_path, "served")
    said = infra_validate.python_func(
        config=staged["config"],
        model=final,
        test=staged["test"],
        schema=staged["schema"],
        served=served,
    )
    assert "identically" in said
    assert served.metadata["candidate"] == best.metadata["candidate"]
    assert served.metadata["fitted_rows"] == 3000
    assert json.loads(served.metadata["classes"]) == [0, 1]
    assert (Path(served.path) / "MLmodel").is_file()

    registered = register.python_func(
        config=staged["config"],
        served=served,
        schema=staged["schema"],
        evaluation=evaluation,
        profile=staged["profile"],
        reference=staged["reference"],
        data=staged["data"],
        kfp_run_id="run-123",
        kfp_run_name="unit",
        reason="manual",
    )
    assert registered.version == "1"
    assert registered.sha256 == served.metadata["sha256"], "registered bytes differ from served"
    from ctpipe import registry

    fit_tag = json.loads(
        registry.client(from_dict(staged["config"]))
        .get_model_version(staged["config"]["model_name"], "1")
        .tags[registry.TAG_FIT]
    )
    # the registered model saw the test slice, and the agreement check is on record
    assert fit_tag["end"] == staged["test"].metadata["end"] and fit_tag["rows"] == 3000
    assert fit_tag["final_refit"] == record

    # Deploy renders from what register handed on: no MLflow lookup in that step.
    from ctpipe.components.deploy import deploy

    manifest = artifact(Artifact, tmp_path, "isvc.yaml")
    said = deploy.python_func(
        config=staged["config"],
        version=registered.version,
        storage_uri=registered.storage_uri,
        sha256=registered.sha256,
        alias=registered.alias,
        manifest=manifest,
    )
    assert registered.alias == "champion"  # the first model: nothing to roll out against
    assert "v1" in said and manifest.metadata["version"] == "1"
    rendered = Path(manifest.path).read_text()
    assert f"models:/{staged['config']['model_name']}/1" in rendered  # a local store: from MLflow

    # The next evaluation judges against v1 and hands its training sample to the drift
    # report, which is evidently's page comparing it with the new data.
    from kfp.dsl import HTML

    from ctpipe.components.drift_report import drift_report

    champion = artifact(Artifact, tmp_path, "champion")
    evaluate.python_func(
        config=staged["config"],
        model=best,
        test=staged["test"],
        schema=staged["schema"],
        metrics=artifact(Metrics, tmp_path, "test_metrics-2"),
        classification=artifact(ClassificationMetrics, tmp_path, "classification-2"),
        report=artifact(Markdown, tmp_path, "gate-2"),
        evaluation=artifact(Artifact, tmp_path, "evaluation-2"),
        champion=champion,
    )
    assert json.loads(Path(champion.path, "champion.json").read_text())["version"] == "1"
    assert pq.read_table(Path(champion.path, "sample.parquet")).num_rows > 0
    page = artifact(HTML, tmp_path, "drift.html")
    summary = drift_report.python_func(
        config=staged["config"],
        data=staged["data"],
        schema=staged["schema"],
        champion=champion,
        report=page,
    )
    assert "champion v1" in summary
    html = Path(page.path).read_text()
    assert "<html" in html.lower() and "num_0" in html
    model = staged["config"]["model_name"]
    assert f"<title>ctpipe drift report: {model} v1</title>" in html
    assert "v1 (the champion compared against)" in html
    assert "time range not recorded" not in html  # both windows dated: v1's fit record
    assert "the new data this run trains on; " in html
    assert "not checked" in html  # the pipeline step runs no drift check of its own

    # Fail closed: a champion that cannot score the test slice (its stored pickle no longer
    # matches its SHA-256) stops the evaluation; it is never a thresholds-only pass.
    [stored] = [
        p
        for p in Path(staged["config"]["state_dir"]).rglob("model.pkl")
        if "mlruns" in str(p) or "artifacts" in str(p)
    ]
    stored.write_bytes(stored.read_bytes() + b"tampered")
    refused = artifact(Artifact, tmp_path, "evaluation-3")
    with pytest.raises(SystemExit) as stopped:
        evaluate.python_func(
            config=staged["config"],
            model=best,
            test=staged["test"],
            schema=staged["schema"],
            metrics=artifact(Metrics, tmp_path, "test_metrics-3"),
            classification=artifact(ClassificationMetrics, tmp_path, "classification-3"),
            report=artifact(Markdown, tmp_path, "gate-3"),
            evaluation=refused,
            champion=artifact(Artifact, tmp_path, "champion-3"),
        )
    assert stopped.value.code != 0
    assert not Path(refused.path).exists()  # no decision for register to act on
    assert "champion v1 could not score the test slice" in capsys.readouterr().out


def test_components_fail_cleanly_on_a_bad_config(tmp_path: Path, capsys) -> None:
    config = make_config(tmp_path).to_dict()
    config["gate"]["margn"] = 0.1
    with pytest.raises(SystemExit):
        ingest.python_func(config=config, data=artifact(Dataset, tmp_path, "data"))
    assert "gate.margn: unknown key; did you mean 'margin'?" in capsys.readouterr().out
