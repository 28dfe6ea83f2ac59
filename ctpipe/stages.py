"""One function per pipeline stage: paths and a Config in, a result dataclass out.

KFP components are thin wrappers around these, and ctpipe.pipelines.in_process calls
them directly in one process. Imports sit inside the functions on purpose: every KFP step
is a fresh process, and a step should not pay for scikit-learn or MLflow unless it uses
them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctpipe.config import Config

if TYPE_CHECKING:
    from ctpipe.data.ingest import IngestResult
    from ctpipe.data.schema import Schema
    from ctpipe.data.split import SplitResult
    from ctpipe.data.validation import ValidationResult
    from ctpipe.deploy import ModelLocation
    from ctpipe.evaluation import Evaluation
    from ctpipe.infra_validation import InfraResult
    from ctpipe.registry import ModelRef, Registration
    from ctpipe.training.search import TrainResult


def ingest(config: Config, data_out: str) -> IngestResult:
    import ctpipe.data.ingest

    return ctpipe.data.ingest.ingest(config, data_out)


def validate(
    config: Config, data_path: str, schema_out: str, report_out: str, run_id: str = ""
) -> ValidationResult:
    """Check the data against the newest stored schema (inferring v1 on first use).

    When the data differs from it only in distribution, the next schema version is
    proposed: under `validation.evolution: auto` it is the schema this run uses (written
    to `schema_out`; `register` stores it), under `manual` the run fails and the change
    waits for `ctpipe schema accept --run <run_id>`. Writes a Markdown report; the caller
    decides whether to stop.
    """
    import dataclasses

    from ctpipe.data import tables, validation
    from ctpipe.data.ingest import content_hash
    from ctpipe.data.schema import SchemaStore, config_fingerprint, evolve, infer

    table = tables.read(data_path)
    store = SchemaStore(config.state_dir, config.model_name)
    schema = store.latest()
    created = False
    notes = []
    fingerprint = config_fingerprint(config)
    if schema is None or schema.config_fingerprint != fingerprint:
        if schema is not None:
            notes.append(
                f"the config's columns or feature overrides changed since schema v{schema.version}"
            )
        inferred = infer(table, config, source_hash=content_hash(table))
        versions = store.versions()
        schema = dataclasses.replace(inferred, version=(versions[-1] if versions else 0) + 1)
        created = True
    result = validation.check(
        table,
        schema,
        config.validation,
        constraints=config.features.constraints,
        schema_created=created,
    )
    if created and result.passed:
        # Stored only once the data passed: a first run on broken data (inf, 1e308) must not
        # leave a schema whose ranges were inferred from it.
        schema = store.save_next(schema)
    used = schema
    proposed = evolve(schema, table) if result.passed and not created else None
    if proposed is not None:
        digest = content_hash(table)
        proposed = dataclasses.replace(proposed, source_hash=digest)
        result = dataclasses.replace(
            result, evolved=proposed.changes, evolved_version=proposed.version
        )
        if config.validation.evolution == "auto":
            used = proposed
            notes.append(
                f"schema v{proposed.version} is stored when this run's challenger is registered"
            )
        else:
            pending = store.propose(proposed, run_id or digest.split(":")[-1][:16], data_path)
            result = dataclasses.replace(
                result,
                violations=(*result.violations, validation.schema_change(pending, table.num_rows)),
            )
    Path(schema_out).write_text(used.to_json())
    report = [result.markdown(), "", *(f"Note: {n}" for n in notes), "", used.markdown()]
    Path(report_out).write_text("\n".join(report))
    return result


def split(
    config: Config,
    data_path: str,
    schema_path: str,
    train_out: str,
    validation_out: str,
    test_out: str,
    profile_out: str,
    sample_out: str,
    window_out: str | None = None,
    report_out: str | None = None,
) -> SplitResult:
    """Cut the data in time order, within train.window (an auto window is chosen by a
    backtest first, see ctpipe.training.backtest); profile the rows the model learns from
    for drift checks later. `window_out`: the final refit's rows; `report_out`: Markdown
    on the split and how the window was chosen."""
    import ctpipe.data.split
    from ctpipe import options
    from ctpipe.data import tables
    from ctpipe.data.split import WINDOW, first_test_row, labelled_in_order, times_of
    from ctpipe.drift import profile

    table = tables.read(data_path)
    schema = load_schema(schema_path)
    spec = final_spec = options.parse_window(config.train.window)
    backtests = []
    if spec.kind == options.AUTO:
        from ctpipe.training.backtest import choose
        from ctpipe.training.families import training_threads

        ordered, _ = labelled_in_order(table, config)
        history = ordered.slice(0, first_test_row(times_of(ordered, config), config))
        gated = choose(history, schema, config, training_threads())
        final = choose(ordered, schema, config, training_threads())
        backtests = [
            (gated, "Training window", "before the test slice"),
            (final, "Final refit window", "including the test slice"),
        ]
        spec, final_spec = options.parse_window(gated.chosen), options.parse_window(final.chosen)
    slices, result = ctpipe.data.split.split(table, config, spec, final_spec)
    for name, path in (("train", train_out), ("validation", validation_out), ("test", test_out)):
        tables.write(slices[name], path)
    if window_out is not None:
        tables.write(slices[WINDOW], window_out)
    # The reference is what the final model learns from (the whole window): a final refit
    # saw the test slice too, and without one the difference is the newest few rows.
    profile.write(slices[WINDOW], schema, profile_out, sample_out, config=config)
    if report_out is not None:
        parts = [f"# Split\n\n{result.describe()}"]
        parts += [b.markdown(title, rows) for b, title, rows in backtests]
        Path(report_out).write_text("\n\n".join(parts) + "\n")
    if not backtests:
        return result
    return dataclasses.replace(result, backtest=backtests[0][0].summary())


def drift_report(
    config: Config, data_path: str, schema_path: str, champion_path: str, report_out: str
) -> str:
    """An evidently HTML report: the champion's training sample against the new data.

    `champion_path` is the snapshot evaluate wrote of the champion it judged against, so
    the report and the gate speak of the same model and this step needs no MLflow. For
    people only; nothing downstream reads it, so it never decides a run's outcome.
    """
    from ctpipe.drift import report

    def no_report(page: str, summary: str) -> str:
        Path(report_out).write_text(report.placeholder(page))
        return summary

    if config.monitor.report_rows == 0:
        return no_report(
            "Drift reports are off (monitor.report_rows: 0).",
            "drift reports are off (monitor.report_rows: 0)",
        )
    from ctpipe.data import tables
    from ctpipe.drift import profile

    champion = profile.read_snapshot(champion_path)
    if champion.version is not None and champion.sample is None:
        return no_report(
            f"No drift report: {champion.note}", f"warning: no drift report ({champion.note})"
        )
    schema = load_schema(schema_path)
    kinds = {
        **dict.fromkeys(schema.numeric_features, profile.NUMERIC),
        **dict.fromkeys(schema.categorical_features, profile.CATEGORICAL),
    }
    try:
        data = tables.read(data_path)
        current = report.Window.of("the new data this run trains on", data, config.timestamp)
        if champion.version is None or champion.sample is None:
            # A first run: nothing to compare with, so the page is the data's own profile.
            html = report.profile_page(
                data,
                kinds,
                config.monitor.report_rows,
                context=report.PageContext(
                    config.model_name,
                    None,
                    report.Window("none: no champion yet"),
                    current,
                    note=report.FIRST_RUN_NOTE,
                ),
            )
            Path(report_out).write_text(html)
            return "no champion yet: the drift report is the new data's own profile"
        reference = report.Window.fitted(
            f"champion v{champion.version}'s training data (a sample kept when it was trained)",
            champion.fit,
            report.sample_rows(champion.sample),
        )
        html = report.page(
            champion.sample,
            data,
            kinds,
            config.monitor.drift,
            config.monitor.report_rows,
            context=report.PageContext(config.model_name, champion.version, reference, current),
        )
    except Exception as exc:  # a report must never fail the run that a gate already judged
        return no_report(
            f"The drift report could not be built: {exc}", f"warning: no drift report ({exc})"
        )
    Path(report_out).write_text(html)
    return f"drift report: champion v{champion.version}'s training sample vs the new data"


def plan(config: Config) -> list[dict[str, Any]]:
    from ctpipe.training.search import expand

    return [c.to_dict() for c in expand(config)]


MODEL_SHA256 = "model_sha256"  # metadata key: the SHA-256 of a step's model file


def dump_step_model(model: Any, path: str) -> str:
    """Write a step's model for the next step; returns the SHA-256 that goes in the output's
    metadata (as MODEL_SHA256), which `load_step_model` checks."""
    import joblib

    from ctpipe.registry import file_sha256

    joblib.dump(model, path)
    return file_sha256(path)


def verify_step_model(path: str, metadata: dict[str, Any]) -> None:
    """Raise IntegrityError unless the file is the one its step recorded: an artifact store
    that anyone in the namespace can write must not hand a step a pickle to run."""
    from ctpipe.errors import IntegrityError
    from ctpipe.registry import file_sha256

    expected = str(metadata.get(MODEL_SHA256) or "")
    if not expected:
        raise IntegrityError(
            f"{path}: the step that wrote this model recorded no {MODEL_SHA256} in its metadata; "
            "refusing to load an unchecked pickle"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: SHA-256 {actual[:16]}…, but the step that wrote it recorded {expected[:16]}…; "
            "the model was changed between steps. Refusing to load it."
        )


def load_step_model(path: str, metadata: dict[str, Any]) -> Any:
    """A model another step wrote, once its SHA-256 matches that step's record."""
    import joblib

    verify_step_model(path, metadata)
    return joblib.load(path)


