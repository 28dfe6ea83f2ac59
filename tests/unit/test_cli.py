"""The `ctpipe` command: help, init, generate, schema, compile and config errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ctpipe.cli import main
from ctpipe.config import default_config_text


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "compile", "init", "generate", "schema"):
        assert command in out


def test_init_writes_the_default_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "ctpipe.yaml"
    assert main(["init", str(target)]) == 0
    assert target.read_text() == default_config_text()
    assert main(["init", str(target)]) == 1
    assert main(["init", str(target), "--force"]) == 0


def test_generate_writes_data(tmp_path: Path) -> None:
    target = tmp_path / "events.parquet"
    assert (
        main(["generate", str(target), "--rows", "500", "--drift-at", "0.5", "--concept", "1"]) == 0
    )
    assert pq.read_table(target).num_rows == 500


def test_schema_show_and_infer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ctpipe.yaml"
    config.write_text(default_config_text().replace("rows: 20000", "rows: 800"))
    assert main(["schema", "show", "--config", str(config)]) == 0
    assert "no schema stored" in capsys.readouterr().out
    assert main(["schema", "infer", "--config", str(config)]) == 0
    assert "stored schema v1" in capsys.readouterr().out
    assert (tmp_path / ".ctpipe" / "schemas" / "ctpipe-demo" / "v0001.json").exists()
    assert main(["schema", "infer", "--config", str(config)]) == 0
    assert "stored schema v2" in capsys.readouterr().out
    assert main(["schema", "show", "--config", str(config)]) == 0
    assert "**Schema v2**" in capsys.readouterr().out


def test_a_bad_config_exits_2_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ctpipe.yaml"
    config.write_text(default_config_text().replace("test_fraction: 0.2", "test_fraction: lots"))
    assert main(["schema", "show", "--config", str(config)]) == 2
    assert "split.test_fraction: expected a number, got 'lots' (str)" in capsys.readouterr().err


def test_compile_writes_yaml(tmp_path: Path) -> None:
    target = tmp_path / "pipeline.yaml"
    assert main(["compile", "--profile", "cpu", "--output", str(target)]) == 0
    assert "continuous-training" in target.read_text()
