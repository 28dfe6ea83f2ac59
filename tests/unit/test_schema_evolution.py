"""Integrity versus distribution, schema evolution (auto and manual), declared constraints."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ctpipe import stages
from ctpipe.config import Config, Constraint, Features, from_dict
from ctpipe.data import schema, tables, validation
from ctpipe.data.schema import CONSTANT_NOTE, SchemaStore
from ctpipe.data.validation import ValidationResult, Violation
from ctpipe.errors import ConfigError, DataError, ValidationFailed
from tests.conftest import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stream(n: int, start: int = 0, **columns: Any) -> pa.Table:
    """n hourly rows: x in 0..9, a sensor stuck at 0.0035, channel in web/phone, label 0/1."""
    k = range(start, start + n)
    data: dict[str, Any] = {
        "request_id": [f"r{i:05d}" for i in k],
        "event_time": pa.array([T0 + timedelta(hours=i) for i in k], pa.timestamp("us", tz="UTC")),
        "x": [float(i % 10) for i in k],
        "sensor": [0.0035] * n,
        "channel": [("web", "phone")[i % 2] for i in k],
        "label": [(i // 2) % 2 for i in k],
    }
    data.update(columns)
    return pa.table(data)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "state", sensitive_columns=[])


def only(result: ValidationResult, rule: str) -> Violation:
    found = [v for v in result.violations if v.rule == rule]
    assert len(found) == 1, result.violations
    return found[0]


# ------------------------------------------------------------------ constant columns


def test_a_constant_column_gets_no_range_rule(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    sensor = inferred.column("sensor")
    assert sensor is not None
    assert (sensor.minimum, sensor.maximum, sensor.constant) == (None, None, 0.0035)
    assert sensor.note == CONSTANT_NOTE
    assert f"sensor: {CONSTANT_NOTE}" in inferred.notes
    assert CONSTANT_NOTE in inferred.markdown()
    # The sensor starts reporting: nothing in validation stops the run ...
    alive = stream(200, 200, sensor=[i / 100 for i in range(200)])
    assert validation.check(alive, inferred, config.validation).violations == ()
    # ... and the next schema version records that it came alive, with its first range.
    evolved = schema.evolve(inferred, alive)
    assert evolved is not None and evolved.proposed
    assert (evolved.version, evolved.parent_version) == (2, 1)
    new_sensor = evolved.column("sensor")
    assert new_sensor is not None
    assert (new_sensor.minimum, new_sensor.maximum, new_sensor.constant) == (0.0, 1.99, None)
    assert evolved.changes == (
        "sensor: came alive: constant 0.0035 at inference, now in [0, 1.99]",
    )


def test_a_column_still_constant_is_no_change(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    assert schema.evolve(inferred, stream(100, 200)) is None


def test_schema_json_round_trips_evolution_fields(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    evolved = schema.evolve(inferred, stream(50, 200, channel=["email"] * 50))
    assert evolved is not None
    assert schema.Schema.from_json(evolved.to_json()) == evolved
    # Files written before these fields existed still load.
    raw = json.loads(inferred.to_json())
    for key in ("parent_version", "changes", "proposed"):
        raw.pop(key)
    for column in raw["columns"]:
        if column["constant"] is None:
            column.pop("constant")
    assert schema.Schema.from_json(json.dumps(raw)) == inferred


# ----------------------------------------------------------------------- evolution


def test_evolution_widens_ranges_and_grows_category_sets(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    later = stream(100, 200, x=[float(i) for i in range(-5, 95)], channel=["email"] * 100)
    evolved = schema.evolve(inferred, later)
    assert evolved is not None
    assert evolved.changes == (
        "x: range widened from [0, 9] to [-5, 94]",
        "channel: new category 'email'",
    )
    channel = evolved.column("channel")
    assert channel is not None and channel.domain == ("email", "phone", "web")
    assert "Changes from v1:" in evolved.markdown()
    assert "v2 (proposed, from v1)" in evolved.markdown()
    # The evolved version covers the data, so checking against it finds nothing.
    assert validation.check(later, evolved, config.validation).violations == ()


def test_evolution_leaves_integrity_alone(config: Config) -> None:
    """Null rates and labels are integrity: an evolution never absorbs them."""
    inferred = schema.infer(stream(200), config)
    nulls = stream(100, 200, x=[None] * 100)
    assert schema.evolve(inferred, nulls) is None


def test_distribution_warns_by_default_and_stops_when_hard(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    later = stream(100, 200, x=[100.0] * 100, channel=["email"] * 100)
    soft = validation.check(later, inferred, config.validation)
    assert soft.passed
    assert {(v.rule, v.severity, v.kind) for v in soft.violations} == {
        ("out_of_range", "warning", "distribution"),
        ("unseen_category", "warning", "distribution"),
    }
    assert all("validation.distribution is soft" in v.detail for v in soft.violations)
    hard = validation.check(
        later, inferred, dataclasses.replace(config.validation, distribution="hard")
    )
    assert not hard.passed
    assert {v.rule for v in hard.errors} == {"out_of_range", "unseen_category"}


def test_integrity_is_hard_by_default(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    broken = stream(100, 200, x=["abc"] * 100)
    result = validation.check(broken, inferred, config.validation)
    assert not result.passed
    v = only(result, "type_change")
    assert (v.severity, v.kind, v.column) == ("error", "integrity", "x")
    with pytest.raises(ValidationFailed, match=r"column 'x', rule type_change \(integrity\)"):
        result.raise_if_failed()
    soft = validation.check(
        broken, inferred, dataclasses.replace(config.validation, integrity="soft")
    )
    assert soft.passed and only(soft, "type_change").severity == "warning"


# --------------------------------------------------------------- integrity rules


def test_infinite_values_are_an_integrity_error(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    values = [float(i % 10) for i in range(100)]
    values[3] = float("inf")
    v = only(
        validation.check(stream(100, 200, x=values), inferred, config.validation), "non_finite"
    )
    assert (v.severity, v.kind, v.column, v.count) == ("error", "integrity", "x", 1)


def test_duplicated_ids_are_an_integrity_error(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    ids = [f"r{i:05d}" for i in range(100)]
    ids[10] = ids[11] = "same"
    v = only(
        validation.check(stream(100, 200, request_id=ids), inferred, config.validation),
        "duplicate_id",
    )
    assert (v.severity, v.column, v.count) == ("error", "request_id", 2)
    assert "1 id(s) appear more than once" in v.detail


def test_a_single_class_is_an_integrity_error(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    result = validation.check(stream(100, 200, label=[1] * 100), inferred, config.validation)
    v = only(result, "single_class")
    assert (v.severity, v.column, v.count) == ("error", "label", 100)
    assert "every label is '1'" in v.detail


def test_declared_constraints_are_integrity(config: Config) -> None:
    inferred = schema.infer(stream(200), config)
    values = [float(i % 10) for i in range(100)]
    values[5] = -1.0
    limits = {"x": Constraint(min=0.0), "sensor": Constraint(min=0.0, max=1.0)}
    result = validation.check(
        stream(100, 200, x=values), inferred, config.validation, constraints=limits
    )
    v = only(result, "constraint")
    assert (v.severity, v.kind, v.column, v.count) == ("error", "integrity", "x", 1)
    assert "values must be >= 0 (features.constraints.x)" in v.detail
    missing = validation.check(
        stream(10, 200), inferred, config.validation, constraints={"age": Constraint(min=0.0)}
    )
    assert "not in the data" in only(missing, "constraint").detail


def test_constraints_in_the_config_are_checked(tmp_path: Path) -> None:
    base = {"task": "classification", "target": "label", "timestamp": "event_time"}
    parsed = from_dict({**base, "features": {"constraints": {"age": {"min": 0}}}})
    assert parsed.features.constraints == {"age": Constraint(min=0.0)}
    for bad, message in (
        ({"age": {}}, "expected min, max or both"),
        ({"age": {"min": 5, "max": 1}}, "min 5 is above max 1"),
        ({"age": {"minimum": 0}}, "unknown key"),
    ):
        with pytest.raises(ConfigError, match=f"features.constraints.age.*{message}"):
            from_dict({**base, "features": {"constraints": bad}})
    with pytest.raises(ConfigError, match=r"validation\.evolution"):
        from_dict({**base, "validation": {"evolution": "sometimes"}})
    # Constraints are rules, not the schema's shape: adding one infers no new version.
    plain = make_config(tmp_path)
    constrained = plain.replace(features=Features(constraints={"x": Constraint(min=0.0)}))
    assert schema.config_fingerprint(plain) == schema.config_fingerprint(constrained)


# ------------------------------------------------------------ the validate stage


def _validate(config: Config, table: pa.Table, tmp_path: Path, run_id: str = "run-1") -> Any:
    data = tmp_path / f"data-{run_id}.parquet"
    tables.write(table, str(data))
    out = tmp_path / f"out-{run_id}"
    out.mkdir()
    result = stages.validate(
        config, str(data), str(out / "schema.json"), str(out / "report.md"), run_id=run_id
    )
    return (
        result,
        schema.Schema.from_json((out / "schema.json").read_text()),
        (out / "report.md").read_text(),
    )


def test_auto_evolution_proposes_and_does_not_store(config: Config, tmp_path: Path) -> None:
    store = SchemaStore(config.state_dir, config.model_name)
    first, used, _ = _validate(config, stream(200), tmp_path, "first")
    assert first.schema_created and store.versions() == [1] and not used.proposed
    later = stream(200, 200, sensor=[i / 100 for i in range(200)], channel=["email"] * 200)
    result, used, report = _validate(config, later, tmp_path, "second")
    assert result.passed
    assert result.evolved_version == 2 and len(result.evolved) == 2
    assert used.proposed and used.version == 2 and used.parent_version == 1
    assert store.versions() == [1]  # stored only when the challenger is registered
    assert "schema v2 is proposed with these changes" in report
    assert "- sensor: came alive" in report and "- channel: new category 'email'" in report
    assert "schema v2 proposed (2 change(s))" in result.summary
    # What register does with it: the next free version, no longer marked proposed.
    stored = store.save_next(used)
    assert (stored.version, stored.proposed, stored.changes) == (2, False, used.changes)
    assert store.latest() == stored


def test_manual_evolution_stops_and_names_the_accepting_command(
    config: Config, tmp_path: Path
) -> None:
    manual = config.replace(validation=dataclasses.replace(config.validation, evolution="manual"))
    store = SchemaStore(manual.state_dir, manual.model_name)
    _validate(manual, stream(200), tmp_path, "first")
    later = stream(200, 200, channel=["email"] * 200)
    result, used, report = _validate(manual, later, tmp_path, "kfp-run-42")
    assert not result.passed
    assert not used.proposed and used.version == 1  # the run goes on with nothing
    v = only(result, "schema_change")
    assert v.kind == "distribution"
    assert "`ctpipe schema accept --run kfp-run-42`" in v.detail
    with pytest.raises(ValidationFailed, match="ctpipe schema accept --run kfp-run-42"):
        result.raise_if_failed()
    assert "ctpipe schema accept --run kfp-run-42" in report
    [pending] = store.pending()
    assert pending.run_id == "kfp-run-42" and pending.proposed.changes == (
        "channel: new category 'email'",
    )
    assert store.versions() == [1]
    # Accepting stores it; the same data then validates cleanly against v2.
    stored, cleared = store.accept("kfp-run-42")
    assert stored.version == 2 and [c.run_id for c in cleared] == ["kfp-run-42"]
    assert store.pending() == []
    again, used, _ = _validate(manual, later, tmp_path, "after")
    assert again.passed and again.violations == () and used.version == 2


def test_accept_refuses_what_it_cannot_do(config: Config, tmp_path: Path) -> None:
    store = SchemaStore(config.state_dir, config.model_name)
    with pytest.raises(DataError, match="no schema change is waiting"):
        store.accept()
    v1 = store.save_next(schema.infer(stream(200), config))
    one = schema.evolve(v1, stream(10, 200, channel=["email"] * 10))
    two = schema.evolve(v1, stream(10, 300, channel=["fax"] * 10))
    assert one is not None and two is not None
    store.propose(one, "run-a", "a.parquet")
    store.propose(two, "run-b", "b.parquet")
    with pytest.raises(DataError, match=r"2 schema changes are waiting .*name one with --run"):
        store.accept()
    with pytest.raises(DataError, match="no schema change from run 'run-c'"):
        store.accept("run-c")
    store.save_next(one)  # someone stored another version meanwhile
    with pytest.raises(DataError, match="proposed against schema v1, but v2 is stored now"):
        store.accept("run-b")


def test_schema_accept_cli(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from ctpipe import cli

    manual = config.replace(validation=dataclasses.replace(config.validation, evolution="manual"))
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(manual.to_dict()))
    _validate(manual, stream(200), tmp_path, "first")
    _validate(manual, stream(50, 200, channel=["email"] * 50), tmp_path, "r-7")
    assert cli.main(["schema", "show", "--config", str(path)]) == 0
    assert "accept: ctpipe schema accept --run r-7" in capsys.readouterr().out
    assert cli.main(["schema", "accept", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stored schema v2" in out and "channel: new category 'email'" in out
    assert cli.main(["schema", "accept", "--config", str(path)]) != 0
    assert "no schema change is waiting" in capsys.readouterr().err


def test_pending_changes_live_beside_the_versions_on_s3(config: Config, s3: Any) -> None:
    """Where state_dir is an S3 prefix (a cluster): propose, list, accept and clear there."""
    bucket = "ctpipe-schemas"
    s3.create_bucket(Bucket=bucket)
    store = SchemaStore(f"s3://{bucket}/state", config.model_name)
    v1 = store.save_next(schema.infer(stream(200), config))
    proposed = schema.evolve(v1, stream(10, 200, channel=["email"] * 10))
    assert proposed is not None
    store.propose(proposed, "kfp-run-9", "s3://data/new.parquet")
    assert store.versions() == [1]  # a pending file is not a version
    [pending] = store.pending()
    assert (pending.run_id, pending.data) == ("kfp-run-9", "s3://data/new.parquet")
    stored, _ = store.accept("kfp-run-9")
    assert stored.version == 2 and store.versions() == [1, 2] and store.pending() == []
