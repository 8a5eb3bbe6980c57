"""Streaming SAE training: atom recovery, exact resume, every method, the outputs on disk."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from raypipe.concepts.checkpoint import load_checkpoint
from raypipe.concepts.concept_model import ConceptModel
from raypipe.concepts.methods import SAE_METHODS
from raypipe.concepts.sae_training import (ResumeMismatchError, holdout_partition, lr_factor,
                                           train_sae, warmup_for)
from raypipe.concepts.training_config import TrainConfig
from tests.concepts.synthetic import SPLIT, best_cosines, planted_sparse_data, write_store


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster than two on the shared 2-core test machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_train_config(**overrides) -> TrainConfig:
    """Small, fast settings for tests (CPU, frequent logs)."""
    base = dict(method="topk_sae", n_concepts=16, top_k=2, epochs=1, batch_size=64, lr=1e-2,
                warmup_steps=2, shuffle_buffer=128, seed=0, checkpoint_every=1000, log_every=3,
                device="cpu", holdout_shards=1)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """20k rows from 64 planted atoms in d=32 (k=3 per row), 5 shards (the last held out)."""
    data = planted_sparse_data(rows=20_000, d=32, n_atoms=64, k=3, seed=0)
    return data, write_store(tmp_path_factory.mktemp("planted") / "store", data.x, 5)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """600 rows of d=8 in 3 shards (200 each)."""
    data = planted_sparse_data(rows=600, d=8, n_atoms=12, k=2, seed=1)
    return write_store(tmp_path_factory.mktemp("small") / "store", data.x, 3)


def test_topk_sae_recovers_planted_atoms(planted, tmp_path):
    data, store = planted
    config = make_train_config(n_concepts=128, top_k=3, epochs=5, batch_size=256, lr=1e-2,
                               warmup_steps=20, shuffle_buffer=4096, log_every=20)
    model = train_sae(store, SPLIT, config, tmp_path, progress=False)
    cos = best_cosines(data.atoms, model.dictionary)
    assert np.mean(cos > 0.9) >= 0.8, np.sort(cos)
    # held-out metrics, checked against a direct computation on the held-out shard
    held = data.x[16_000:]
    codes = model.encode(held)
    x_hat = model.decode(codes)
    r2 = 1 - ((held - x_hat) ** 2).sum() / ((held - held.mean(0)) ** 2).sum()
    metrics = model.meta["metrics"]
    assert metrics["r2"] == pytest.approx(r2, abs=1e-4) and metrics["r2"] > 0.85
    assert metrics["l0"] == pytest.approx(3.0)  # TopK: exactly k per row
    assert metrics["eval_rows"] == 4_000 and model.meta["train_rows"] == 16_000


def test_resume_equals_an_uninterrupted_run(small_store, tmp_path):
    # 400 training rows / 64 = 7 steps per epoch (the last one short), 3 epochs = 21 steps;
    # stop mid-epoch 2 at step 10, away from the checkpoint and log grids
    config = make_train_config(epochs=3, checkpoint_every=4)
    whole = train_sae(small_store, SPLIT, config, tmp_path / "whole", progress=False)

    assert train_sae(small_store, SPLIT, config, tmp_path / "cut", progress=False,
                     stop_after_steps=10) is None
    ck = load_checkpoint(tmp_path / "cut" / "checkpoint")
    assert (ck["step"], ck["epoch"], ck["rows_in_epoch"]) == (10, 1, 3 * 64)
    assert not (tmp_path / "cut" / "dictionary.json").exists()
    resumed = train_sae(small_store, SPLIT, config, tmp_path / "cut", progress=False)

    assert torch.equal(resumed.dictionary, whole.dictionary)
    for key, value in whole.tensors.items():
        assert torch.equal(resumed.tensors[key], value), key
    for key in ("r2", "mse", "l0", "dead_fraction", "holdout_dead_fraction"):
        assert resumed.meta["metrics"][key] == whole.meta["metrics"][key], key
    a = load_checkpoint(tmp_path / "whole" / "checkpoint")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint")
    assert a["step"] == b["step"] == 21
    for key, value in a["optimizer"]["state"].items():
        for name, t in value.items():
            assert torch.equal(t, b["optimizer"]["state"][key][name]), (key, name)


def test_resume_refuses_a_different_config(small_store, tmp_path):
    config = make_train_config()
    train_sae(small_store, SPLIT, config, tmp_path, progress=False, stop_after_steps=2)
    with pytest.raises(ResumeMismatchError, match=r"lr: 0.01 -> 0.02"):
        train_sae(small_store, SPLIT, make_train_config(lr=2e-2), tmp_path, progress=False)
    # fields that cannot change the weights may differ
    train_sae(small_store, SPLIT, make_train_config(checkpoint_every=5, log_every=7), tmp_path,
              progress=False, stop_after_steps=3)


def test_resume_refuses_another_store_with_the_same_layout(small_store, tmp_path):
    config = make_train_config()
    train_sae(small_store, SPLIT, config, tmp_path / "out", progress=False, stop_after_steps=2)
    other = planted_sparse_data(rows=600, d=8, n_atoms=12, k=2, seed=7).x * 3 + 5
    other_store = write_store(tmp_path / "other", other.astype(np.float32), 3)  # 3 x 200 rows too
    assert [len(s) for s in (other_store, small_store)] == [600, 600]
    with pytest.raises(ResumeMismatchError, match=r"data.train_checksums"):
        train_sae(other_store, SPLIT, config, tmp_path / "out", progress=False)
    # the same store at another path is the same data: it resumes
    moved = tmp_path / "moved"
    shutil.copytree(small_store.path, moved)
    from raypipe.store import ActivationStore

    assert train_sae(ActivationStore(str(moved)), SPLIT, config, tmp_path / "out",
                     progress=False, stop_after_steps=3) is None
    assert load_checkpoint(tmp_path / "out" / "checkpoint")["step"] == 3


@pytest.mark.parametrize("method", SAE_METHODS)
def test_every_method_trains_saves_and_loads(small_store, tmp_path, method):
    config = make_train_config(method=method)
    before = torch.get_rng_state()
    model = train_sae(small_store, SPLIT, config, tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone

    loaded = ConceptModel.load(tmp_path)
    x = small_store.to_numpy(SPLIT)[-50:]
    codes = loaded.encode(x)
    assert codes.shape == (50, 16) and loaded.dictionary.shape == (16, 8)
    np.testing.assert_array_equal(codes, model.encode(x))
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))
    assert np.isfinite(codes).all()

    meta = json.loads((tmp_path / "dictionary.json").read_text())["meta"]
    assert meta["split_point"] == SPLIT and meta["store"] == small_store.path
    assert meta["training_config"]["method"] == method
    assert set(meta["metrics"]) >= {"r2", "mse", "l0", "dead_fraction", "holdout_dead_fraction"}
    assert meta["steps"] == 7  # 400 training rows in batches of 64
    history = json.loads((tmp_path / "training_history.json").read_text())
    assert [h["step"] for h in history] == [3, 6, 7]  # every log_every steps, plus the end
    assert history[-1]["rows"] == 400
    assert (tmp_path / "training_curve.png").is_file()


def test_holdout_partition_and_its_errors(small_store):
    train, held = holdout_partition(small_store, 1)
    assert (len(train), len(held)) == (400, 200)
    np.testing.assert_array_equal(held.to_numpy(SPLIT), small_store.to_numpy(SPLIT)[400:])
    assert len(holdout_partition(small_store, 0)[0]) == 600
    with pytest.raises(ValueError, match="holdout_shards=3 .* 3 shard"):
        holdout_partition(small_store, 3)


def test_lr_schedule():
    f = [lr_factor(s, 20, 4, 0.1) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    assert f[4 + 15 // 2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 7 / 15)))
    assert lr_factor(0, 5, 0, 0.5) == 1.0


def test_warmup_is_capped_at_a_tenth_of_the_run():
    assert [warmup_for(100, n) for n in (8, 99, 500, 1000, 50_000)] == [0, 9, 50, 100, 100]


def test_a_run_shorter_than_its_warmup_reaches_lr_and_decays(small_store, tmp_path):
    config = make_train_config(warmup_steps=100, log_every=1, lr=1e-2, final_lr_ratio=0.1)
    model = train_sae(small_store, SPLIT, config, tmp_path, progress=False)
    history = json.loads((tmp_path / "training_history.json").read_text())
    lrs = [h["lr"] for h in history]                       # 7 steps: 400 rows in batches of 64
    assert len(lrs) == 7
    # entry s holds the lr for step s: lr * lr_factor(s, 7, 0, 0.1), computed here by hand
    expected = [1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, s / 6)))) for s in range(1, 8)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert max(lrs) > 0.9e-2 and lrs[-1] == pytest.approx(1e-3)
    assert model.meta["warmup_steps"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"method": "topk"}, "did you mean 'topk_sae'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"top_k": 40, "n_concepts": 32}, "top_k=40 exceeds n_concepts=32"),
    ({"final_lr_ratio": 2.0}, "final_lr_ratio"),
    ({"shuffle_buffer": -1}, "shuffle_buffer"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_train_config(**overrides)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"\['n_latents'\]"):
        TrainConfig.from_dict({"n_latents": 3})
    assert TrainConfig.from_dict(make_train_config().to_dict()) == make_train_config()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_resumes_and_matches_cpu(small_store, tmp_path):
    config = make_train_config(device="cuda", epochs=2, checkpoint_every=3)
    whole = train_sae(small_store, SPLIT, config, tmp_path / "whole", progress=False)
    train_sae(small_store, SPLIT, config, tmp_path / "cut", progress=False, stop_after_steps=5)
    resumed = train_sae(small_store, SPLIT, config, tmp_path / "cut", progress=False)
    torch.testing.assert_close(resumed.dictionary, whole.dictionary, atol=1e-5, rtol=1e-4)
    cpu = train_sae(small_store, SPLIT, make_train_config(epochs=2), tmp_path / "cpu",
                    progress=False)
    # float rounding differs between devices, so compare what the run achieved, not bits
    assert whole.meta["metrics"]["r2"] == pytest.approx(cpu.meta["metrics"]["r2"], abs=0.02)


def test_default_shuffle_buffer_holds_its_memory_as_rows_widen():
    from raypipe.concepts.training_config import default_shuffle_buffer

    assert default_shuffle_buffer(384) == 65536          # MiniLM-wide rows: the full 65,536
    assert default_shuffle_buffer(2048) == 65536
    assert default_shuffle_buffer(4096) == 32768         # 8B-model-wide rows: 512 MiB of them
    assert default_shuffle_buffer(8192) * 8192 * 4 == 512 * 2**20
    assert TrainConfig(method="topk_sae").shuffle_buffer is None