def load_schema(path: str) -> Schema:
    from ctpipe.data.schema import Schema

    return Schema.from_json(Path(path).read_text())


def load_frame(path: str, schema: Schema, extra: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """Features (a pandas DataFrame, as the model sees them) and labels of a slice."""
    from ctpipe.data import tables
    from ctpipe.training.fit import features_and_labels

    available = set(tables.read_schema(path).names)
    wanted = [c for c in dict.fromkeys([*schema.feature_names, *extra]) if c in available]
    return features_and_labels(tables.read(path, columns=[*wanted, schema.target]), schema, extra)


def train(
    config: Config,
    candidate: dict[str, Any],
    schema_path: str,
    train_path: str,
    validation_path: str,
    model_out: str,
) -> TrainResult:
    """Fit one candidate on the train slice and score it on validation (selection only:
    the chosen one is fitted again on both, see `refit`)."""

    from ctpipe.data import tables
    from ctpipe.training import fit
    from ctpipe.training.families import training_threads
    from ctpipe.training.search import Candidate, TrainResult

    spec = Candidate.from_dict(candidate)
    schema = load_schema(schema_path)
    validation = tables.read(validation_path)
    fitted = fit.fit(spec, tables.read(train_path), schema, config, training_threads())
    score = fit.score(fitted.model, validation, schema, config, config.search_metric)
    return TrainResult(
        spec,
        config.search_metric,
        score,
        fitted.rows,
        validation.num_rows,
        fitted.seconds,
        dump_step_model(fitted.model, model_out),
    )


@dataclass(frozen=True)
class Refit:
    """The chosen candidate fitted again on more rows; `metadata()` goes on the model."""

    trained: TrainResult  # the selection record (validation score, candidate)
    rows: int
    start: str | None
    end: str | None
    slices: str  # which slices it learned from, e.g. "train+validation"
    seconds: float
    sha256: str  # of the model file this step wrote
    final: dict[str, Any] | None = None  # the final refit's record (see final_refit)

    def metadata(self) -> dict[str, Any]:
        meta = {
            **self.trained.metadata(),
            "model_sha256": self.sha256,
            "fitted_rows": self.rows,
            "fitted_start": self.start or "",
            "fitted_end": self.end or "",
            "fitted_slices": self.slices,
        }
        if self.final is not None:
            meta["final_refit"] = json.dumps(self.final, sort_keys=True)
        return meta

    def describe(self) -> str:
        def minute(stamp: str | None) -> str:
            return (stamp or "?")[:16].replace("T", " ")

        return (
            f"{self.trained.candidate.id} fitted on {self.slices}: {self.rows:,} rows "
            f"({minute(self.start)} to {minute(self.end)}, {self.seconds:.1f}s)"
        )


def refit(
    config: Config,
    model_metadata: dict[str, Any],
    schema_path: str,
    train_path: str,
    validation_path: str,
    model_out: str,
) -> Refit:
    """Fit the chosen candidate again on train + validation: the newest rows before the
    test slice are the ones that describe the world as it is now, and selection is done.
    The gate then judges this model on the test slice, which neither fit has seen."""
    import pyarrow as pa

    from ctpipe.data import tables
    from ctpipe.training import fit
    from ctpipe.training.families import training_threads
    from ctpipe.training.search import TrainResult

    trained = TrainResult.from_metadata(model_metadata)
    rows = pa.concat_tables(
        [tables.read(train_path), tables.read(validation_path)], promote_options="permissive"
    )
    fitted = fit.fit(trained.candidate, rows, load_schema(schema_path), config, training_threads())
    sha256 = dump_step_model(fitted.model, model_out)
    return Refit(
        trained, fitted.rows, fitted.start, fitted.end, "train+validation", fitted.seconds, sha256
    )


def final_refit(
    config: Config,
    blessed_path: str,
    blessed_metadata: dict[str, Any],
    schema_path: str,
    window_path: str,
    test_path: str,
    model_out: str,
) -> Refit:
    """After a blessing: fit the blessed candidate on every row of the window, test slice
    included, and keep that model only when its predictions on the test slice agree with
    the blessed model's within train.final_refit_tolerance (a changed label share, or the
    mean absolute difference over the label's standard deviation). Otherwise, or with
    train.final_refit off, the blessed model goes on unchanged. Either way the record
    says which, with the figures (`final_refit` in the model's metadata).

    The gate cannot judge a model on rows it learned from; the agreement check is what
    vouches that the refit is the same model, only fresher. Infra validation then serves
    whichever model goes on.
    """
    import shutil

    import joblib
    import numpy as np

    from ctpipe import evaluation
    from ctpipe.data import tables
    from ctpipe.training import fit
    from ctpipe.training.families import training_threads
    from ctpipe.training.search import TrainResult

    verify_step_model(blessed_path, blessed_metadata)  # handed on or compared: checked first
    trained = TrainResult.from_metadata(blessed_metadata)
    blessed = Refit(
        trained,
        int(blessed_metadata.get("fitted_rows") or trained.train_rows),
        blessed_metadata.get("fitted_start") or None,
        blessed_metadata.get("fitted_end") or None,
        str(blessed_metadata.get("fitted_slices") or "train"),
        0.0,
        str(blessed_metadata.get("model_sha256") or ""),
    )
    tolerance = config.train.final_refit_tolerance
    if not config.train.final_refit:
        shutil.copyfile(blessed_path, model_out)
        record: dict[str, Any] = {"applied": False, "reason": "train.final_refit is off"}
        return dataclasses.replace(blessed, final=record)
    schema = load_schema(schema_path)
    window = tables.read(window_path)
    test = tables.read(test_path)
    fitted = fit.fit(trained.candidate, window, schema, config, training_threads())
    frame, labels = fit.features_and_labels(test, schema)
    before = evaluation.model_outputs(joblib.load(blessed_path), frame, config.task)
    after = evaluation.model_outputs(fitted.model, frame, config.task)
    if config.task == "classification":
        measure = "changed_label_share"
        value = float(np.mean(before.prediction.astype(str) != after.prediction.astype(str)))
    else:
        measure = "mae_over_label_std"
        scale = float(np.std(np.asarray(labels, dtype=float))) or 1.0
        value = float(np.mean(np.abs(before.prediction - after.prediction))) / scale
    agrees = value <= tolerance
    record = {
        "applied": agrees,
        "measure": measure,
        "value": round(value, 6),
        "tolerance": tolerance,
        "test_rows": test.num_rows,
        "rows": fitted.rows,
        "reason": (
            f"refit on {fitted.rows:,} rows agrees with the blessed model on the test slice "
            f"({measure} {value:.4f} <= {tolerance:g})"
            if agrees
            else f"refit disagrees with the blessed model on the test slice ({measure} "
            f"{value:.4f} > {tolerance:g}): the blessed model goes on"
        ),
    }
    if not agrees:
        shutil.copyfile(blessed_path, model_out)
        return dataclasses.replace(blessed, final=record)
    return Refit(
        trained,
        fitted.rows,
        fitted.start,
        fitted.end,
        "window (train+validation+test)",
        fitted.seconds,
        dump_step_model(fitted.model, model_out),
        record,
    )


@dataclass(frozen=True)
class Selection:
    chosen: TrainResult
    results: tuple[TrainResult, ...]
    leaderboard: str

    def describe(self) -> str:
        return f"chose {self.chosen.describe()} out of {len(self.results)} candidates"


def select(
    config: Config, candidates: list[tuple[str, dict[str, Any]]], best_out: str
) -> Selection:
    """Pick the best trained candidate on validation; copy its model to `best_out`.

    `candidates` holds (model path, model artifact metadata) pairs.
    """
    import shutil

    from ctpipe.training.search import TrainResult, best, leaderboard

    results = [TrainResult.from_metadata(meta) for _, meta in candidates]
    higher = config.higher_is_better(config.search_metric)
    index = best(results, higher)
    verify_step_model(*candidates[index])
    shutil.copyfile(candidates[index][0], best_out)
    return Selection(results[index], tuple(results), leaderboard(results, index, higher))


def evaluate(
    config: Config,
    model_path: str,
    model_metadata: dict[str, Any],
    test_path: str,
    schema_path: str,
    evaluation_out: str,
    champion_out: str,
) -> Evaluation:
    """Score the challenger and the current champion on the same newest rows; apply the gate.

    `evaluation_out` receives the decision and the champion version it was made against,
    which `register` checks before it moves any alias. `champion_out` receives a snapshot
    of that champion (version and training sample) for the drift report.
    """

    from ctpipe import evaluation, registry
    from ctpipe.errors import GateError

    schema = load_schema(schema_path)
    frame, labels = load_frame(test_path, schema, extra=tuple(config.sensitive_columns))
    champion_ref = registry.champion(config)
    notes: tuple[str, ...] = ()
    if champion_ref is not None:
        frame, labels, notes = _rows_the_champion_never_saw(
            config, champion_ref, frame, labels, test_path
        )
    challenger = evaluation.model_outputs(
        load_step_model(model_path, model_metadata), frame, config.task
    )
    champion_outputs, champion_error = None, None
    if champion_ref is not None:
        try:
            champion_outputs = evaluation.model_outputs(
                registry.load_model(champion_ref), frame, config.task
            )
        except Exception as exc:
            champion_error = (
                f"champion v{champion_ref.version} could not score the test slice ({exc})"
            )
            # Fail closed: judging on thresholds alone would let any challenger replace a
            # champion that merely could not be loaded or could not read the new columns.
            if config.gate.on_champion_error != "thresholds":
                raise GateError(
                    f"{champion_error}; the challenger is not judged without it and nothing is "
                    "promoted (gate.on_champion_error: thresholds would judge on thresholds alone)"
                ) from exc
            print(f"\033[31mWARNING: {champion_error}; judging on thresholds alone\033[0m")
    result = evaluation.evaluate(
        config,
        frame,
        labels,
        challenger,
        champion_outputs,
        champion_ref.version if champion_ref and champion_outputs is not None else None,
        notes,
        champion_error,
    )
    record = {
        "evaluation": result.to_dict(),
        "champion_version": champion_ref.version if champion_ref else None,
    }
    Path(evaluation_out).write_text(json.dumps(record, indent=2))
    _snapshot_champion(config, champion_ref, champion_out)
    return result


def _rows_the_champion_never_saw(
    config: Config, champion: ModelRef, frame: Any, labels: Any, test_path: str
) -> tuple[Any, Any, tuple[str, ...]]:
    """The test rows newer than the champion's training data (its `ctpipe.fit` end).

    A champion from a final refit learned rows up to its data's end; when this run's test
    slice reaches back over them, judging on those rows would compare the challenger with
    the champion's memory. With at least split.min_rows unseen rows the gate judges on
    them alone; with fewer it judges on all and says so: the comparison then favours the
    champion, which can keep a challenger out but never let a worse one in.
    """
    from datetime import UTC, datetime

    import numpy as np

    from ctpipe import registry
    from ctpipe.data import tables

    end = json.loads(champion.tags.get(registry.TAG_FIT) or "{}").get("end")
    if not end:
        return frame, labels, ()
    newest_seen = datetime.fromisoformat(end).astimezone(UTC).replace(tzinfo=None)
    times = tables.read(test_path, columns=[config.timestamp]).column(config.timestamp)
    unseen = np.asarray(times.to_numpy() > np.datetime64(newest_seen, "us"))
    seen = int(len(unseen) - unseen.sum())
    if seen == 0:
        return frame, labels, ()
    where = f"champion v{champion.version} learned {seen:,} of the {len(unseen):,} test rows (up to {end})"
    if int(unseen.sum()) >= config.split.min_rows:
        kept = np.flatnonzero(unseen)
        note = f"{where}: both are judged on the {len(kept):,} rows it never saw"
        return frame.iloc[kept].reset_index(drop=True), labels[kept], (note,)
    note = (
        f"{where}; fewer than split.min_rows ({config.split.min_rows}) are new to it, so both "
        "are judged on all of them, which favours the champion"
    )
    return frame, labels, (note,)


def _snapshot_champion(config: Config, champion: ModelRef | None, out: str) -> None:
    """What the drift report compares with; never fails the evaluation."""
    from ctpipe import registry
    from ctpipe.drift import profile

    if champion is None:
        profile.write_snapshot(out, None, None, "no champion yet")
        return
    if config.monitor.report_rows == 0:
        profile.write_snapshot(out, champion.version, None, "drift reports are off")
        return
    try:
        files = registry.download_reference(champion)
    except Exception as exc:
        profile.write_snapshot(out, champion.version, None, str(exc))
        return
    profile.write_snapshot(out, champion.version, files.sample, fit=registry.fit_record(champion))


def register(
    config: Config,
    *,
    served_path: str,
    served_metadata: dict[str, Any],
    schema_path: str,
    evaluation_path: str,
    profile_path: str,
    sample_path: str,
    dataset_metadata: dict[str, Any],
    kfp_run_id: str,
    kfp_run_name: str,
    reason: str,
) -> Registration:
    """Log the blessed challenger to MLflow, register it and name it: `challenger` for a
    progressive rollout, `champion` for an immediate one or the first model.

    `served_path` is the model directory infra validation served (see `infra_validate`);
    that directory is what gets registered, so the model itself is never loaded here.
    """
    from ctpipe.deploy import locate
    from ctpipe.evaluation import Evaluation
    from ctpipe.registry import Challenger, Registration, SavedModel, register_challenger
    from ctpipe.training.search import TrainResult

    evaluation_raw = json.loads(Path(evaluation_path).read_text())
    result = Evaluation.from_dict(evaluation_raw["evaluation"])
    expected_champion = evaluation_raw["champion_version"]
    if not result.blessed:
        raise ValueError(
            "register was called for a challenger the gate refused"
        )  # pipeline wiring bug
    trained = TrainResult.from_metadata(served_metadata)
    saved = SavedModel.from_metadata(served_path, served_metadata)
    schema = load_schema(schema_path)
    if schema.proposed:  # the champion and its schema move together
        from ctpipe.data.schema import SchemaStore

        schema = SchemaStore(config.state_dir, config.model_name).save_next(schema)
    challenger = Challenger(
        saved,
        trained,
        result,
        schema,
        dataset_metadata,
        _fit_record(served_metadata),
        kfp_run_id,
        kfp_run_name,
        reason,
    )
    run_id, stored, previous, promoted = register_challenger(
        config,
        challenger,
        profile=profile_path,
        sample=sample_path,
        expected_champion=expected_champion,
    )
    location = locate(config, stored)
    return Registration(
        config.model_name,
        stored.version,
        run_id,
        previous,
        promoted,
        location.storage_uri,
        location.sha256,
    )


def _fit_record(metadata: dict[str, Any]) -> dict[str, Any]:
    """What the registered model learned from, as the refit steps recorded it."""
    final = metadata.get("final_refit")
    return {
        "rows": int(metadata.get("fitted_rows") or metadata.get("train_rows") or 0),
        "start": metadata.get("fitted_start") or None,
        "end": metadata.get("fitted_end") or None,
        "slices": metadata.get("fitted_slices") or "train",
        "final_refit": json.loads(final) if isinstance(final, str) else final,
    }


def infra_validate(
    config: Config,
    model_path: str,
    model_metadata: dict[str, Any],
    test_path: str,
    schema_path: str,
    served_out: str,
) -> tuple[InfraResult, dict[str, Any]]:
    """Save the challenger as the registry will store it (to `served_out`), serve that
    directory in the serving runtime, and check it answers like the model itself. The
    current champion is fetched from the registry and served beside it, on the same test
    rows, to time the challenger against. Returns the result and `served_out`'s metadata
    (see `save_challenger`).

    Raises InfraValidationFailed (the run stops; nothing is registered) otherwise.
    """
    from ctpipe import infra_validation
    from ctpipe.registry import SavedModel

    champion = infra_validation.fetch_champion(config)
    model, frame, metadata = save_challenger(
        model_path, model_metadata, test_path, schema_path, served_out
    )
    if champion is not None:  # it may take columns the challenger dropped
        frame, _ = load_frame(test_path, load_schema(schema_path), extra=champion.columns)
    saved = SavedModel.from_metadata(served_out, metadata)
    return infra_validation.validate(config, model, saved, frame, champion), metadata


def save_challenger(
    model_path: str,
    model_metadata: dict[str, Any],
    test_path: str,
    schema_path: str,
    served_out: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """The challenger, its test features, and the metadata of the challenger saved in the
    registry's format to `served_out` (the first test rows as its input example): its
    training record (`model_metadata`) and the saved directory's, all `register` reads."""
    from ctpipe import registry

    model = load_step_model(model_path, model_metadata)
    frame, _ = load_frame(test_path, load_schema(schema_path))
    saved = registry.save_model_dir(model, frame.head(5), served_out)
    return model, frame, {**model_metadata, **saved.metadata()}


@dataclass(frozen=True)
class DeployResult:
    service: str
    namespace: str
    version: str
    traffic_percent: int
    applied: bool

    def describe(self) -> str:
        if self.traffic_percent == 0:
            return (
                f"InferenceService {self.namespace}/{self.service}: unchanged; v{self.version} is "
                "the challenger, rolled out by the rollout controller (ctpipe monitor)"
            )
        where = "applied to the cluster" if self.applied else "written (not applied: no cluster)"
        return (
            f"InferenceService {self.namespace}/{self.service}: v{self.version} at {self.traffic_percent}% "
            f"of traffic, {where}"
        )


def deploy(
    config: Config,
    manifest_out: str,
    version: str | None = None,
    traffic_percent: int | None = None,
    location: ModelLocation | None = None,
) -> DeployResult:
    """Render (and in a cluster, apply) the InferenceService for a model version.

    Defaults: the current champion, at deploy.canary_traffic_percent (100 when 0). A local
    `ctpipe serve` follows the champion alias by itself, so here only the manifest is written.
    `location` (a deploy.ModelLocation, as register hands it on) saves asking MLflow where
    the version is: the pipeline's deploy step then never imports MLflow.
    """
    from ctpipe.deploy import DeployError, apply, render, should_apply, to_yaml

    if location is None:
        location = _locate(config, version)
    traffic = config.deploy.canary_traffic_percent if traffic_percent is None else traffic_percent
    traffic = traffic or 100
    manifest = render(config, location, traffic)
    Path(manifest_out).write_text(to_yaml(manifest))
    applied = should_apply(config)
    if applied:
        try:
            apply(manifest)
        except DeployError as exc:
            raise DeployError(f"{exc}; {_take_back(config, location.version)}") from exc
    return DeployResult(
        manifest["metadata"]["name"], config.deploy.namespace, location.version, traffic, applied
    )


def deploy_registered(
    config: Config,
    manifest_out: str,
    version: str,
    sha256: str,
    storage_uri: str,
    alias: str = "champion",
) -> DeployResult:
    """`deploy` for the version register just stored, at the place register says ("" when
    the predictor pulls it from the registry): the pipeline's deploy step never asks MLflow.
    A `challenger` is not deployed here: the rollout controller (ctpipe monitor) owns the
    InferenceService from its shadow phase until it promotes or rolls back."""
    from ctpipe.deploy import ModelLocation, service_name

    if alias == "challenger":
        Path(manifest_out).write_text(
            f"# v{version} is the challenger: the rollout controller (ctpipe monitor) deploys\n"
            "# it in shadow, then as a canary, and promotes or rolls it back on live traffic.\n"
        )
        return DeployResult(service_name(config), config.deploy.namespace, version, 0, False)
    location = ModelLocation(version, sha256, storage_uri or None)
    return deploy(config, manifest_out, location=location)


def _take_back(config: Config, version: str) -> str:
    """Move `champion` back after a failed rollout of `version`; says what happened."""
    from ctpipe import registry

    try:
        now = registry.undo_promotion(config, version)
    except Exception as exc:
        return (
            f"moving the champion alias back from v{version} failed too ({exc}): run "
            "`ctpipe deploy rollback`"
        )
    if now == version:
        return f"v{version} stays the champion (moved there since by another run)"
    where = f"back to v{now}" if now else "unset (there was no champion before)"
    return f"the champion alias is {where}; v{version} stays registered, not promoted"


def _locate(config: Config, version: str | None) -> ModelLocation:
    """Where a version (default: the champion) is, from the registry."""
    from ctpipe import registry
    from ctpipe.deploy import locate
    from ctpipe.errors import RegistryError

    mlflow_client = registry.client(config)
    ref = (
        registry.version_ref(mlflow_client, config.model_name, version)
        if version
        else registry.champion(config, mlflow_client)
    )
    if ref is None:
        raise RegistryError(f"{config.model_name!r} has no champion to deploy")
    return locate(config, ref, mlflow_client)
