"""The monitor's errors: a clear message, a non-zero exit, and a decision record all the
same (a bad --now, MLflow down, labels the model's classes do not know)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from ctpipe import cli, predlog, registry
from ctpipe.config import Config
from ctpipe.errors import DataError
from ctpipe.monitor.runner import check_label_domain
from ctpipe.monitor.state import MonitorStore
from tests.conftest import free_port, make_config

RUN_TIMEOUT = 120  # MLflow's own client retries a refused connection for about four minutes


def _config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def _decisions(config: Config) -> list[dict[str, Any]]:
    folder = Path(MonitorStore(config.state_dir, config.model_name).root, "decisions")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_a_now_that_is_not_a_time_is_a_clear_error(
    small_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(small_config, tmp_path)
    code = cli.main(["monitor", "--config", str(path), "--now", "next tuesday"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ctpipe: error: --now: 'next tuesday' is not an ISO 8601 time;")
    assert "2026-07-21T06:00:00Z" in err


def test_the_monitor_with_mlflow_down_fails_fast_and_records_why(
    small_config: Config, tmp_path: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [
            sys.executable, "-m", "ctpipe.cli", "monitor", "--config",
            str(_config_file(small_config, tmp_path)), "--now", "2026-07-21T00:00:00Z",
        ],
        capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT,
        env={**os.environ, registry.TRACKING_ENV: uri},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot reach the MLflow tracking server at {uri}" in result.stderr
    assert "Traceback" not in result.stderr
    [record] = _decisions(small_config)
    assert record["action"] == "error" and record["time"] == "2026-07-21T00:00:00+00:00"
    assert record["error"]["type"] == "PreflightError" and uri in record["error"]["message"]
    assert record["reasons"] == [record["error"]["message"]]
    assert "monitor: decision: ERROR, recorded in " in result.stdout


def _labelled(labels: list[str]) -> pa.Table:
    return pa.table(
        {
            predlog.REQUEST_ID: [f"r{i}" for i in range(len(labels))],
            predlog.LABEL: pa.array(labels, pa.string()),
        }
    )


def test_labels_outside_the_models_classes_are_named(small_config: Config) -> None:
    """yes/no labels against classes 0/1 would all count as wrong (or not at all)."""
    table = _labelled(["yes"] * 900 + ["no"] * 600)
    with pytest.raises(DataError) as info:
        check_label_domain(table, small_config, [0, 1], "3")
    message = str(info.value)
    root = Path(small_config.state_dir, "labels", small_config.model_name)
    assert message.startswith(f"{root}: column 'label', rule label_domain: 1,500 of the 1,500")
    assert "of test-model v3 have labels that are not among the model's classes '0', '1'" in (
        message
    )
    assert "'yes' (900 rows), 'no' (600 rows)" in message
    assert "request ids such as r0, r1, r2" in message


@pytest.mark.parametrize(
    ("classes", "labels"),
    [
        ([0, 1], ["0", "1", "1"]),
        ([0.0, 1.0], ["0", "1"]),  # float classes, integer labels: the same classes
        ([False, True], ["false", "true"]),  # the log spells booleans as Arrow does
        (["cat", "dog"], ["dog"]),
        ([], ["anything"]),  # a champion without its classes recorded: nothing to check
    ],
)
def test_labels_within_the_classes_pass(
    small_config: Config, classes: list[Any], labels: list[str]
) -> None:
    check_label_domain(_labelled(labels), small_config, classes, "1")


def test_regression_labels_must_be_finite_numbers(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "state",
        task="regression",
        search={"candidates": [{"family": "linear"}]},
        gate={"thresholds": {}},
    )
    check_label_domain(_labelled(["1.5", "-2", "3e3"]), config, [], "1")
    with pytest.raises(DataError, match=r"rule numeric_label: 2 of the 3 .* not finite numbers"):
        check_label_domain(_labelled(["1.5", "n/a", "inf"]), config, [], "1")


def test_no_labelled_rows_is_nothing_to_check(small_config: Config) -> None:
    check_label_domain(_labelled([]), small_config, [0, 1], "1")
