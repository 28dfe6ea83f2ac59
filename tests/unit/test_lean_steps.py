"""Every pipeline step is a fresh process; steps that do not need a heavy library must not
import it (mlflow, scikit-learn and torch each cost seconds). pandas is not on the list:
pyarrow itself imports it the first time it builds any array."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctpipe.config import Config
from tests.conftest import run_fresh

HEAVY = ("mlflow", "sklearn", "torch", "evidently", "kserve", "scipy")

SCRIPT = """
import hashlib, json, sys
from ctpipe import stages
from ctpipe.config import from_dict
config = from_dict(json.loads(sys.argv[1]))
work = sys.argv[2]
step = sys.argv[3]
if step == "ingest":
    stages.ingest(config, work + "/data")
elif step == "validate":
    stages.validate(config, work + "/data", work + "/schema", work + "/report")
elif step == "split":
    stages.split(config, work + "/data", work + "/schema", work + "/train", work + "/validation",
                 work + "/test", work + "/profile", work + "/reference")
elif step == "plan":
    stages.plan(config)
elif step == "select":
    meta = {"candidate": "linear-0", "family": "linear", "params": "{}", "metric": "roc_auc",
            "validation_score": 0.8, "train_rows": 1, "validation_rows": 1, "seconds": 0.1,
            "model_sha256": hashlib.sha256(b"model").hexdigest()}
    open(work + "/m0", "w").write("model")
    stages.select(config, [(work + "/m0", meta)], work + "/best")
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[4].split(",")))
print(json.dumps(heavy))
"""


# drift_report is not on the list: it always builds an evidently page (a first run's is
# the new data's own profile), and it is for people, beside infra-validate and register.
LIGHT_STEPS = ("ingest", "validate", "split", "plan", "select")


@pytest.mark.parametrize("step", LIGHT_STEPS)
def test_light_steps_import_no_heavy_library(
    step: str, small_config: Config, tmp_path: Path
) -> None:
    config = json.dumps(small_config.to_dict())
    for earlier in ("ingest", "validate", "split")[: LIGHT_STEPS.index(step)]:
        run_fresh(SCRIPT, config, str(tmp_path), earlier, "")
    output = run_fresh(SCRIPT, config, str(tmp_path), step, ",".join(HEAVY))
    assert json.loads(output[-1]) == [], f"{step} imported heavy libraries"


def test_deploy_renders_from_the_location_register_hands_on_without_mlflow(
    small_config: Config, tmp_path: Path
) -> None:
    script = (
        "import json, sys\n"
        "from ctpipe import stages\n"
        "from ctpipe.config import from_dict\n"
        "from ctpipe.deploy import ModelLocation\n"
        "location = ModelLocation('3', 'ab' * 32, 's3://models/7/artifacts')\n"
        "result = stages.deploy(from_dict(json.loads(sys.argv[1])), sys.argv[2], location=location)\n"
        f"heavy = sorted({{n.split('.')[0] for n in sys.modules}} & {set(HEAVY)!r})\n"
        "print(json.dumps([result.version, heavy]))\n"
    )
    manifest = tmp_path / "isvc.yaml"
    version, heavy = json.loads(
        run_fresh(script, json.dumps(small_config.to_dict()), str(manifest))[-1]
    )
    assert version == "3" and heavy == [], f"deploy imported {heavy}"
    text = manifest.read_text()
    assert "s3://models/7/artifacts" in text and "ab" * 32 in text


def test_a_step_process_skips_the_final_garbage_collection() -> None:
    """The last collection at exit walks every object the step's libraries made (~1 s
    after MLflow); a step freezes them instead, after the other exit handlers ran."""
    script = (
        "import atexit, gc\n"
        # Registered first, so it runs last: it sees what the interpreter will collect.
        "atexit.register(lambda: print('frozen' if gc.get_freeze_count() else 'not frozen'))\n"
        "from ctpipe import steplog\n"
        "with steplog.step('probe') as say:\n"
        "    say('working')\n"
    )
    assert run_fresh(script) == ["[ctpipe:probe] working", "frozen"]
