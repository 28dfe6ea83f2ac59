"""`ctpipe serve --config FILE`, as a user types it: the predictor comes up and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from ctpipe import registry
from ctpipe.config import Config
from tests.conftest import free_port
from tests.serving.conftest import ROOT

pytestmark = pytest.mark.services


def test_serve_with_a_config_file_starts_and_answers(served_config: Config, tmp_path: Path) -> None:
    config_file = tmp_path / "ctpipe.yaml"
    config_file.write_text(yaml.safe_dump(served_config.to_dict()))
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri(served_config.state_dir)}
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ctpipe.cli", "serve", "--config", str(config_file),
             "--port", str(port), "--no-log"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/models/{served_config.model_name}/ready"
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and ready is None:
            assert process.poll() is None, output.read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    ready = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert ready is not None and ready.get("ready") is True, output.read_text()[-3000:]
    finally:
        process.terminate()
        process.wait(timeout=60)
