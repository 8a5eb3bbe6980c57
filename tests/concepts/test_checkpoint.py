"""Checkpoint round trip: the restored run continues exactly as the original would have."""
from __future__ import annotations

import json
import os

import pytest
import torch

from raypipe.concepts.checkpoint import (CheckpointError, load_checkpoint, save_checkpoint)
from raypipe.concepts.metrics import DeadLatentTracker
from raypipe.concepts.sae_training import build_sae, lr_factor
from raypipe.concepts.training_config import TrainConfig

D = 8


def _setup(method="topk_sae"):
    """A fresh SAE, Adam, warmup/cosine LambdaLR and tracker, all seeded."""
    config = TrainConfig(method=method, n_concepts=16, top_k=2, batch_size=4, lr=1e-2,
                         warmup_steps=2, device="cpu")
    torch.manual_seed(0)
    sae, _ = build_sae(config, D)
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 10, 2, 0.1))
    return config, sae, opt, sched, DeadLatentTracker(16)


def _step(sae, opt, sched, tracker, x):
    opt.zero_grad()
    _, codes, x_hat = sae(x)
    (x - x_hat).square().mean().backward()
    opt.step()
    sched.step()
    tracker.update(codes.detach())


def _save(path, config, sae, opt, sched, tracker, step=3):
    save_checkpoint(path, step=step, epoch=1, rows_in_epoch=12, sae=sae, optimizer=opt,
                    scheduler=sched, rng_state={"torch": torch.get_rng_state()},
                    dead_tracker=tracker, history=[{"step": 1, "loss": 0.5}], config=config,
                    data={"split": "s", "train_rows": 40})


@pytest.mark.parametrize("method", ["topk_sae", "batchtopk_sae"])
def test_round_trip_continues_identically(tmp_path, method):
    xs = torch.randn(6, 4, D, generator=torch.Generator().manual_seed(1))
    config, sae, opt, sched, tracker = _setup(method)
    for x in xs[:3]:
        _step(sae, opt, sched, tracker, x)
    _save(tmp_path / "ck", config, sae, opt, sched, tracker)

    ck = load_checkpoint(tmp_path / "ck")
    assert (ck["step"], ck["epoch"], ck["rows_in_epoch"]) == (3, 1, 12)
    assert ck["history"] == [{"step": 1, "loss": 0.5}]
    assert TrainConfig.from_dict(ck["config"]) == config
    assert ck["data"] == {"split": "s", "train_rows": 40}
    assert torch.equal(ck["rng_state"]["torch"], torch.get_rng_state())

    _, sae2, opt2, sched2, tracker2 = _setup(method)  # fresh objects, different state
    sae2.load_state_dict(ck["model"])
    for attr, value in ck["model_extra"].items():
        setattr(sae2, attr, value)
    opt2.load_state_dict(ck["optimizer"])
    sched2.load_state_dict(ck["scheduler"])
    tracker2.load_state(*ck["dead_tracker"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] != config.lr
    assert torch.equal(tracker2.rows_since_fired, tracker.rows_since_fired)
    if method == "batchtopk_sae":  # not in state_dict: kept as model_extra
        assert torch.equal(ck["model_extra"]["running_threshold"], sae.running_threshold)

    for x in xs[3:]:
        _step(sae, opt, sched, tracker, x)
        _step(sae2, opt2, sched2, tracker2, x)
    for (k, a), (_, b) in zip(sae.state_dict().items(), sae2.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(tracker.rows_since_fired, tracker2.rows_since_fired)


def test_overwrite_keeps_only_the_newest_and_no_temporaries(tmp_path):
    config, sae, opt, sched, tracker = _setup()
    _save(tmp_path / "ck", config, sae, opt, sched, tracker, step=1)
    _step(sae, opt, sched, tracker, torch.randn(4, D))
    _save(tmp_path / "ck", config, sae, opt, sched, tracker, step=2)
    assert load_checkpoint(tmp_path / "ck")["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    assert sorted(os.listdir(tmp_path / "ck")) == ["checkpoint.json", "checkpoint.safetensors"]


def test_interrupted_swap_falls_back_to_the_set_aside_checkpoint(tmp_path):
    config, sae, opt, sched, tracker = _setup()
    _save(tmp_path / "ck", config, sae, opt, sched, tracker, step=5)
    os.rename(tmp_path / "ck", tmp_path / ".ck.old")  # killed between the two renames
    assert load_checkpoint(tmp_path / "ck")["step"] == 5
    _save(tmp_path / "ck", config, sae, opt, sched, tracker, step=6)  # next save recovers
    assert load_checkpoint(tmp_path / "ck")["step"] == 6
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_missing_and_foreign_checkpoints(tmp_path):
    assert load_checkpoint(tmp_path / "nothing") is None
    config, sae, opt, sched, tracker = _setup()
    _save(tmp_path / "ck", config, sae, opt, sched, tracker)
    record = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    record["format"] = "something/9"
    (tmp_path / "ck" / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="delete"):
        load_checkpoint(tmp_path / "ck")
