"""The prediction log's `role` column (issue 18): champion, canary and shadow rows; files
written before the column (their rows are the champion's); readers return the answers
callers got unless asked for shadow rows; compaction of old and new files together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctpipe import predlog
from ctpipe.predlog import Prediction, PredictionBatch, PredictionLogWriter, compact, reader
from ctpipe.predlog import files as logfiles
from ctpipe.predlog.format import predictions_table, unify

MODEL = "churn"
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def batch(
    ids: list[str], at: datetime, version: str, role: str, **features: list
) -> PredictionBatch:
    return PredictionBatch(ids, at, version, [1] * len(ids), [0.5] * len(ids), features, role=role)


def write_old_file(root: Path, ids: list[str], at: datetime = T0, version: str = "1") -> Path:
    """A log file as a predictor wrote it before the role column existed."""
    table = predictions_table(
        MODEL, [batch(ids, at, version, predlog.ROLE_CHAMPION, age=[40.0] * len(ids))]
    ).drop_columns([predlog.ROLE])
    folder = root / MODEL / logfiles.date_folder(at.date())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / logfiles.part_name(logfiles.new_stamp(), logfiles.new_token())
    pq.write_table(table, path)
    return path


def write_new(root: Path, *items: PredictionBatch) -> None:
    with PredictionLogWriter(str(root), MODEL) as writer:
        writer.append(list(items))


def roles_by_id(table: pa.Table) -> list[tuple[str, str, str]]:
    rows = table.select([predlog.REQUEST_ID, predlog.ROLE, predlog.MODEL_VERSION]).to_pylist()
    return sorted((r["request_id"], r["role"], r["model_version"]) for r in rows)


def mixed_log(root: Path) -> None:
    """Old champion rows (no role column), then new champion, shadow and canary rows."""
    write_old_file(root, ["old-0", "old-1"])
    later = T0 + timedelta(minutes=5)
    write_new(
        root,
        batch(["a", "b"], later, "1", predlog.ROLE_CHAMPION, age=[1.0, 2.0]),
        batch(["a", "b"], later + timedelta(milliseconds=3), "2", predlog.ROLE_SHADOW),
        batch(["c"], later + timedelta(seconds=1), "2", predlog.ROLE_CANARY, age=[3.0]),
    )


def test_roles_are_checked_and_default_to_champion() -> None:
    assert Prediction("a", T0, "1", 1, 0.5).role == predlog.ROLE_CHAMPION
    assert batch(["a"], T0, "1", predlog.ROLE_SHADOW).role == "shadow"
    assert (predlog.ROLE_CHAMPION, predlog.ROLE_CANARY, predlog.ROLE_SHADOW) == (
        "champion",
        "canary",
        "shadow",
    )
    with pytest.raises(ValueError, match="role must be one of"):
        Prediction("a", T0, "1", 1, 0.5, role="challenger")
    with pytest.raises(ValueError, match="role must be one of"):
        PredictionBatch(["a"], T0, "1", [1], [0.5], role="")
    with pytest.raises(ValueError, match="role must be one of"):
        predlog.read_predictions("/nowhere", MODEL, roles=["champion", "nope"])
    with pytest.raises(TypeError, match="not the string"):
        predlog.read_predictions("/nowhere", MODEL, roles="shadow")  # type: ignore[arg-type]


def test_files_without_the_column_are_champion_rows(tmp_path: Path) -> None:
    write_old_file(tmp_path, ["x", "y"])
    table = predlog.read_predictions(str(tmp_path), MODEL)
    assert roles_by_id(table) == [("x", "champion", "1"), ("y", "champion", "1")]
    assert table.column_names == list(predlog.ALL_PREDICTION_COLUMNS)
    every = predlog.read_predictions(str(tmp_path), MODEL, roles=None)
    assert roles_by_id(every) == roles_by_id(table)
    assert predlog.read_predictions(str(tmp_path), MODEL, roles=["shadow"]).num_rows == 0
    only_champion = predlog.read_predictions(str(tmp_path), MODEL, roles=["champion"])
    assert only_champion.num_rows == 2
    assert predlog.read_predictions(str(tmp_path), MODEL, roles=["canary"]).num_rows == 0


def test_the_default_read_returns_the_answers_callers_got(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    table = predlog.read_predictions(str(tmp_path), MODEL)
    assert roles_by_id(table) == [
        ("a", "champion", "1"),
        ("b", "champion", "1"),
        ("c", "canary", "2"),
        ("old-0", "champion", "1"),
        ("old-1", "champion", "1"),
    ]
    # A read without the role column filters all the same.
    narrow = predlog.read_predictions(
        str(tmp_path), MODEL, columns=[predlog.REQUEST_ID, predlog.MODEL_VERSION]
    )
    assert narrow.column_names == [predlog.REQUEST_ID, predlog.MODEL_VERSION]
    assert sorted(narrow[predlog.REQUEST_ID].to_pylist()) == ["a", "b", "c", "old-0", "old-1"]


def test_every_role_keeps_a_request_and_its_shadow_row(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    every = predlog.read_predictions(str(tmp_path), MODEL, roles=None)
    assert roles_by_id(every) == [
        ("a", "champion", "1"),
        ("a", "shadow", "2"),
        ("b", "champion", "1"),
        ("b", "shadow", "2"),
        ("c", "canary", "2"),
        ("old-0", "champion", "1"),
        ("old-1", "champion", "1"),
    ]
    # Shadow rows have no features; the answers keep theirs.
    features = {
        (r["request_id"], r["role"]): r["features"]
        for r in every.select([predlog.REQUEST_ID, predlog.ROLE, predlog.FEATURES]).to_pylist()
    }
    assert features[("a", "champion")] == {"age": 1.0}
    assert features[("a", "shadow")] == {"age": None}
    shadow = predlog.read_predictions(str(tmp_path), MODEL, roles=[predlog.ROLE_SHADOW])
    assert roles_by_id(shadow) == [("a", "shadow", "2"), ("b", "shadow", "2")]
    # Without the role column in the answer, the rows are still told apart.
    ids = predlog.read_predictions(str(tmp_path), MODEL, roles=None, columns=[predlog.REQUEST_ID])
    assert ids.column_names == [predlog.REQUEST_ID]
    assert sorted(ids[predlog.REQUEST_ID].to_pylist()) == sorted(
        ["a", "a", "b", "b", "c", "old-0", "old-1"]
    )


def test_a_repeated_shadow_row_is_dropped_like_a_repeated_answer(tmp_path: Path) -> None:
    write_new(
        tmp_path,
        batch(["a"], T0, "1", predlog.ROLE_CHAMPION),
        batch(["a"], T0 + timedelta(seconds=1), "2", predlog.ROLE_SHADOW),
        batch(["a"], T0 + timedelta(seconds=2), "2", predlog.ROLE_SHADOW),  # replayed
        batch(["a"], T0 + timedelta(seconds=3), "1", predlog.ROLE_CHAMPION),  # a reused id
    )
    every = predlog.read_predictions(str(tmp_path), MODEL, roles=None)
    rows = every.select([predlog.ROLE, predlog.TIMESTAMP]).to_pylist()
    assert rows == [
        {"role": "champion", "timestamp": T0},
        {"role": "shadow", "timestamp": T0 + timedelta(seconds=1)},
    ]


def test_history_and_window_leave_shadow_rows_out(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    now = T0 + timedelta(hours=1)
    history, window = predlog.read_history_and_window(
        str(tmp_path), MODEL, now=now, window=timedelta(minutes=58)
    )
    assert sorted(history[predlog.REQUEST_ID].to_pylist()) == ["a", "b", "c", "old-0", "old-1"]
    assert history.column_names == list(predlog.REQUIRED_PREDICTION_COLUMNS)
    assert sorted(window[predlog.REQUEST_ID].to_pylist()) == ["a", "b", "c"]
    assert set(window[predlog.ROLE].to_pylist()) == {"champion", "canary"}
    history, window = predlog.read_history_and_window(
        str(tmp_path), MODEL, now=now, window=timedelta(minutes=58), roles=None
    )
    assert history.num_rows == 7 and predlog.ROLE in history.column_names
    assert window.num_rows == 5


def test_compaction_of_old_and_new_files_keeps_every_row_and_role(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    write_old_file(tmp_path, ["old-2"], T0 + timedelta(minutes=9))
    before = predlog.read_predictions(str(tmp_path), MODEL, roles=None)
    folder = tmp_path / MODEL / logfiles.date_folder(T0.date())
    assert len(list(folder.glob("*.parquet"))) >= 3
    result = compact.compact(str(tmp_path), MODEL)
    assert not result.errors, result.summary()
    files = list(folder.glob("*.parquet"))
    assert [f.name.split("-")[0] for f in files] == ["compact"]
    stored = pq.read_table(files[0])
    # The compact file states every row's role, old rows' included.
    assert stored[predlog.ROLE].null_count == 0
    assert sorted(set(stored[predlog.ROLE].to_pylist())) == ["canary", "champion", "shadow"]
    after = predlog.read_predictions(str(tmp_path), MODEL, roles=None)
    assert roles_by_id(after) == roles_by_id(before)
    assert after.num_rows == 8
    assert predlog.read_predictions(str(tmp_path), MODEL).num_rows == 6


def test_a_journal_from_before_the_column_joins_new_rows() -> None:
    old = predictions_table(MODEL, [batch(["a"], T0, "1", predlog.ROLE_CHAMPION)]).drop_columns(
        [predlog.ROLE]
    )
    new = predictions_table(MODEL, [batch(["a"], T0, "2", predlog.ROLE_SHADOW, age=[1.0])])
    table = unify([old, new])
    assert table.column_names == list(predlog.ALL_PREDICTION_COLUMNS)
    assert table[predlog.ROLE].to_pylist() == ["champion", "shadow"]


def test_the_file_by_file_path_filters_roles_too(tmp_path: Path) -> None:
    mixed_log(tmp_path)
    files = sorted(str(p) for p in (tmp_path / MODEL).rglob("*.parquet"))
    served = reader._read_one_by_one(files, None, None, predlog.SERVED_ROLES)
    assert sorted(served[predlog.REQUEST_ID].to_pylist()) == ["a", "b", "c", "old-0", "old-1"]
    every = reader._read_one_by_one(files, None, None, None)
    assert every.num_rows == 7
    assert every[predlog.ROLE].null_count == 0
