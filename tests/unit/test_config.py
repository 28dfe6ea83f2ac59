"""ctpipe.config: the embedded default, strict loading, and messages that name the key."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctpipe import config
from ctpipe.config import Config
from ctpipe.errors import ConfigError


def minimal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"task": "classification", "target": "label", "timestamp": "event_time"}
    raw.update(overrides)
    return raw


def config_error(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    return str(info.value)


# ------------------------------------------------------------------- the default


def test_load_embedded_default() -> None:
    c = config.load()
    assert isinstance(c, Config)
    assert c.task == "classification"
    assert (c.target, c.timestamp, c.id_column) == ("label", "event_time", "request_id")
    assert c.model_name == "ctpipe-demo"
    assert c.sensitive_columns == ("region",)
    assert c.data.uri is None
    assert c.data.synthetic.rows == 20000
    assert [s.family for s in c.search.candidates] == [
        "linear",
        "random_forest",
        "hist_gradient_boosting",
    ]
    assert c.gate.thresholds == {"roc_auc": 0.6}
    assert c.search_metric == "roc_auc"
    assert c.gate_metric == "roc_auc"
    assert c.reserved_columns == ("label", "event_time", "request_id")


def test_embedded_default_matches_dataclass_defaults() -> None:
    """The documented file and the dataclass defaults say the same thing where both speak."""
    c = config.load()
    assert c.split == config.Split()
    assert c.validation == config.Validation()
    assert c.search.candidates == config.Search().candidates
    assert c.data.synthetic == config.SyntheticData()
    assert c.data.window == config.Window()


def test_embedded_default_state_dir_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.load().state_dir == str(tmp_path.resolve() / ".ctpipe")


def _undocumented(cls: Any, node: Any, path: str) -> list[str]:
    """Every dataclass field under `cls` that has no key at the same place in `node`."""
    missing = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if not isinstance(node, dict) or f.name not in node:
            missing.append(where)
            continue
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
        if dataclasses.is_dataclass(tp):
            missing += _undocumented(tp, node[f.name], where)
        elif typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
            items = node[f.name]
            if not items:
                missing.append(f"{where}[0]")
            for i, item in enumerate(items or ()):
                missing += _undocumented(args[0], item, f"{where}[{i}]")
    return missing


def test_every_config_key_is_documented_in_the_default_yaml() -> None:
    documented = yaml.safe_load(config.default_config_text())
    assert _undocumented(Config, documented, "") == []


def test_undocumented_walker_notices_a_missing_key() -> None:
    documented = yaml.safe_load(config.default_config_text())
    del documented["gate"]["margin"]
    del documented["search"]["candidates"][1]["params"]
    assert _undocumented(Config, documented, "") == [
        "search.candidates[1].params",
        "gate.margin",
    ]


def test_default_yaml_has_no_keys_the_dataclasses_lack() -> None:
    # from_dict is strict, so loading the text at all proves this; say it explicitly.
    documented = yaml.safe_load(config.default_config_text())
    assert config.from_dict(documented).to_dict()["gate"]["margin"] == 0.01


# --------------------------------------------------------------------- round trip


def test_round_trip_default() -> None:
    c = config.load()
    assert config.from_dict(c.to_dict()) == c


def test_round_trip_with_every_optional_key_set() -> None:
    raw = minimal(
        task="regression",
        target="y",
        timestamp="ts",
        id_column="id",
        model_name="m",
        sensitive_columns=["region", "channel"],
        state_dir="s3://bucket/state",
        data={
            "uri": "s3://bucket/data/",
            "format": "parquet",
            "window": {"start": "2026-01-01", "end": "2026-03-01T00:00:00Z", "last": "30d"},
            "synthetic": {"rows": 500, "seed": 3, "numeric": 2, "categorical": 1},
        },
        features={"numeric": ["a"], "categorical": ["b"], "drop": ["c"]},
        split={"validation_fraction": 0.1, "test_fraction": 0.3, "min_rows": 5},
        search={
            "metric": "mae",
            "seed": 4,
            "max_candidates": 3,
            "candidates": [{"family": "linear", "params": {"alpha": [0.1, 1.0]}}],
        },
        gate={"metric": "r2", "thresholds": {"rmse": 5.0}, "margin": 0.0, "confidence": 0.9},
    )
    c = config.from_dict(raw)
    assert c.search_metric == "mae"
    assert c.gate_metric == "r2"
    assert c.higher_is_better("r2") and not c.higher_is_better("rmse")
    back = config.from_dict(c.to_dict())
    assert back == c
    assert back.features.drop == ("c",)
    assert back.data.window.last == "30d"


def test_to_dict_leaves_out_none_and_is_plain() -> None:
    d = config.from_dict(minimal()).to_dict()
    assert "id_column" not in d
    assert "metric" not in d["search"]
    assert d["data"]["window"] == {}
    assert d["sensitive_columns"] == []
    assert isinstance(d["search"]["candidates"], list)
    assert yaml.safe_load(yaml.safe_dump(d)) == d


# -------------------------------------------------------------- numbers from KFP


def test_integral_floats_are_accepted_for_int_fields() -> None:
    c = config.from_dict(
        minimal(
            split={"min_rows": 20.0},
            gate={"bootstrap_samples": 200.0, "seed": 3.0},
            search={"max_candidates": 8.0},
            data={"synthetic": {"rows": 1000.0, "numeric": 4.0}},
        )
    )
    assert c.split.min_rows == 20 and type(c.split.min_rows) is int
    assert c.gate.bootstrap_samples == 200 and type(c.gate.bootstrap_samples) is int
    assert type(c.gate.seed) is int
    assert c.search.max_candidates == 8 and type(c.search.max_candidates) is int
    assert c.data.synthetic.rows == 1000 and type(c.data.synthetic.rows) is int
    assert type(c.data.synthetic.numeric) is int


def test_round_trip_through_float_numbers() -> None:
    """What KFP does to a dict parameter: every number becomes a double."""

    def as_doubles(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: as_doubles(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_doubles(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    c = config.load()
    assert config.from_dict(as_doubles(c.to_dict())).split == c.split
    assert config.from_dict(as_doubles(c.to_dict())).gate == c.gate


def test_ints_accepted_for_float_fields() -> None:
    c = config.from_dict(minimal(gate={"margin": 0}))
    assert c.gate.margin == 0.0 and type(c.gate.margin) is float


@pytest.mark.parametrize("value", [20.5, "20", True])
def test_non_integral_value_for_int_field(value: Any) -> None:
    message = config_error(minimal(split={"min_rows": value}))
    assert "split.min_rows" in message
    assert "expected an integer" in message
    assert repr(value) in message


# ------------------------------------------------------------------ bad configs


def test_unknown_key_suggests_the_close_one() -> None:
    message = config_error(minimal(gate={"margn": 0.1}))
    assert "gate.margn" in message
    assert "unknown key" in message
    assert "did you mean 'margin'?" in message
    assert "bootstrap_samples" in message  # the list of what is accepted


def test_unknown_top_level_key() -> None:
    message = config_error(minimal(targte="x"))
    assert message.startswith("config: targte: unknown key")
    assert "did you mean 'target'?" in message


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    message = config_error(minimal(split={"zzzzzz": 1}))
    assert "split.zzzzzz: unknown key" in message
    assert "did you mean" not in message


def test_missing_required_key() -> None:
    raw = minimal()
    del raw["target"]
    message = config_error(raw)
    assert "target" in message and "required key is missing" in message


@pytest.mark.parametrize(
    ("raw", "path", "expected"),
    [
        (minimal(target=3), "target", "expected a non-empty string, got 3 (int)"),
        (minimal(target=""), "target", "expected a non-empty string"),
        (minimal(gate={"margin": "small"}), "gate.margin", "expected a number, got 'small' (str)"),
        (minimal(gate={"margin": True}), "gate.margin", "expected a number"),
        (minimal(sensitive_columns="region"), "sensitive_columns", "expected a list"),
        (minimal(split=[0.1]), "split", "expected a mapping"),
        (minimal(gate={"thresholds": [0.6]}), "gate.thresholds", "expected a mapping"),
        (minimal(gate={"thresholds": {"roc_auc": "high"}}), "gate.thresholds.roc_auc", "number"),
        (minimal(features={"drop": ["a", 5]}), "features.drop[1]", "expected a non-empty string"),
        (minimal(data={"format": "xlsx"}), "data.format", "expected one of 'auto', 'csv'"),
    ],
)
def test_wrong_type_names_key_and_expectation(raw: Any, path: str, expected: str) -> None:
    message = config_error(raw)
    assert f": {path}: " in message
    assert expected in message


def test_top_level_not_a_mapping() -> None:
    message = config_error(["task", "classification"])
    assert "<top level>" in message and "expected a mapping" in message


def test_bad_task_literal() -> None:
    message = config_error(minimal(task="clasification"))
    assert "task:" in message
    assert "'classification', 'regression'" in message
    assert "'clasification'" in message


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (minimal(search={"metric": "rmse"}), "search.metric"),
        (minimal(gate={"metric": "accuracy"}, task="regression"), "gate.metric"),
        (minimal(gate={"thresholds": {"auc": 0.6}}), "gate.thresholds.auc"),
    ],
)
def test_unknown_metric_for_the_task(raw: dict[str, Any], path: str) -> None:
    message = config_error(raw)
    assert f"{path}:" in message
    if raw["task"] == "classification":
        assert "roc_auc" in message
    else:
        assert "rmse" in message and "r2" in message


def test_regression_with_the_default_search_grid() -> None:
    """The default grid must be valid for either task (ridge takes alpha, not C)."""
    c = config.from_dict(minimal(task="regression"))
    families = {s.family: s.params for s in c.search.candidates}
    assert set(families) == {"linear", "random_forest", "hist_gradient_boosting"}
    assert "C" not in families["linear"]
    assert config.from_dict(c.to_dict()) == c
    classification = config.from_dict(minimal())
    assert classification.search.candidates == config.Search().candidates


def test_metric_of_the_other_task_is_accepted_for_its_own() -> None:
    assert (
        config.from_dict(minimal(task="regression", search={"metric": "rmse"})).search_metric
        == "rmse"
    )


def test_unknown_model_family() -> None:
    message = config_error(minimal(search={"candidates": [{"family": "xgboost"}]}))
    assert "search.candidates[0].family" in message
    assert "'xgboost'" in message
    assert "linear, random_forest, hist_gradient_boosting" in message


def test_unknown_param_for_family_suggests() -> None:
    raw = minimal(
        search={
            "candidates": [
                {"family": "linear"},
                {"family": "random_forest", "params": {"n_estimator": [10]}},
            ]
        }
    )
    message = config_error(raw)
    assert "search.candidates[1].params.n_estimator" in message
    assert "random_forest (classification)" in message
    assert "did you mean 'n_estimators'?" in message


def test_param_valid_for_one_task_only() -> None:
    raw = minimal(search={"candidates": [{"family": "linear", "params": {"alpha": 1.0}}]})
    message = config_error(raw)
    assert "params.alpha" in message and "expected one of: C, max_iter" in message
    raw["task"] = "regression"
    assert config.from_dict(raw).search.candidates[0].params == {"alpha": 1.0}


@pytest.mark.parametrize("value", [[], [[1, 2]], {"a": 1}])
def test_bad_param_values(value: Any) -> None:
    message = config_error(
        minimal(search={"candidates": [{"family": "linear", "params": {"C": value}}]})
    )
    assert "search.candidates[0].params.C" in message


def test_no_candidates() -> None:
    assert "search.candidates" in config_error(minimal(search={"candidates": []}))


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (minimal(split={"test_fraction": 0}), "split.test_fraction"),
        (minimal(split={"test_fraction": 1.0}), "split.test_fraction"),
        (minimal(split={"validation_fraction": -0.1}), "split.validation_fraction"),
        (
            minimal(validation={"max_out_of_range_fraction": 1.5}),
            "validation.max_out_of_range_fraction",
        ),
        (
            minimal(validation={"warn_null_rate_increase": -0.01}),
            "validation.warn_null_rate_increase",
        ),
        (minimal(gate={"confidence": 1.0}), "gate.confidence"),
    ],
)
def test_fraction_out_of_range(raw: dict[str, Any], path: str) -> None:
    message = config_error(raw)
    assert f"{path}:" in message
    assert "expected a fraction between 0 and 1" in message


def test_zero_is_a_valid_validation_tolerance() -> None:
    c = config.from_dict(minimal(validation={"max_unseen_category_fraction": 0}))
    assert c.validation.max_unseen_category_fraction == 0.0


def test_validation_and_test_fraction_too_large() -> None:
    message = config_error(minimal(split={"validation_fraction": 0.45, "test_fraction": 0.45}))
    assert "split:" in message
    assert "validation_fraction + test_fraction" in message
    assert "10%" in message


def test_warn_level_above_max_level() -> None:
    raw = minimal(validation={"warn_null_rate_increase": 0.3, "max_null_rate_increase": 0.2})
    message = config_error(raw)
    assert "validation.warn_null_rate_increase" in message
    assert "max_null_rate_increase" in message


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (minimal(split={"min_rows": 0}), "split.min_rows"),
        (minimal(gate={"margin": -0.1}), "gate.margin"),
        (minimal(gate={"bootstrap_samples": 10}), "gate.bootstrap_samples"),
        (minimal(search={"max_candidates": 0}), "search.max_candidates"),
        (minimal(data={"synthetic": {"rows": 50}}), "data.synthetic.rows"),
    ],
)
def test_numbers_below_their_minimum(raw: dict[str, Any], path: str) -> None:
    assert f"{path}:" in config_error(raw)


def test_target_as_sensitive_column() -> None:
    message = config_error(minimal(sensitive_columns=["region", "label"]))
    assert "sensitive_columns:" in message
    assert "'label'" in message
    assert "cannot be a feature" in message


def test_timestamp_forced_as_feature() -> None:
    message = config_error(minimal(features={"numeric": ["event_time"]}))
    assert "features.numeric:" in message and "'event_time'" in message


def test_column_both_numeric_and_categorical() -> None:
    message = config_error(minimal(features={"numeric": ["a"], "categorical": ["a"]}))
    assert "features:" in message and "'a'" in message


def test_target_equal_to_timestamp() -> None:
    message = config_error(minimal(timestamp="label"))
    assert "target:" in message and "different columns" in message


@pytest.mark.parametrize("last", ["90", "90 days", "d", "-1d", "1y"])
def test_bad_window_last(last: str) -> None:
    message = config_error(minimal(data={"window": {"last": last}}))
    assert "data.window.last:" in message
    assert "expected a duration" in message
    assert repr(last) in message


@pytest.mark.parametrize(("key", "stamp"), [("start", "yesterday"), ("end", "2026-13-01")])
def test_bad_window_timestamp(key: str, stamp: str) -> None:
    message = config_error(minimal(data={"window": {key: stamp}}))
    assert f"data.window.{key}:" in message
    assert "expected an ISO 8601 timestamp" in message
    assert repr(stamp) in message


def test_good_window_values() -> None:
    window = config.from_dict(
        minimal(
            data={"window": {"start": "2026-01-01", "end": "2026-02-01T12:00:00Z", "last": "1.5w"}}
        )
    ).data.window
    assert window == config.Window("2026-01-01", "2026-02-01T12:00:00Z", "1.5w")
    assert config.parse_duration(window.last or "") == 1.5 * 7 * 86400
    assert config.parse_timestamp("2026-02-01T12:00:00Z").isoformat() == "2026-02-01T12:00:00+00:00"
    assert config.parse_timestamp("2026-02-01T14:00:00+02:00").hour == 12


# ----------------------------------------------------------------------- files


def test_unreadable_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(missing)
    assert str(missing) in str(info.value)
    assert "cannot read config file" in str(info.value)


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path)


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: classification\ntarget: [label\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_empty_yaml_file_reports_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="required key is missing"):
        config.load(path)


def test_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "ctpipe.yaml"
    path.write_text("task: classification\ntarget: label\ntimestamp: t\ngate:\n  margn: 0.1\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: gate.margn: unknown key")


def test_relative_paths_resolve_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project" / "conf"
    folder.mkdir(parents=True)
    path = folder / "ctpipe.yaml"
    path.write_text(
        "task: classification\ntarget: label\ntimestamp: t\n"
        "state_dir: ../state\ndata:\n  uri: data/*.csv\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = config.load(Path("..") / "project" / "conf" / "ctpipe.yaml")
    assert c.state_dir == str((tmp_path / "project" / "state").resolve())
    assert c.data.uri == str(folder.resolve() / "data" / "*.csv")


def test_absolute_and_s3_paths_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ctpipe.yaml"
    absolute = tmp_path / "abs" / "data.csv"
    path.write_text(
        f"task: classification\ntarget: label\ntimestamp: t\n"
        f"state_dir: s3://bucket/state\ndata:\n  uri: {absolute}\n"
    )
    c = config.load(path)
    assert c.state_dir == "s3://bucket/state"
    assert c.data.uri == str(absolute)


def test_window_dates_unquoted_in_yaml(tmp_path: Path) -> None:
    """YAML reads an unquoted ISO 8601 date as a date object, not text."""
    path = tmp_path / "ctpipe.yaml"
    path.write_text(
        "task: classification\ntarget: label\ntimestamp: t\n"
        "data:\n  window:\n    start: 2026-01-01\n    end: 2026-02-01T12:00:00Z\n"
    )
    window = config.load(path).data.window
    assert window.start is not None and window.end is not None
    assert config.parse_timestamp(window.start).isoformat() == "2026-01-01T00:00:00+00:00"
    assert config.parse_timestamp(window.end).isoformat() == "2026-02-01T12:00:00+00:00"


def test_from_dict_does_not_change_its_input() -> None:
    raw = minimal(search={"candidates": [{"family": "linear", "params": {"C": [1.0]}}]})
    before = copy.deepcopy(raw)
    config.from_dict(raw)
    assert raw == before


def test_config_is_frozen() -> None:
    c = config.from_dict(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.target = "other"  # type: ignore[misc]
    assert c.replace(target="y").target == "y"


def test_null_model_params_survive_kfp() -> None:
    """KFP refuses null inside dict parameters; max_depth: null must still mean None."""
    from ctpipe.training.search import Candidate, expand

    raw = {
        "task": "classification",
        "target": "label",
        "timestamp": "event_time",
        "search": {"candidates": [{"family": "random_forest", "params": {"max_depth": [None, 4]}}]},
    }
    parsed = config.from_dict(raw)
    carried = parsed.to_dict()
    assert carried["search"]["candidates"][0]["params"]["max_depth"] == ["null", 4]
    assert "None" not in repr(carried)
    assert config.from_dict(carried) == parsed
    candidates = expand(parsed)
    assert [c.params["max_depth"] for c in candidates] == [None, 4]
    wire = [c.to_dict() for c in candidates]
    assert wire[0]["params"]["max_depth"] == "null"
    assert Candidate.from_dict(wire[0]).params["max_depth"] is None


def test_an_explicit_null_survives_the_trip_through_kfp(tmp_path: Path) -> None:
    """KFP cannot carry null in a dict: a null whose key has another default (never
    retrain by age, labels never outrank drift) crosses as a marker and comes back null."""
    import json

    from tests.conftest import make_config

    loaded = make_config(
        tmp_path,
        monitor={"triggers": {"max_model_age": None, "label_horizon": None}},
    )
    carried = json.loads(json.dumps(loaded.to_dict()))  # what a KFP parameter holds
    assert None not in carried["monitor"]["triggers"].values()
    back = config.from_dict(carried)
    assert back.monitor.triggers.max_model_age is None
    assert back.monitor.triggers.label_horizon is None
    assert back == loaded
