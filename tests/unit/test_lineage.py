"""Lineage on what register records: the run's dataset input (mlflow.data) and the model
version's description (real sqlite MLflow)."""

from __future__ import annotations

import json
import types

from ctpipe import registry
from ctpipe.config import Config
from ctpipe.evaluation import Comparison, Evaluation, GateDecision
from ctpipe.pipelines.in_process import RUN
from ctpipe.registry import Challenger, DatasetInput
from ctpipe.training.search import Candidate, TrainResult


def test_the_registered_run_records_its_training_data(champion_config: Config) -> None:
    ref = registry.champion(champion_config)
    assert ref is not None and ref.run_id
    run = registry.client(champion_config).get_run(ref.run_id)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    content_hash = ref.tags[registry.TAG_DATASET_HASH]
    assert content_hash.startswith("sha256:")
    assert dataset.digest == content_hash.removeprefix("sha256:")[:36]
    assert tags[registry.INPUT_TAG_HASH] == content_hash
    assert tags["mlflow.data.context"] == "training"
    assert json.loads(dataset.source)["uri"] == run.data.tags[registry.TAG_DATASET_URI]
    assert tags[registry.INPUT_TAG_ROWS] == run.data.tags[registry.TAG_DATASET_ROWS]
    assert tags[registry.INPUT_TAG_TIME_MIN] < tags[registry.INPUT_TAG_TIME_MAX]
    assert tags[registry.INPUT_TAG_TIME_MAX] == ref.tags[registry.TAG_DATA_TIME_MAX]
    window = json.loads(tags[registry.INPUT_TAG_WINDOW])
    assert window["rows"] > 0 and window["start"] <= window["end"]


def test_the_version_description_says_what_it_is_and_why(champion_config: Config) -> None:
    ref = registry.champion(champion_config)
    assert ref is not None
    found = registry.client(champion_config).get_model_version(ref.name, ref.version)
    text = found.description
    family = champion_config.search.candidates[0].family
    assert f"**{family}**" in text
    assert f"KFP run {RUN} (run id {RUN}); trigger: {RUN}" in text
    assert "Test roc_auc: 0." in text
    assert "no champion to compare with (first champion)" in text
    assert "threshold roc_auc" in text
    assert "Promoted to 'champion': the first champion." in text
    assert ref.tags[registry.TAG_DATASET_HASH][:19] in text


def _challenger(comparison: Comparison | None, champion_error: str | None = None) -> Challenger:
    decision = GateDecision(
        True,
        ("threshold roc_auc 0.8100 >= 0.6 ok", "vs champion: CI lower bound -0.0100 >= -margin"),
        (),
        comparison,
    )
    evaluation = Evaluation(
        "classification",
        1234,
        "roc_auc",
        {"roc_auc": 0.81, "accuracy": 0.7},
        {"roc_auc": 0.8} if comparison else None,
        decision,
        champion_error=champion_error,
    )
    trained = TrainResult(
        Candidate("hist_gradient_boosting-2", "hist_gradient_boosting", {}),
        "roc_auc",
        0.83,
        900,
        300,
        1.0,
    )
    saved = registry.SavedModel("/nowhere", "0" * 64, (0, 1), None)
    dataset = {
        "source": "s3://bucket/data/",
        "rows": 5000,
        "content_hash": "sha256:" + "ab" * 32,
        "time_min": "2026-01-01T00:00:00+00:00",
        "time_max": "2026-02-01T00:00:00+00:00",
    }
    schema: types.SimpleNamespace = types.SimpleNamespace(version=4)
    return Challenger(
        saved,
        trained,
        evaluation,
        schema,
        dataset,
        {"rows": 900},
        "run-7",
        "ct-nightly",
        "drift: psi 0.31",  # type: ignore[arg-type]
    )


def test_the_description_states_the_comparison_with_the_champion() -> None:
    comparison = Comparison("roc_auc", 0.81, 0.8, 0.01, -0.01, 0.03, 0.95, 200, "3")
    text = _challenger(comparison).description("Promoted to 'champion', replacing v3.")
    assert text.startswith("**hist_gradient_boosting** model, candidate `hist_gradient_boosting-2`")
    assert "KFP run ct-nightly (run id run-7); trigger: drift: psi 0.31." in text
    assert "Test roc_auc: 0.8100 on 1,234 newest rows (validation roc_auc 0.8300)" in text
    assert (
        "Gate vs champion v3: roc_auc 0.8100 vs 0.8000, improvement +0.0100, "
        "95% interval [-0.0100, +0.0300] (200 paired bootstrap resamples)."
    ) in text
    assert "  - vs champion: CI lower bound -0.0100 >= -margin" in text
    assert (
        "Data: 5000 rows from s3://bucket/data/, 2026-01-01T00:00:00+00:00 to "
        "2026-02-01T00:00:00+00:00 (sha256:abababababab); schema v4."
    ) in text
    assert text.endswith("- Promoted to 'champion', replacing v3.")


def test_the_description_flags_a_gate_that_could_not_compare() -> None:
    text = _challenger(None, champion_error="champion v3 failed to load").description()
    assert "NOT compared with the champion (champion v3 failed to load)" in text


def test_dataset_input_from_ingest_metadata() -> None:
    found = DatasetInput.from_metadata(
        {"source": "/data/x.parquet", "rows": 10, "content_hash": "sha256:" + "c" * 64},
        {"rows": 8, "start": "a", "end": "b", "applied": True},
    )
    assert found.digest == "c" * 36
    assert found.window == {"rows": 8, "start": "a", "end": "b"}
    assert found.input_tags() == {
        registry.INPUT_TAG_HASH: "sha256:" + "c" * 64,
        registry.INPUT_TAG_ROWS: "10",
        registry.INPUT_TAG_WINDOW: '{"end": "b", "rows": 8, "start": "a"}',
    }
