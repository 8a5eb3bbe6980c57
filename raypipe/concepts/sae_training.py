"""Train a sparse autoencoder by streaming an ActivationStore: resumable, no Ray.

A later Ray actor (``ConceptTrainer``) calls ``train_sae``; everything here runs in one process.
The SAE classes and their forward passes are overcomplete's; the loop is ours because
overcomplete's ``train_sae`` needs a re-iterable DataLoader, syncs with the host on every step
and cannot resume.

Resuming is exact: an epoch's batches are a pure function of (store, config.seed, epoch), so a
resumed run replays its epoch's stream and skips the ``rows_in_epoch`` rows the checkpoint had
already consumed, then continues with the restored weights, Adam moments, schedule position,
RNG and dead-latent counters. On CPU the resumed weights equal an uninterrupted run's exactly.
The training history (and its PNG curve) is approximate across a resume: the metrics summed
since the last history entry are not checkpointed, so the first entry after a resume averages
only the steps taken after it. Weights, optimiser state and the final metrics are unaffected.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raypipe.concepts.checkpoint import EXTRA_TENSOR_ATTRS, load_checkpoint, save_checkpoint
from raypipe.concepts.methods import SAE_CLASS_NAMES
from raypipe.concepts.metrics import (DeadLatentTracker, MetricAccumulator,
                                      plot_training_curve)
from raypipe.concepts.overcomplete_import import import_overcomplete
from raypipe.concepts.training_config import TrainConfig, default_shuffle_buffer
from raypipe.runtime import maybe_die
from raypipe.store import ActivationStore

if TYPE_CHECKING:
    from raypipe.concepts.concept_model import ConceptModel

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CURVE_NAME = "training_curve.png"
HISTORY_NAME = "training_history.json"


class ResumeMismatchError(ValueError):
    """out_dir holds a checkpoint of a different training run."""


def train_sae(store: ActivationStore, split: str | int | None, config: TrainConfig,
              out_dir: str | os.PathLike, *, progress: bool = True,
              stop_after_steps: int | None = None) -> "ConceptModel | None":
    """Train ``config.method`` on ``split`` of ``store``; save the ConceptModel in ``out_dir``.

    Trains on every shard but the last ``config.holdout_shards`` (streamed with the store's
    shuffle buffer, a new seed per epoch), with Adam and a warmup + cosine learning rate.
    Every ``checkpoint_every`` steps the state goes to ``out_dir/checkpoint/``; if one is there
    at the start, training resumes from it. At the end: held-out metrics (r2, mse, l0 over the
    held-out rows; dead_fraction from training, holdout_dead_fraction: latents that never fire
    on the held-out rows), ``training_history.json``, ``training_curve.png`` and the
    ConceptModel (dictionary.safetensors + dictionary.json) in ``out_dir``.

    ``stop_after_steps`` (for tests) stops once the global step reaches it, right after
    writing a checkpoint, and returns None, as if the process had been killed.
    """
    split_path = _split_path(store, split)
    train_store, eval_store = holdout_partition(store, config.holdout_shards)
    train_rows = len(train_store)
    if train_rows == 0:
        raise ValueError(f"store {store.path!r} has no training rows (its training shards are "
                         "empty); extract more text or lower holdout_shards")
    dim = store.dim(split_path)
    device = resolve_device(config.device)
    steps_per_epoch = math.ceil(train_rows / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    # what the checkpoint was trained on: the shards' checksums tell a different store with the
    # same layout (another model's extraction of the same corpus) from a moved copy of this one
    data = {"store": store.path, "split": split_path, "train_rows": train_rows,
            "train_shards": [r.shard_id for r in train_store.shards],
            "train_checksums": [r.checksum for r in train_store.shards]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if config.holdout_shards and len(eval_store) == 0:
        raise ValueError(f"the {config.holdout_shards} held-out shard(s) of store {store.path!r} "
                         "hold no rows; raise holdout_shards or use 0 (in-sample metrics)")
    rng_devices = ([device.index if device.index is not None else torch.cuda.current_device()]
                   if device.type == "cuda" else [])
    with torch.random.fork_rng(devices=rng_devices):  # leave the caller's RNG untouched
        torch.manual_seed(config.seed)
        sae, sae_kwargs = build_sae(config, dim, device)
        optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
        warmup = warmup_for(config.warmup_steps, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total_steps, warmup, config.final_lr_ratio))
        tracker = DeadLatentTracker(config.n_concepts, device)
        state = _TrainState()
        ckpt = load_checkpoint(out / CHECKPOINT_DIR)
        if ckpt is not None:
            _check_resumable(ckpt, config, data, out)
            _restore(ckpt, sae, optimizer, scheduler, tracker, device, state)
            log.info("resuming %s from %s at step %d (epoch %d, %d rows into it)",
                     config.method, out / CHECKPOINT_DIR, state.step, state.epoch,
                     state.rows_in_epoch)
        if stop_after_steps is not None and state.step >= stop_after_steps:
            return None
        finished = _train_loop(train_store, split_path, config, sae, optimizer, scheduler,
                               tracker, state, data, out, device, train_rows, progress,
                               stop_after_steps)
        if not finished:
            return None

    with torch.no_grad():
        sae.eval()  # fuses overcomplete's dictionary; BatchTopK switches to its running threshold
    metrics = evaluate(sae, eval_store if config.holdout_shards else train_store, split_path,
                       config.batch_size, device)
    metrics["dead_fraction"] = tracker.dead_fraction(config.dead_after)
    metrics["evaluated_on"] = "holdout" if config.holdout_shards else "train (no holdout shards)"
    (out / HISTORY_NAME).write_text(json.dumps(state.history, indent=1))
    plot_training_curve(state.history, out / CURVE_NAME)
    meta = {"n_concepts": config.n_concepts, "dim": dim, "split_point": split_path,
            "store": store.path, "training_config": config.to_dict(), "metrics": metrics,
            "steps": state.step, "warmup_steps": warmup, "train_rows": train_rows,
            "holdout_rows": len(eval_store)}
    return _save_concept_model(config.method, sae, sae_kwargs, meta, out)


@dataclass
class _TrainState:
    """Counters a checkpoint restores: the position in the stream and the history so far."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch being trained
    rows_in_epoch: int = 0  # rows of that epoch's stream already trained on
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda when available, else cpu; a cuda device without CUDA is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={name!r} but torch sees no CUDA GPU; use "
                         "device='auto' or 'cpu'")
    return device


