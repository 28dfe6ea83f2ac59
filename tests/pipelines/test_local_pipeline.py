"""The whole pipeline through kfp.local: data on a real S3 endpoint (moto on loopback),
real MLflow (sqlite), one fresh process per step, exactly the component code a cluster runs.

One champion is trained once for the module; every bad input after it must fail with a
message naming the problem, and must leave the `champion` alias where it was.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctpipe import registry, storage
from ctpipe.config import Config
from ctpipe.data import synthetic
from ctpipe.pipelines.local import LocalRun, run_local
from tests.conftest import S3_ENV, make_config

pytestmark = pytest.mark.pipeline

BUCKET = "ctpipe-data"


@pytest.fixture(scope="module")
def world(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """S3 with a month-split CSV dataset, a state dir, and a first champion (v1)."""
    import boto3

    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as env:
        for key, value in S3_ENV.items():
            env.setenv(key, value)
        env.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("CTPIPE_TRAIN_THREADS", "1")
        storage._client.cache_clear()
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        client.create_bucket(Bucket=BUCKET)
        table = synthetic.generate(4000, seed=7)
        for i, part in enumerate((table.slice(0, 2000), table.slice(2000))):
            local = root / f"part-{i}.csv"
            synthetic.write(part, str(local))
            client.upload_file(str(local), BUCKET, f"events/part-{i}.csv")
        # No final refit: the second run's challenger is then the champion's exact twin.
        config = make_config(root / "state", train={"final_refit": False})
        config = config.replace(data=dataclasses.replace(config.data, uri=f"s3://{BUCKET}/events/"))
        first = run_local(config, out=io.StringIO())
        yield {"config": config, "first": first, "root": root, "client": client}
        storage._client.cache_clear()


def champion_version(config: Config) -> str | None:
    ref = registry.champion(config)
    return ref.version if ref else None


def test_first_run_registers_a_champion_from_s3(world: dict[str, Any]) -> None:
    run: LocalRun = world["first"]
    config: Config = world["config"]
    assert run.ok, run.errors
    assert run.data["rows"] == 4000 and run.data["files"] == 2
    assert run.data["source"] == f"s3://{BUCKET}/events/"
    assert len(run.candidates) == 3 and run.chosen in {c["candidate"] for c in run.candidates}
    assert run.blessed and run.registered_version == "1" and run.champion_before is None
    ref = registry.champion(config)
    assert ref is not None and ref.version == "1"
    assert ref.tags[registry.TAG_DATASET_HASH] == run.data["content_hash"]
    assert ref.tags[registry.TAG_SCHEMA_VERSION] == "1"
    assert ref.tags[registry.TAG_KFP_RUN_ID]  # the placeholder was resolved to a real id
    assert len(ref.tags[registry.TAG_MODEL_SHA256]) == 64
    model = registry.load_model(ref)
    proba = model.predict_proba(FRESH.to_pandas())
    assert proba.shape == (FRESH.num_rows, 2) and ((proba >= 0) & (proba <= 1)).all()


def test_second_run_compares_with_the_champion_on_the_same_rows(world: dict[str, Any]) -> None:
    config: Config = world["config"]
    run = run_local(config, out=io.StringIO())
    assert run.ok, run.errors
    comparison = run.evaluation["decision"]["comparison"]
    assert comparison["champion_version"] == "1"
    # Same data, same seed: the challenger is the champion's twin, and the interval says so.
    assert comparison["improvement"] == pytest.approx(0.0, abs=1e-12)
    assert run.blessed and run.registered_version == "2" and run.champion_before == "1"
    # The default progressive rollout: v2 is the challenger, and v1 serves until live
    # traffic proves v2 (the rollout controller's part, tests/rollout).
    assert registry.get_alias(config, registry.CHALLENGER).version == "2"
    assert champion_version(config) == "1"


def _put(
    world: dict[str, Any], key: str, table: pa.Table | None = None, raw: bytes | None = None
) -> str:
    local = world["root"] / key.replace("/", "_")
    if raw is None:
        synthetic.write(table, str(local))
        raw = local.read_bytes()
    world["client"].put_object(Bucket=BUCKET, Key=key, Body=raw)
    return f"s3://{BUCKET}/{key}"


def _run_bad(world: dict[str, Any], uri: str) -> LocalRun:
    config: Config = world["config"]
    before = champion_version(config)
    run = run_local(
        config.replace(data=dataclasses.replace(config.data, uri=uri)), out=io.StringIO()
    )
    assert not run.ok, "a bad input must fail the run"
    assert run.registered_version is None
    assert champion_version(config) == before, "a failed run moved the champion"
    return run


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, values)


FRESH = synthetic.generate(1500, seed=11)


def test_corrupt_parquet(world: dict[str, Any]) -> None:
    uri = _put(world, "bad/corrupt.parquet", raw=b"PAR1 this is not really parquet PAR1")
    run = _run_bad(world, uri)
    assert run.failed_step == "ingest"
    assert any("corrupt.parquet: not a readable Parquet file" in e for e in run.errors)


def test_csv_with_a_missing_column(world: dict[str, Any]) -> None:
    uri = _put(world, "bad/missing/part.csv", FRESH.drop_columns(["num_3"]))
    run = _run_bad(world, uri)
    assert run.failed_step == "validate"
    assert any("part.csv" in e and "'num_3'" in e and "missing_column" in e for e in run.errors)


def test_an_all_null_column(world: dict[str, Any]) -> None:
    uri = _put(
        world, "bad/nulls.parquet", _replace(FRESH, "num_4", pa.nulls(FRESH.num_rows, pa.float64()))
    )
    run = _run_bad(world, uri)
    assert any("'num_4'" in e and "all_null" in e for e in run.errors), run.errors


def test_a_wrong_dtype(world: dict[str, Any]) -> None:
    values = FRESH.column("num_5").cast(pa.string()).to_pylist()
    values[4] = "abc"
    values[17] = "n/a"
    uri = _put(world, "bad/dtype.csv", _replace(FRESH, "num_5", pa.array(values)))
    run = _run_bad(world, uri)
    message = "\n".join(run.errors)
    assert "'num_5'" in message and "type_change" in message
    assert "'abc' (row 5)" in message and "'n/a' (row 18)" in message


def test_an_empty_file(world: dict[str, Any]) -> None:
    uri = _put(world, "bad/empty.csv", raw=b"")
    run = _run_bad(world, uri)
    assert any("empty.csv: the file is empty" in e for e in run.errors)


def test_labels_missing(world: dict[str, Any]) -> None:
    uri = _put(world, "bad/nolabels.jsonl", FRESH.drop_columns(["label"]))
    run = _run_bad(world, uri)
    assert any("'label'" in e and "missing_label" in e for e in run.errors)


def test_a_flood_of_unseen_categories(world: dict[str, Any]) -> None:
    region = pc.if_else(
        pc.less(pa.array(range(FRESH.num_rows)), FRESH.num_rows // 2),
        pa.array([f"planet-{i % 40}" for i in range(FRESH.num_rows)]),
        FRESH.column("region"),
    )
    uri = _put(world, "bad/categories.parquet", _replace(FRESH, "region", region))
    # New categories are drift, not corruption: they stop a run only where the user says so.
    config: Config = world["config"]
    hard = dataclasses.replace(config.validation, distribution="hard")
    run = _run_bad({**world, "config": config.replace(validation=hard)}, uri)
    assert any(
        "'region'" in e and "unseen_category (distribution)" in e and "50.0% of rows" in e
        for e in run.errors
    ), run.errors


def test_a_bad_config_key_is_refused_before_anything_runs(
    world: dict[str, Any], tmp_path: Path
) -> None:
    config: Config = world["config"]
    before = champion_version(config)
    bad = tmp_path / "ctpipe.yaml"
    bad.write_text(
        f"task: classification\ntarget: label\ntimestamp: event_time\nstate_dir: {config.state_dir}\nsplitt: {{}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ctpipe.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "splitt: unknown key; did you mean 'split'?" in result.stderr
    assert champion_version(config) == before


def test_worse_data_is_refused_and_the_champion_stays(world: dict[str, Any]) -> None:
    config: Config = world["config"]
    before = champion_version(config)
    # Same world, but 45% of the labels in the older (training) rows are flipped; the
    # newest rows, where both models are tested, stay clean.
    worse = synthetic.generate(4000, seed=7, label_noise=0.45, label_noise_until=0.6)
    uri = _put(world, "worse/events.parquet", worse)
    run = run_local(
        config.replace(data=dataclasses.replace(config.data, uri=uri)), out=io.StringIO()
    )
    assert run.ok, run.errors
    assert not run.blessed and run.registered_version is None
    comparison = run.evaluation["decision"]["comparison"]
    assert comparison["champion_version"] == before
    assert comparison["high"] < 0 and comparison["low"] < -config.gate.margin
    assert any("worse than the champion" in r for r in run.evaluation["decision"]["reasons"])
    assert champion_version(config) == before
