"""Which rows a retrain learns from: train.window, the backtest behind `auto`,
train.half_life, the refit on train + validation and the final refit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ctpipe import options, stages
from ctpipe.data import synthetic, tables
from ctpipe.data.split import WINDOW, split
from ctpipe.errors import ConfigError
from ctpipe.training import backtest, fit, windows
from ctpipe.training.search import Candidate, TrainResult
from tests.conftest import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)
US = 1_000_000


def hourly(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * 3600 * US


# ---------------------------------------------------------------- parsing and windows


@pytest.mark.parametrize(
    ("text", "kind", "span"),
    [
        ("expanding", "expanding", None),
        ("auto", "auto", None),
        ("sliding 5000", "sliding", options.Span(rows=5000)),
        ("sliding 25%", "sliding", options.Span(share=0.25)),
        ("sliding  90d", "sliding", options.Span(seconds=90 * 86400)),
    ],
)
def test_window_texts(text: str, kind: str, span: options.Span | None) -> None:
    spec = options.parse_window(text)
    assert (spec.kind, spec.span) == (kind, span)


@pytest.mark.parametrize("text", ["sliding", "sliding 0", "sliding 150%", "rolling 5", "sliding x"])
def test_bad_window_texts_are_refused_with_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.window: expected"):
        make_config(tmp_path, train={"window": text})


def test_auto_windows_must_be_concrete_and_half_life_needs_weighted_families(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"train\.auto_windows\[1\]: auto cannot"):
        make_config(tmp_path, train={"window": "auto", "auto_windows": ["expanding", "auto"]})
    with pytest.raises(ConfigError, match=r"train\.half_life: expected rows"):
        make_config(tmp_path, train={"half_life": "50%"})
    torch = [{"family": "torch_mlp", "params": {"max_epochs": 2}}]
    with pytest.raises(ConfigError, match=r"train\.half_life: family 'torch_mlp' takes no"):
        make_config(tmp_path, train={"half_life": "30d"}, search={"candidates": torch})


def test_window_start_by_rows_share_and_duration() -> None:
    times = hourly(100)
    assert windows.start(times, 100, options.parse_window("expanding")) == 0
    assert windows.start(times, 100, options.parse_window("sliding 30")) == 70
    assert windows.start(times, 80, options.parse_window("sliding 25%")) == 60
    # 10 hours back from the newest row (hour 79): hours 69..79
    assert windows.start(times, 80, options.parse_window("sliding 10h")) == 69
    assert windows.start(times, 10, options.parse_window("sliding 30")) == 0


def test_window_start_keeps_rows_of_one_timestamp_together() -> None:
    times = np.repeat(np.arange(10, dtype=np.int64), 10)  # ten rows per timestamp
    first = windows.start(times, 100, options.parse_window("sliding 15"))
    assert first == 80 and times[first - 1] != times[first]


def test_decay_weights_halve_every_half_life() -> None:
    by_rows = windows.decay_weights(hourly(5), options.Span(rows=2))
    assert by_rows[-1] / by_rows[-3] == pytest.approx(2.0)
    assert by_rows.mean() == pytest.approx(1.0)
    by_time = windows.decay_weights(hourly(49), options.parse_span("1d"))
    assert by_time[-1] / by_time[-25] == pytest.approx(2.0)
    assert by_time[-1] / by_time[0] == pytest.approx(4.0)


# ---------------------------------------------------------------- split within a window


def stream(rows: int = 2000, **drift: Any) -> pa.Table:
    drifts = (synthetic.Drift(**drift),) if drift else ()
    return synthetic.generate(rows, seed=3, numeric=4, categorical=1, days=40, drifts=drifts)


def test_sliding_window_narrows_train_and_validation_never_the_test_slice(
    tmp_path: Path,
) -> None:
    data = stream()
    full, everything = split(data, make_config(tmp_path))
    narrow, result = split(data, make_config(tmp_path, train={"window": "sliding 25%"}))
    assert narrow["test"].equals(full["test"])
    pre_test = full["train"].num_rows + full["validation"].num_rows
    learned = narrow["train"].num_rows + narrow["validation"].num_rows
    assert learned == pytest.approx(pre_test * 0.25, abs=2)
    # validation is its fraction of the rows from the window's start on
    assert narrow["validation"].num_rows == pytest.approx(0.15 * (learned + 400), abs=2)
    assert result.left_out == pre_test - learned
    assert "window sliding 25%" in result.describe()
    # the final refit's rows: the same window ending at the newest row, test included
    assert narrow[WINDOW].num_rows == pytest.approx(data.num_rows * 0.25, abs=2)
    assert (
        narrow[WINDOW]
        .slice(narrow[WINDOW].num_rows - narrow["test"].num_rows)
        .equals(narrow["test"])
    )
    # expanding: the window is every labelled row
    assert full[WINDOW].num_rows == data.num_rows
    assert everything.learn is not None and everything.learn.rows == data.num_rows


def test_a_window_too_short_to_split_names_the_window(tmp_path: Path) -> None:
    from ctpipe.errors import DataError

    config = make_config(tmp_path, train={"window": "sliding 30"}, split={"min_rows": 20})
    with pytest.raises(DataError, match=r"longer train\.window than sliding 30"):
        split(stream(), config)


# ---------------------------------------------------------------- backtest


def test_auto_prefers_the_recent_window_after_an_abrupt_change(tmp_path: Path) -> None:
    """The labelling rule flips at 60% of the stream: on the newest fold, after the change,
    a window reaching back before it has learned the old rule."""
    config = make_config(
        tmp_path,
        train={"window": "auto", "auto_windows": ["expanding", "sliding 25%"]},
        search={"candidates": [{"family": "linear", "params": {"C": 1.0}}]},
    )
    data = stream(4000, at=0.6, concept=1.0)
    ordered = data.sort_by("event_time")
    history = ordered.slice(0, int(data.num_rows * 0.8))
    from ctpipe.data import schema as schema_module

    schema = schema_module.infer(data, config)
    result = backtest.choose(history, schema, config, threads=1)
    assert result.chosen == "sliding 25%"
    assert [f.fold for f in result.folds if f.window == "expanding"] == [1, 2, 3]
    expanding, recent = result.mean("expanding"), result.mean("sliding 25%")
    assert expanding is not None and recent is not None and recent > expanding
    newest = {f.window: f.score for f in result.folds if f.fold == 1}
    assert newest["sliding 25%"] > newest["expanding"] + 0.03
    table = result.markdown()
    assert "sliding 25% **(chosen)**" in table and "| expanding |" in table


def test_auto_with_too_little_history_falls_back_to_the_first_window(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, train={"window": "auto"}, split={"min_rows": 400, "validation_fraction": 0.1}
    )
    from ctpipe.data import schema as schema_module

    data = stream(600)
    result = backtest.choose(data, schema_module.infer(data, config), config, threads=1)
    assert result.chosen == "expanding" and result.folds == ()
    assert "too few rows" in result.note


# ---------------------------------------------------------------- fitting


def staged(tmp_path: Path, **overrides: Any) -> tuple[Any, dict[str, str]]:
    """ingest -> validate -> split through the stage functions; returns config and paths."""
    config = make_config(
        tmp_path / "state",
        search={"candidates": [{"family": "linear", "params": {"C": 1.0}}]},
        **overrides,
    )
    p = {
        name: str(tmp_path / name)
        for name in (
            "data",
            "schema",
            "report",
            "train",
            "validation",
            "test",
            "window",
            "profile",
            "sample",
            "split",
        )
    }
    stages.ingest(config, p["data"])
    stages.validate(config, p["data"], p["schema"], p["report"]).raise_if_failed()
    stages.split(
        config,
        p["data"],
        p["schema"],
        p["train"],
        p["validation"],
        p["test"],
        p["profile"],
        p["sample"],
        window_out=p["window"],
        report_out=p["split"],
    )
    return config, p


def newest(path: str) -> str:
    return pc.max(tables.read(path).column("event_time")).as_py().isoformat()


def chosen_metadata(config: Any, p: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    candidate = stages.plan(config)[0]
    trained = stages.train(
        config, candidate, p["schema"], p["train"], p["validation"], str(tmp_path / "m0")
    )
    return trained.metadata()


def test_the_challenger_is_fitted_on_train_and_validation(tmp_path: Path) -> None:
    config, p = staged(tmp_path)
    meta = chosen_metadata(config, p, tmp_path)
    result = stages.refit(
        config, meta, p["schema"], p["train"], p["validation"], str(tmp_path / "challenger")
    )
    rows = tables.read(p["train"]).num_rows + tables.read(p["validation"]).num_rows
    assert result.rows == rows and meta["train_rows"] < rows
    assert result.end == newest(p["validation"])
    assert result.metadata()["fitted_slices"] == "train+validation"
    assert TrainResult.from_metadata(result.metadata()).candidate.id == meta["candidate"]
    # the same fit as the candidate fitted on both slices by hand
    both = pa.concat_tables([tables.read(p["train"]), tables.read(p["validation"])])
    schema = stages.load_schema(p["schema"])
    by_hand = fit.fit(Candidate.from_dict(stages.plan(config)[0]), both, schema, config, 1).model
    frame, _ = stages.load_frame(p["test"], schema)
    model = joblib.load(tmp_path / "challenger")
    assert np.allclose(model.predict_proba(frame), by_hand.predict_proba(frame))
    assert "# Split" in Path(p["split"]).read_text()


def refit_then_final(tmp_path: Path, **train: Any) -> tuple[Any, stages.Refit, dict[str, str]]:
    config, p = staged(tmp_path, train=train) if train else staged(tmp_path)
    meta = chosen_metadata(config, p, tmp_path)
    challenger = stages.refit(
        config, meta, p["schema"], p["train"], p["validation"], str(tmp_path / "challenger")
    )
    final = stages.final_refit(
        config,
        str(tmp_path / "challenger"),
        challenger.metadata(),
        p["schema"],
        p["window"],
        p["test"],
        str(tmp_path / "final"),
    )
    return config, final, p


def test_final_refit_learns_the_test_slice_when_it_agrees(tmp_path: Path) -> None:
    _, final, p = refit_then_final(tmp_path)
    assert final.final is not None and final.final["applied"] is True
    assert final.final["measure"] == "changed_label_share"
    assert 0 <= final.final["value"] <= final.final["tolerance"]
    assert final.rows == tables.read(p["window"]).num_rows
    assert final.end == newest(p["test"])  # the registered model saw the test slice
    record = json.loads(final.metadata()["final_refit"])
    assert record == final.final
    assert not filecmp_equal(tmp_path / "final", tmp_path / "challenger")


def filecmp_equal(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_final_refit_that_disagrees_keeps_the_blessed_model(tmp_path: Path) -> None:
    _, final, p = refit_then_final(tmp_path, final_refit_tolerance=1e-9)
    assert final.final is not None and final.final["applied"] is False
    assert final.final["value"] > 1e-9 and "the blessed model goes on" in final.final["reason"]
    assert filecmp_equal(tmp_path / "final", tmp_path / "challenger")
    assert final.end == newest(p["validation"])


def test_final_refit_off_passes_the_blessed_model_on(tmp_path: Path) -> None:
    _, final, _ = refit_then_final(tmp_path, final_refit=False)
    assert final.final == {"applied": False, "reason": "train.final_refit is off"}
    assert filecmp_equal(tmp_path / "final", tmp_path / "challenger")


def test_half_life_weights_recent_rows_more(tmp_path: Path) -> None:
    data = stream(3000, at=0.5, concept=1.0)
    candidate = Candidate("linear-0", "linear", {"C": 1.0})
    plain = make_config(tmp_path)
    weighted = make_config(tmp_path, train={"half_life": "2d"})
    from ctpipe.data import schema as schema_module

    schema = schema_module.infer(data, plain)
    newest_rows = data.slice(2700)
    old = fit.fit(candidate, data.slice(0, 2700), schema, plain, 1)
    new = fit.fit(candidate, data.slice(0, 2700), schema, weighted, 1)
    assert new.weighted and not old.weighted
    # after the change, a model that weights the newest rows predicts the newest rows better
    assert fit.score(new.model, newest_rows, schema, weighted, "roc_auc") > fit.score(
        old.model, newest_rows, schema, plain, "roc_auc"
    )


def test_times_stay_in_microseconds() -> None:
    when = [T0 + timedelta(hours=h) for h in range(3)]
    table = pa.table({"event_time": pa.array(when, pa.timestamp("us", tz="UTC"))})
    from ctpipe.data.split import times_of

    config = make_config(Path("/nonexistent"))
    assert list(np.diff(times_of(table, config))) == [3600 * US, 3600 * US]


def test_auto_chooses_the_final_refit_window_with_the_test_slice_in_view(tmp_path: Path) -> None:
    """The labelling rule flips at 82% of the stream: every row before the test slice is
    from the old world, so the gated challenger's backtest keeps `expanding`; the final
    refit's backtest, over every labelled row, sees the change and keeps the newest rows."""
    data = tmp_path / "stream.parquet"
    synthetic.write(stream(5000, at=0.82, concept=1.0), str(data))
    _, p = staged(
        tmp_path,
        data={"uri": str(data)},
        train={"window": "auto", "auto_windows": ["expanding", "sliding 25%"]},
    )
    report = Path(p["split"]).read_text()
    assert "## Training window: expanding" in report
    assert "## Final refit window: sliding 25%" in report
    window = tables.read(p["window"])
    assert window.num_rows == pytest.approx(5000 * 0.25, abs=5)
    assert newest(p["window"]) == newest(p["test"])
    assert tables.read(p["train"]).num_rows + tables.read(p["validation"]).num_rows == 4000


