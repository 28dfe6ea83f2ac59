"""The torch MLP candidate: the sklearn contract, embeddings, determinism, early stopping,
safe persistence (weights-only, checksummed), devices, and a round trip through MLflow."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from ctpipe import config as config_module
from ctpipe import registry
from ctpipe.config import Config
from ctpipe.data import schema as schema_module
from ctpipe.data import synthetic
from ctpipe.errors import ConfigError, RegistryError
from ctpipe.features import build_model, build_preprocessor
from ctpipe.training import torch_net
from ctpipe.training.families import build_estimator
from ctpipe.training.search import Candidate
from ctpipe.training.torch_mlp import (
    ModelWeightsError,
    TorchMLPClassifier,
    TorchMLPRegressor,
    default_embedding_dim,
    move_to_device,
    one_hot_groups,
    train_device,
)
from tests.conftest import make_config, run_fresh

# Small and quick, still enough to learn the synthetic rule.
SMALL: dict[str, Any] = {
    "hidden_units": 32,
    "batch_size": 64,
    "max_epochs": 30,
    "patience": 5,
    "n_threads": 1,
}


def synthetic_frame(
    rows: int = 800, seed: int = 3, task: str = "classification", categorical: int = 3
) -> tuple[Any, Any, Any]:
    table = synthetic.generate(rows, seed=seed, task=task, categorical=categorical)
    config = config_module.from_dict(
        {"task": task, "target": "label", "timestamp": "event_time", "id_column": "request_id"}
    )
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()
    return schema, frame[schema.feature_names], frame["label"]


def fitted_pipeline(task: str = "classification", seed: int = 0, **params: Any) -> Any:
    schema, x, y = synthetic_frame(task=task)
    model = build_model(schema, build_estimator("torch_mlp", task, {**SMALL, **params}, seed=seed))
    return model.fit(x, y), x, y


# ----------------------------------------------------------------- sklearn contract


# No check is expected to fail; check_array_api_input skips itself unless SCIPY_ARRAY_API=1.
@parametrize_with_checks([TorchMLPClassifier(n_threads=1), TorchMLPRegressor(n_threads=1)])
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_fit_returns_self_and_records_what_it_did() -> None:
    model, x, y = fitted_pipeline()
    mlp = model[-1]
    assert isinstance(mlp, TorchMLPClassifier)
    assert mlp.get_params()["hidden_units"] == 32
    assert mlp.set_params(hidden_units=64) is mlp and mlp.hidden_units == 64
    assert list(mlp.classes_) == sorted(set(y))
    assert mlp.train_device_ == "cpu" and mlp.device_ == "cpu" and mlp.amp_dtype_ is None
    assert 1 <= mlp.best_epoch_ <= mlp.n_iter_ <= SMALL["max_epochs"]
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (model.predict(x) == mlp.classes_[proba.argmax(axis=1)]).all()


def test_it_learns_the_synthetic_rule() -> None:
    from sklearn.metrics import r2_score, roc_auc_score

    schema, x, y = synthetic_frame(2000, seed=5)
    model = build_model(schema, TorchMLPClassifier(**SMALL)).fit(x[:1600], y[:1600])
    assert roc_auc_score(y[1600:], model.predict_proba(x[1600:])[:, 1]) > 0.8
    schema, x, y = synthetic_frame(2000, seed=5, task="regression")
    model = build_model(schema, TorchMLPRegressor(**SMALL)).fit(x[:1600], y[:1600])
    assert r2_score(y[1600:], model.predict(x[1600:])) > 0.5


def test_multiclass_with_string_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = np.array(["low", "mid", "high"])[np.digitize(x[:, 0] + x[:, 1], [-0.7, 0.7])]
    mlp = TorchMLPClassifier(**{**SMALL, "max_epochs": 60, "learning_rate": 0.01}).fit(x, y)
    assert list(mlp.classes_) == ["high", "low", "mid"]
    assert mlp.predict_proba(x).shape == (600, 3)
    assert mlp.score(x, y) > 0.9
    with pytest.raises(ValueError, match="at least 2 classes"):
        TorchMLPClassifier(**SMALL).fit(x, np.zeros(600))


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("hidden_units", 0, "hidden_units must be a positive integer"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("validation_fraction", 1.5, "validation_fraction"),
        ("embedding_dim", -1, "embedding_dim"),
        ("categorical_groups", "magic", "categorical_groups must be 'auto'"),
        ("categorical_groups", [(3, 9)], r"\(3, 9\) is not a column range"),
    ],
)
def test_bad_params_are_refused_by_name(param: str, value: Any, message: str) -> None:
    x = np.zeros((20, 4))
    with pytest.raises(ValueError, match=message):
        TorchMLPRegressor(**{param: value}).fit(x, np.arange(20.0))


# ------------------------------------------------------------------------ embeddings


def encoder_blocks(schema: Any, frame: Any) -> tuple[Any, list[tuple[int, int]]]:
    """The one-hot block of each categorical feature, from the fitted encoder itself."""
    preprocessor = build_preprocessor(schema)
    matrix = preprocessor.fit_transform(frame)
    start = preprocessor.output_indices_["categorical"].start
    encoder = preprocessor.named_transformers_["categorical"]["one_hot"]
    blocks = []
    for i, categories in enumerate(encoder.categories_):
        infrequent = encoder.infrequent_categories_[i]
        width = len(categories) - (len(infrequent) - 1 if infrequent is not None else 0)
        blocks.append((start, start + width))
        start += width
    return matrix, blocks


def test_one_hot_blocks_are_found_in_ctpipe_features() -> None:
    schema, x, _ = synthetic_frame(categorical=4)
    matrix, blocks = encoder_blocks(schema, x)
    assert len(blocks) == 4 and blocks[0][0] == len(schema.numeric_features)
    assert one_hot_groups(matrix) == blocks


def test_one_hot_blocks_with_an_infrequent_bucket_and_nulls() -> None:
    rng = np.random.default_rng(1)
    rows = 1000
    many = rng.choice([f"shop-{i}" for i in range(60)], rows).astype(object)
    many[:30] = None
    table = pa.table(
        {
            "event_time": pa.array(np.arange(rows) * 1_000_000, pa.timestamp("us", "UTC")),
            "x": rng.normal(size=rows),
            "shop": pa.array(many, pa.string()),
            "flag": rng.choice(["a", "b"], rows),
            "label": rng.integers(0, 2, rows),
        }
    )
    config = config_module.from_dict(
        {
            "task": "classification",
            "target": "label",
            "timestamp": "event_time",
            "features": {"categorical": ["shop"]},
        }
    )
    schema = schema_module.infer(table, config)
    frame = table.to_pandas()[schema.feature_names]
    matrix, blocks = encoder_blocks(schema, frame)
    assert blocks[0][1] - blocks[0][0] == 32  # 31 kept shops + the infrequent bucket
    assert one_hot_groups(matrix) == blocks


def test_no_one_hot_blocks_in_numeric_data() -> None:
    rng = np.random.default_rng(0)
    assert one_hot_groups(rng.normal(size=(100, 6))) == []
    # Binary flags that are not mutually exclusive are not one block.
    flags = rng.integers(0, 2, size=(100, 3)).astype(float)
    assert one_hot_groups(flags) == []


def test_each_categorical_gets_an_embedding_that_is_a_lookup() -> None:
    model, x, _ = fitted_pipeline()
    mlp = model[-1]
    matrix = model[0].transform(x)
    assert mlp.categorical_groups_ == one_hot_groups(matrix)
    assert mlp.embedding_dims_ == [default_embedding_dim(b - a) for a, b in mlp.categorical_groups_]
    network = mlp.network_
    start, stop = mlp.categorical_groups_[0]
    weight = network.embeddings[0].weight.detach()  # (dim, categories)
    block = torch.from_numpy(matrix[:5, start:stop].astype(np.float32))
    looked_up = weight.T[block.argmax(dim=1)]
    torch.testing.assert_close(network.embeddings[0](block), looked_up)
    # A category the encoder never saw (an all-zero block) embeds as zero, not as category 0.
    torch.testing.assert_close(
        network.embeddings[0](torch.zeros(1, stop - start)), torch.zeros(1, weight.shape[0])
    )


def test_embeddings_can_be_switched_off_or_given() -> None:
    plain, _, _ = fitted_pipeline(embedding_dim=0)
    assert plain[-1].categorical_groups_ == [] and len(plain[-1].network_.embeddings) == 0
    sized, _, _ = fitted_pipeline(embedding_dim=5)
    assert set(sized[-1].embedding_dims_) == {5}
    x = np.hstack([np.random.default_rng(0).normal(size=(50, 2)), np.eye(5)[np.arange(50) % 5]])
    given = TorchMLPRegressor(categorical_groups=[(2, 7)], **SMALL).fit(x, np.arange(50.0))
    assert given.categorical_groups_ == [(2, 7)] and given.embedding_dims_ == [4]


# ------------------------------------------------------------ determinism, stopping


def test_same_seed_same_model_different_seed_different_model() -> None:
    first, x, _ = fitted_pipeline(seed=4)
    second, _, _ = fitted_pipeline(seed=4)
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))
    for name, tensor in first[-1].network_.state_dict().items():
        assert torch.equal(tensor, second[-1].network_.state_dict()[name]), name
    other, _, _ = fitted_pipeline(seed=5)
    assert not np.array_equal(first.predict_proba(x), other.predict_proba(x))


def test_fitting_leaves_torch_global_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fitted_pipeline(n_threads=1)
    assert torch.equal(torch.rand(3), expected), "fit consumed or reseeded the global RNG"
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_early_stopping_keeps_the_best_epoch_on_the_newest_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10))
    y = x[:, 0] + rng.normal(0, 2.0, 400)  # mostly noise: a big net soon overfits
    mlp = TorchMLPRegressor(
        hidden_units=256, max_epochs=300, patience=4, dropout=0.0, n_threads=1
    ).fit(x, y)
    assert mlp.n_iter_ < 300, "never stopped early"
    assert mlp.n_iter_ == mlp.best_epoch_ + 4
    assert len(mlp.validation_loss_curve_) == mlp.n_iter_
    assert mlp.best_validation_loss_ == min(mlp.validation_loss_curve_)
    # The kept weights are the best epoch's: their loss on the holdout (the last 10% of
    # rows, in scaled units) is the recorded best.
    held_x, held_y = x[-40:], (y[-40:] - mlp.y_mean_) / mlp.y_scale_
    scaled = (mlp.predict(held_x) - mlp.y_mean_) / mlp.y_scale_
    assert np.mean((scaled - held_y) ** 2) == pytest.approx(mlp.best_validation_loss_, rel=1e-4)


def test_no_holdout_trains_every_epoch() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    mlp = TorchMLPRegressor(max_epochs=7, validation_fraction=0.0, n_threads=1).fit(x, x[:, 0])
    assert mlp.n_iter_ == 7 and mlp.best_epoch_ == 7 and mlp.validation_loss_curve_ == []
    assert mlp.best_validation_loss_ is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_amp_path_trains(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU fit() autocasts; CPU autocast runs the same code path here.
    monkeypatch.setattr(torch_net, "amp_dtype", lambda device, amp: dtype if amp else None)
    model, x, y = fitted_pipeline()
    assert model[-1].amp_dtype_ == str(dtype).removeprefix("torch.")
    assert model.score(x, y) > 0.7
    off, _, _ = fitted_pipeline(amp=False)
    assert off[-1].amp_dtype_ is None


# ------------------------------------------------------------------------- pickling


def pickled_globals(blob: bytes) -> set[str]:
    """Every module.name a pickle would import when loaded."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(blob):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif opcode.name == "GLOBAL":
            found.add(str(arg).replace(" ", "."))
    return found