def holdout_partition(store: ActivationStore,
                      holdout_shards: int) -> tuple[ActivationStore, ActivationStore]:
    """``(train view, held-out view)`` of ``store``: the last ``holdout_shards`` shards held out.

    The views share the store's files and differ only in their shard lists, so
    ``iter_batches`` / ``to_numpy`` / ``len`` work on each as on a store of its own.
    """
    n = len(store.shards)
    if holdout_shards >= n and holdout_shards > 0:
        raise ValueError(f"holdout_shards={holdout_shards} but store {store.path!r} has {n} "
                         f"shard(s): nothing is left to train on; use holdout_shards <= {n - 1} "
                         "(0 evaluates on the training rows)")
    cut = n - holdout_shards
    train, held = copy.copy(store), copy.copy(store)
    train.shards, held.shards = list(store.shards[:cut]), list(store.shards[cut:])
    return train, held


def lr_factor(step: int, total_steps: int, warmup_steps: int, final_lr_ratio: float) -> float:
    """Learning-rate multiplier for the ``step``-th optimiser step (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then a
    cosine from 1 down to ``final_lr_ratio`` at the last step (``total_steps - 1``).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_for(warmup_steps: int, total_steps: int) -> int:
    """Warmup steps of a ``total_steps`` run: ``min(warmup_steps, total_steps // 10)``.

    A run shorter than its warmup would never reach the peak learning rate nor decay (an 8-step
    run with the default 100 ends at 9% of lr); capping the warmup at a tenth of the run keeps
    the schedule's shape for short runs and leaves long ones as configured.
    """
    return min(warmup_steps, total_steps // 10)


def epoch_seed(seed: int, epoch: int) -> int:
    """Shuffle seed of one epoch: distinct per (seed, epoch) pair, unlike ``seed + epoch``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def build_sae(config: TrainConfig, dim: int,
              device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(overcomplete SAE on device, constructor kwargs that rebuild it without device)``.

    BatchTopK's ``top_k`` counts active codes over a whole batch, so it gets
    ``top_k * batch_size`` (the loop rescales it for a short last batch).

    The linear encoder starts as the transpose of the unit-norm dictionary with zero bias
    (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): overcomplete draws the two
    independently, and on the planted-dictionary test data a TopK SAE then recovered 38% of
    the atoms after 20 epochs, against 100% after 5 epochs with this start.
    """
    sae_module = import_overcomplete("sae")
    kwargs: dict = {"input_shape": dim, "nb_concepts": config.n_concepts}
    if config.method == "topk_sae":
        kwargs["top_k"] = config.top_k
    elif config.method == "batchtopk_sae":
        kwargs["top_k"] = config.top_k * config.batch_size
    elif config.method == "jumprelu_sae":
        kwargs.update(kernel="silverman", bandwidth=1e-3)
    elif config.method == "mp_sae":
        kwargs["k"] = config.top_k
    cls = getattr(sae_module, SAE_CLASS_NAMES[config.method])
    sae = cls(**kwargs, device=str(device))
    _encoder_from_dictionary(sae)
    return sae, kwargs


def _encoder_from_dictionary(sae: torch.nn.Module) -> None:
    """Set a linear encoder's weight (K, d) to the unit-norm dictionary (K, d), its bias to 0."""
    final = getattr(sae.encoder, "final_block", None)  # overcomplete's "linear" MLPEncoder
    linear = final[0] if final is not None else None
    if not isinstance(linear, torch.nn.Linear) or sae.encoder.nb_blocks != 0:
        return  # MpSAE (identity encoder) or a deeper encoder: keep overcomplete's init
    with torch.no_grad():
        atoms = sae.dictionary._weights
        linear.weight.copy_(atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-8))
        linear.bias.zero_()


def sae_loss(method: str, sae: torch.nn.Module, x: torch.Tensor, pre_codes: torch.Tensor,
             codes: torch.Tensor, x_hat: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Scalar training loss: the element-mean squared error plus the method's sparsity term.

    relu_sae: + l1 · mean over rows of Σ_k |z_k| (per row, unlike overcomplete's ``mse_l1``,
    whose penalty sums over the whole batch and so grows with batch_size).
    jumprelu_sae: + jumprelu_l0 · mean over rows of L0, through overcomplete's Heaviside
    pseudo-gradient (it trains the thresholds). TopK, BatchTopK and MP are sparse by
    construction: MSE only.
    """
    mse = (x - x_hat).square().mean()
    if method == "relu_sae":
        return mse + config.l1 * codes.abs().sum(-1).mean()
    if method == "jumprelu_sae":
        heaviside = import_overcomplete("sae").heaviside
        active = heaviside(torch.relu(pre_codes), torch.exp(sae.thresholds), sae.kernel_fn,
                           sae.bandwidth)
        return mse + config.jumprelu_l0 * active.sum(-1).mean()
    return mse


def evaluate(sae: torch.nn.Module, store: ActivationStore, split: str, batch_size: int,
             device: torch.device) -> dict:
    """r2 / mse / l0 of ``sae`` (in eval mode) over every row of ``store``, and the fraction
    of latents that never fire on those rows (``holdout_dead_fraction``)."""
    acc = MetricAccumulator()
    fired = torch.zeros(sae.nb_concepts, dtype=torch.bool, device=device)
    with torch.no_grad():
        for batch in store.iter_batches(split, batch_size, columns=()):
            x = torch.from_numpy(batch["activations"]).to(device)
            _, codes, x_hat = sae(x)
            acc.update(x, x_hat, codes)
            fired |= (codes != 0).any(0)
    if acc.rows == 0:
        raise ValueError(f"no rows to evaluate on in store {store.path!r} (split {split!r})")
    return {**acc.result(), "holdout_dead_fraction": float((~fired).double().mean()),
            "eval_rows": acc.rows}


def _train_loop(train_store: ActivationStore, split: str, config: TrainConfig,
                sae: torch.nn.Module, optimizer, scheduler, tracker: DeadLatentTracker,
                state: _TrainState, data: dict, out: Path, device: torch.device,
                train_rows: int, progress: bool, stop_after_steps: int | None) -> bool:
    """Run the remaining steps; False when stopped by ``stop_after_steps``."""
    from tqdm.auto import tqdm

    def checkpoint() -> None:
        epoch, rows = state.epoch, state.rows_in_epoch
        if rows >= train_rows:  # an epoch just ended: resume at the next one's start
            epoch, rows = epoch + 1, 0
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(out / CHECKPOINT_DIR, step=state.step, epoch=epoch, rows_in_epoch=rows,
                        sae=sae, optimizer=optimizer, scheduler=scheduler, rng_state=rng,
                        dead_tracker=tracker, history=state.history, config=config, data=data)

    bar = tqdm(total=config.epochs * train_rows,
               initial=state.epoch * train_rows + state.rows_in_epoch, unit="row",
               unit_scale=True, desc=f"{config.method} {split}", disable=not progress)
    window = _Window(device)
    last_saved = state.step
    shuffle_buffer = config.shuffle_buffer
    if shuffle_buffer is None:
        shuffle_buffer = default_shuffle_buffer(train_store.dim(split))
    sae.train()
    try:
        while state.epoch < config.epochs:
            skip = state.rows_in_epoch
            for batch in train_store.iter_batches(split, config.batch_size,
                                                  shuffle_buffer=shuffle_buffer,
                                                  seed=epoch_seed(config.seed, state.epoch),
                                                  columns=()):
                rows = len(batch["activations"])
                if skip > 0:  # replaying rows a checkpoint had already trained on
                    skip -= rows
                    continue
                x = torch.from_numpy(batch["activations"]).to(device, non_blocking=True)
                loss, codes, x_hat = _step(sae, x, config, optimizer, scheduler)
                tracker.update(codes)
                window.update(x, x_hat, codes, loss)
                state.step += 1
                state.rows_in_epoch += rows
                bar.update(rows)
                if state.step % config.log_every == 0:
                    state.history.append(window.entry(state, optimizer, tracker, config))
                    bar.set_postfix(loss=f"{state.history[-1]['loss']:.4g}",
                                    r2=f"{state.history[-1]['r2']:.3f}")
                stopping = stop_after_steps is not None and state.step >= stop_after_steps
                if state.step % config.checkpoint_every == 0 or stopping:
                    checkpoint()
                    last_saved = state.step
                    maybe_die(state.step)  # test hook: a trainer killed right after a checkpoint
                if stopping:
                    return False
            if skip != 0:
                raise RuntimeError(f"epoch {state.epoch} replay ended {skip} rows short of the "
                                   "checkpoint's position: the store changed since the checkpoint")
            state.epoch += 1
            state.rows_in_epoch = 0
        if window.steps:
            state.history.append(window.entry(state, optimizer, tracker, config))
        if state.step != last_saved or not (out / CHECKPOINT_DIR).exists():
            checkpoint()
        return True
    finally:
        bar.close()


def _step(sae: torch.nn.Module, x: torch.Tensor, config: TrainConfig, optimizer,
          scheduler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on ``x`` (b, d) → detached ``(loss (), codes (b, K), x_hat (b, d))``."""
    if config.method == "batchtopk_sae":
        sae.top_k = config.top_k * x.shape[0]  # k per row on average, also for a short batch
    optimizer.zero_grad(set_to_none=True)
    pre_codes, codes, x_hat = sae(x)
    loss = sae_loss(config.method, sae, x, pre_codes, codes, x_hat, config)
    loss.backward()
    if config.clip_grad:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), config.clip_grad)
    optimizer.step()
    scheduler.step()
    return loss.detach(), codes.detach(), x_hat.detach()