def test_the_gate_judges_on_the_test_rows_a_final_refit_champion_never_saw(
    tmp_path: Path,
) -> None:
    from ctpipe import registry
    from ctpipe.registry import ModelRef

    config, p = staged(tmp_path)
    test = tables.read(p["test"])
    frame, labels = stages.load_frame(p["test"], stages.load_schema(p["schema"]))
    times = test.column("event_time")

    def champion(end: Any) -> ModelRef:
        fit_tag = json.dumps({"end": end.isoformat()}) if end else "{}"
        return ModelRef("m", "4", None, "", {registry.TAG_FIT: fit_tag})

    # learned the first 100 test rows: judged on the other 500
    kept, kept_labels, notes = stages._rows_the_champion_never_saw(
        config, champion(times[99].as_py()), frame, labels, p["test"]
    )
    assert len(kept) == len(kept_labels) == test.num_rows - 100
    assert kept.equals(frame.iloc[100:].reset_index(drop=True))
    assert "champion v4 learned 100 of the 600 test rows" in notes[0]
    assert "never saw" in notes[0]
    # learned them all: judged on all, and the note says whom that favours
    kept, _, notes = stages._rows_the_champion_never_saw(
        config, champion(times[-1].as_py()), frame, labels, p["test"]
    )
    assert len(kept) == test.num_rows and "favours the champion" in notes[0]
    # a champion without the record (registered before it existed): nothing to drop
    assert (
        stages._rows_the_champion_never_saw(config, champion(None), frame, labels, p["test"])[2]
        == ()
    )
