"""`raypipe fit`: the trainer actor fits SAEs and batch methods from a store, CLI contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe import ConceptModel
from raypipe.cli.main import main
from raypipe.concepts.fit_config import FitConfig
from raypipe.concepts.trainer import ConceptTrainer, fit_concepts
from tests.concepts.synthetic import SPLIT, planted_sparse_data, write_store


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    x = planted_sparse_data(rows=4000, d=16, n_atoms=24, k=2).x
    root = tmp_path_factory.mktemp("store")
    write_store(root, x.astype(np.float32), n_shards=4)
    return str(root)


def test_pca_fit_in_process_matches_sklearn(store_dir, tmp_path):
    from sklearn.decomposition import PCA

    from raypipe.store import ActivationStore

    out = tmp_path / "pca"
    summary = ConceptTrainer(FitConfig(store=store_dir, out=str(out), method="pca", concepts=4,
                                       holdout_shards=0, progress=False).to_dict()).fit()
    model = ConceptModel.load(out)
    x = ActivationStore(store_dir).to_numpy(SPLIT)
    ref = PCA(n_components=4).fit(x)
    cos = np.abs(np.sum(model.dictionary.numpy() * ref.components_, axis=1))
    assert np.all(cos > 0.99)
    assert summary["metrics"]["r2"] > 0.5 and summary["metrics"]["evaluated_on"] == "training rows"
    assert model.meta["reservoir"]["rows_seen"] == len(x)


def test_batch_metrics_count_concepts_that_never_fire_on_the_held_out_rows(store_dir, tmp_path):
    from raypipe.concepts.trainer import heldout_metrics
    from raypipe.store import ActivationStore

    summary = _fit(store_dir, tmp_path / "kmeans", method="kmeans", concepts=4)
    model = ConceptModel.load(tmp_path / "kmeans")
    held = ActivationStore(store_dir).to_numpy(SPLIT)[3000:]    # the last of 4 shards
    by_hand = float(np.mean(~(model.encode(held) != 0).any(0)))
    assert summary["metrics"]["dead_fraction"] == pytest.approx(by_hand)
    assert summary["metrics"]["holdout_dead_fraction"] == pytest.approx(by_hand)

    # a centroid no row is nearest to never fires: 1 of 4 concepts is dead
    far = model.dictionary.clone()
    far[3] = 1e3
    dead_one = ConceptModel("kmeans", {"dictionary": far,
                                       "temperature": model.tensors["temperature"]}, {})
    metrics = heldout_metrics(dead_one, ActivationStore(store_dir), SPLIT, batch_size=333)
    assert metrics["dead_fraction"] == 0.25 and metrics["holdout_dead_fraction"] == 0.25


def _fit(store_dir, out, **overrides):
    config = dict(store=store_dir, out=str(out), method="pca", concepts=4, progress=False)
    return ConceptTrainer(FitConfig(**(config | overrides)).to_dict()).fit()


def test_batch_fit_refuses_a_different_config_in_its_out_dir(store_dir, tmp_path):
    from raypipe.concepts.sae_training import ResumeMismatchError

    out = tmp_path / "pca"
    _fit(store_dir, out)
    before = ConceptModel.load(out).dictionary
    _fit(store_dir, out, epochs=5, progress=True)   # an SAE-only knob / runtime flag: same fit
    torch.testing.assert_close(ConceptModel.load(out).dictionary, before)
    with pytest.raises(ResumeMismatchError, match=r"(?s)method: 'pca' -> 'kmeans'.*concepts: 4 -> 7"):
        _fit(store_dir, out, method="kmeans", concepts=7)
    with pytest.raises(ResumeMismatchError, match="seed: 0 -> 1"):
        _fit(store_dir, out, seed=1)
    assert ConceptModel.load(out).method == "pca", "the refused fit left the dictionary alone"


def test_batch_fit_into_an_sae_dir_is_refused_and_leaves_no_stale_curve(store_dir, tmp_path):
    import shutil

    from raypipe.concepts.sae_training import ResumeMismatchError

    out = tmp_path / "sae"
    _fit(store_dir, out, method="topk_sae", concepts=8, top_k=2, batch_size=1024)
    assert (out / "training_curve.png").is_file() and (out / "training_history.json").is_file()
    with pytest.raises(ResumeMismatchError, match="checkpoint"):
        _fit(store_dir, out)
    shutil.rmtree(out / "checkpoint")                           # the SAE's resume advice
    with pytest.raises(ResumeMismatchError, match="method: 'topk_sae' -> 'pca'"):
        _fit(store_dir, out)
    (out / "dictionary.json").unlink()                          # what is left: curve + history
    _fit(store_dir, out)
    assert ConceptModel.load(out).method == "pca"
    assert not (out / "training_curve.png").exists()
    assert not (out / "training_history.json").exists()


@pytest.mark.ray
def test_fit_topk_sae_in_ray_actor_and_cli(ray_local, store_dir, tmp_path, capsys):
    out = tmp_path / "sae"
    assert main(["fit", "--store", store_dir, "--method", "topk_sae", "--concepts", "32",
                 "--top-k", "2", "--batch-size", "256", "--epochs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "32 concepts" in printed and "r2 " in printed
    model = ConceptModel.load(out)
    x = torch.randn(5, 16)
    codes = model.encode(x)
    assert codes.shape == (5, 32) and ((codes != 0).sum(1) <= 2).all()
    assert model.decode(codes).shape == (5, 16)
    assert model.meta["split_point"] == SPLIT and model.meta["store"] == store_dir


def test_fit_errors_name_the_problem(store_dir, tmp_path, capsys):
    assert main(["fit", "--store", store_dir, "--method", "topk", "--out", str(tmp_path / "a")]) == 2
    assert "topk_sae" in capsys.readouterr().err
    assert main(["fit", "--store", store_dir, "--split-point", "nope", "--out", str(tmp_path / "b")]) == 2
    assert SPLIT in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--method", "topk_sae", "--concepts", "4"], "--top-k 8 exceeds --concepts 4"),
    (["--method", "batchtopk_sae", "--concepts", "4", "--top-k", "5"], "--top-k 5 exceeds"),
    (["--method", "pca", "--concepts", "50"], "--concepts 50 exceeds the width 16"),
    (["--method", "ica", "--concepts", "17"], "--concepts 17 exceeds the width 16"),
    (["--method", "kmeans", "--concepts", "5000"], "--concepts 5000 exceeds the 3000 rows"),
])
def test_fit_size_errors_are_one_line_before_ray_starts(store_dir, tmp_path, capsys, monkeypatch,
                                                        flags, message):
    import raypipe.runtime

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the inputs were checked")

    monkeypatch.setattr(raypipe.runtime, "init_ray", no_ray)
    assert main(["fit", "--store", store_dir, "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypipe fit: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_resume_mismatch_from_the_trainer_actor_is_a_user_error(capsys):
    from ray.exceptions import RayTaskError

    from raypipe.cli.main import _is_user_error, _task_cause
    from raypipe.concepts.sae_training import ResumeMismatchError

    cause = ResumeMismatchError("out/checkpoint was written by a different training run")
    wrapped = RayTaskError("ConceptTrainer.fit", "Traceback (most recent call last): ...",
                           cause).as_instanceof_cause()
    assert _task_cause(wrapped) is cause and _is_user_error(_task_cause(wrapped))
    assert "Traceback" not in str(_task_cause(wrapped))


@pytest.mark.ray
def test_changed_sae_config_through_the_cli_exits_2_with_the_diff(ray_local, store_dir, tmp_path,
                                                                  capsys):
    common = ["fit", "--store", store_dir, "--method", "topk_sae", "--top-k", "2",
              "--batch-size", "1024", "--out", str(tmp_path / "sae"), "--no-progress"]
    assert main([*common, "--concepts", "8"]) == 0
    capsys.readouterr()
    assert main([*common, "--concepts", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypipe fit: error: ") and "n_concepts: 8 -> 16" in err
    assert "Traceback" not in err and "RayTaskError" not in err


@pytest.mark.ray
def test_killed_trainer_actor_resumes_from_its_checkpoint(ray_local, store_dir, tmp_path, monkeypatch):
    from raypipe.runtime import FAULT_ENV

    common = dict(store=store_dir, method="topk_sae", concepts=16, top_k=2, batch_size=128,
                  epochs=1, checkpoint_every=5, progress=False)
    fit_concepts(FitConfig(out=str(tmp_path / "clean"), **common))
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:10")
    fit_concepts(FitConfig(out=str(tmp_path / "killed-run"), **common))
    assert marker.exists(), "the trainer actor died once, at step 10"
    clean, resumed = ConceptModel.load(tmp_path / "clean"), ConceptModel.load(tmp_path / "killed-run")
    torch.testing.assert_close(resumed.dictionary, clean.dictionary)
    assert resumed.meta["metrics"]["r2"] == pytest.approx(clean.meta["metrics"]["r2"])