class _Window:
    """Training metrics since the last history entry, kept on the device until logged."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.metrics = MetricAccumulator()
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps = 0

    def update(self, x, x_hat, codes, loss) -> None:
        self.metrics.update(x, x_hat, codes)
        self.loss_sum += loss
        self.steps += 1

    def entry(self, state: _TrainState, optimizer, tracker: DeadLatentTracker,
              config: TrainConfig) -> dict:
        """One history row (host syncs happen here only), then start a new window."""
        entry = {"step": state.step, "epoch": state.epoch, "rows": tracker.rows_seen,
                 "lr": float(optimizer.param_groups[0]["lr"]),
                 "loss": float(self.loss_sum) / self.steps, **self.metrics.result(),
                 "dead_fraction": tracker.dead_fraction(config.dead_after)}
        self._reset()
        return entry


def _split_path(store: ActivationStore, split: str | int | None) -> str:
    """A split argument (path, index, or None with one split point) → the split path."""
    store.dim(split)  # raises KeyError naming the valid split points
    if isinstance(split, str):
        return split
    return store.split_points[0 if split is None else split]


def _check_resumable(ckpt: dict, config: TrainConfig, data: dict, out: Path) -> None:
    saved = TrainConfig.from_dict(ckpt["config"])
    diffs = saved.result_differences(config)
    for key in ("split", "train_rows", "train_shards"):
        if ckpt["data"].get(key) != data[key]:
            diffs.append((f"data.{key}", ckpt["data"].get(key), data[key]))
    saved_sums = ckpt["data"].get("train_checksums")
    if not diffs and saved_sums is None:  # written before checkpoints recorded them
        diffs.append(("data.train_checksums", "not recorded (a checkpoint of an older raypipe, "
                      "whose learning-rate warmup also differs)", "this store's shard checksums"))
    elif not diffs and saved_sums != data["train_checksums"]:  # same layout, other bytes
        changed = [shard for shard, a, b in zip(data["train_shards"], saved_sums or [],
                                                data["train_checksums"]) if a != b]
        diffs.append(("data.train_checksums", "the checkpoint's training shards",
                      f"other contents in shard(s) {changed[:5] or data['train_shards'][:5]}"
                      f"{' ...' if len(changed) > 5 else ''} (another store?)"))
    if diffs:
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in diffs)
        raise ResumeMismatchError(
            f"{out / CHECKPOINT_DIR} was written by a different training run (checkpoint -> "
            f"this call):\n{lines}\nFix: use a new out_dir, or delete {out / CHECKPOINT_DIR} "
            "to train from scratch.")


def _restore(ckpt: dict, sae: torch.nn.Module, optimizer, scheduler,
             tracker: DeadLatentTracker, device: torch.device, state: _TrainState) -> None:
    sae.load_state_dict(ckpt["model"])
    for attr, value in ckpt["model_extra"].items():
        if attr in EXTRA_TENSOR_ATTRS:
            setattr(sae, attr, value.to(device))
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    tracker.load_state(*ckpt["dead_tracker"])
    torch.set_rng_state(ckpt["rng_state"]["torch"])
    if device.type == "cuda" and "cuda" in ckpt["rng_state"]:
        torch.cuda.set_rng_state(ckpt["rng_state"]["cuda"], device)
    state.step, state.epoch = ckpt["step"], ckpt["epoch"]
    state.rows_in_epoch, state.history = ckpt["rows_in_epoch"], ckpt["history"]


def _save_concept_model(method: str, sae: torch.nn.Module, sae_kwargs: dict, meta: dict,
                        out: Path) -> "ConceptModel":
    """Wrap the trained SAE and save ``dictionary.safetensors`` + ``dictionary.json`` in ``out``."""
    from raypipe.concepts.concept_model import ConceptModel

    model = ConceptModel.from_sae(method, sae, sae_kwargs, meta)
    model.save(out)
    return model