def test_a_pickle_holds_weights_not_a_torch_module() -> None:
    model, x, _ = fitted_pipeline()
    blob = pickle.dumps(model)
    modules = pickled_globals(blob)
    assert "ctpipe.training.torch_mlp.TorchMLPClassifier" in modules
    assert not [m for m in modules if m.startswith("torch")], modules
    loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded[-1].device_ == "cpu" and loaded[-1].train_device_ == "cpu"


def test_tampered_weight_bytes_are_refused() -> None:
    model, _, _ = fitted_pipeline()
    payload = model[-1].__getstate__()["_weights"]
    blob = bytearray(pickle.dumps(model))
    at = bytes(blob).find(payload)
    assert at > 0
    blob[at + len(payload) // 2] ^= 0x01
    with pytest.raises(ModelWeightsError, match=r"weights are corrupted.*Refusing to load"):
        pickle.loads(bytes(blob))


RAN: list[str] = []


def _mark_ran() -> None:
    RAN.append("payload ran")


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_mark_ran, ())


def _forged(mlp: Any, content: Any) -> Any:
    """The estimator's pickled state with its weights replaced, checksum fixed up to match."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    state = mlp.__getstate__()
    state["_weights"] = buffer.getvalue()
    state["_weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    return state


def test_weights_that_are_not_plain_tensors_are_never_unpickled() -> None:
    model, _, _ = fitted_pipeline()
    mlp = model[-1]
    state = _forged(mlp, {"body.0.weight": _Payload()})
    with pytest.raises(ModelWeightsError, match="weights_only=True refused"):
        TorchMLPClassifier.__new__(TorchMLPClassifier).__setstate__(state)
    assert RAN == [], "torch.load executed code from the weights"


def test_weights_of_another_shape_are_refused() -> None:
    model, _, _ = fitted_pipeline()
    mlp = model[-1]
    wrong = {k: torch.zeros(3, 3) for k in mlp.network_.state_dict()}
    with pytest.raises(ModelWeightsError, match="do not fit the network"):
        TorchMLPClassifier.__new__(TorchMLPClassifier).__setstate__(_forged(mlp, wrong))


# -------------------------------------------------------------------------- devices


def test_a_model_trained_for_a_gpu_loads_on_cpu_and_moves() -> None:
    model, x, _ = fitted_pipeline()
    expected = model.predict_proba(x)
    model[-1].device = "cuda"  # as if it had been trained with device="cuda"
    loaded = pickle.loads(pickle.dumps(model))
    wanted = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert loaded[-1].device_ == wanted
    assert move_to_device(loaded, "cpu") is loaded and loaded[-1].device_ == "cpu"
    assert next(loaded[-1].network_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(x), expected)
    assert train_device(loaded) == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        TorchMLPRegressor(device="cuda", **SMALL).fit(np.zeros((10, 2)), np.arange(10.0))
    model, _, _ = fitted_pipeline()
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        move_to_device(model, "cuda")


def test_other_models_pass_through_without_torch() -> None:
    script = (
        "import sys, numpy as np\n"
        "from sklearn.linear_model import Ridge\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "from ctpipe.training.torch_mlp import move_to_device, train_device\n"
        "m = make_pipeline(StandardScaler(), Ridge()).fit(np.eye(3), [1.0, 2.0, 3.0])\n"
        "assert move_to_device(m, 'auto') is m and train_device(m) is None\n"
        "from ctpipe.training.families import build_estimator\n"
        "build_estimator('torch_mlp', 'classification', {}, seed=0)\n"
        "print('torch' in sys.modules)\n"
    )
    assert run_fresh(script) == ["False"]


# ---------------------------------------------------------------- family and config


def test_the_family_takes_seed_threads_and_params_from_kfp() -> None:
    # KFP hands numbers over as doubles; Candidate.from_dict restores the integers.
    candidate = Candidate.from_dict(
        {
            "id": "torch_mlp-0",
            "family": "torch_mlp",
            "params": {"hidden_units": 64.0, "dropout": 0.0, "max_epochs": 3.0, "amp": True},
        }
    )
    mlp = build_estimator("torch_mlp", "regression", candidate.params, seed=9, threads=2)
    assert isinstance(mlp, TorchMLPRegressor)
    assert (mlp.hidden_units, mlp.max_epochs, mlp.random_state, mlp.n_threads) == (64, 3, 9, 2)
    mlp.fit(np.random.default_rng(0).normal(size=(50, 3)), np.arange(50.0))
    assert mlp.n_iter_ <= 3


def test_config_knows_the_family_and_its_params(tmp_path: Path) -> None:
    search = {"candidates": [{"family": "torch_mlp", "params": {"hidden_units": [32, 64]}}]}
    assert make_config(tmp_path, search=search).search.candidates[0].family == "torch_mlp"
    bad = {"candidates": [{"family": "torch_mlp", "params": {"hiden_units": 32}}]}
    with pytest.raises(ConfigError, match="did you mean 'hidden_units'"):
        make_config(tmp_path, search=bad)


# --------------------------------------------------------------------------- MLflow


def test_round_trip_through_mlflow(small_config: Config, tmp_path: Path) -> None:
    model, x, _ = fitted_pipeline()
    saved = registry.save_model_dir(model, x.head(3), tmp_path / "model")
    assert saved.train_device == train_device(model) == "cpu"
    _, version = registry.log_and_register(
        small_config,
        saved,
        run_name="torch",
        params={"family": "torch_mlp", "device": saved.train_device},
        metrics={"test_roc_auc": 0.8},
        tags={registry.TAG_KFP_RUN_ID: "run-1"},
        texts={},
    )
    registry.promote(small_config, version, expected_champion=None)
    ref = registry.champion(small_config)
    assert ref is not None
    loaded = registry.load_model(ref)
    assert isinstance(loaded[-1], TorchMLPClassifier)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    run = registry.client(small_config).get_run(ref.run_id)
    assert run.data.params["device"] == "cpu"

    # A changed byte anywhere in the stored pickle: the registry refuses before unpickling.
    pickles = list(Path(small_config.state_dir, "mlartifacts").rglob(registry.PICKLE_FILE))
    assert pickles
    for path in pickles:
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="the artifact was changed"):
        registry.load_model(ref)
