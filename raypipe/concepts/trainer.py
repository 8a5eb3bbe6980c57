"""ConceptTrainer: the Ray actor that fits a concept dictionary by streaming an ActivationStore.

The actor owns the GPU (``num_gpus``) and reads the store itself, shard by shard: nothing is
gathered on the driver. SAEs train on the stream and checkpoint as they go; batch methods are
fitted on a uniform reservoir sample bounded by a memory budget. A killed trainer is restarted by
Ray (``max_restarts``) and, like a re-run of the same command, resumes from the last checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from raypipe.concepts.fit_config import FitConfig

log = logging.getLogger("raypipe.fit")


class ConceptTrainer:
    """Plain class; ``fit_concepts`` runs it as a Ray actor (tests may call it directly)."""

    def __init__(self, config: dict) -> None:
        self.config = FitConfig(**config)

    def fit(self) -> dict:
        from raypipe.store import ActivationStore

        store = ActivationStore(self.config.store)
        split = _split(store, self.config.split_point)
        if self.config.holdout_shards >= len(store.shards):
            log.warning("store has %d shard(s): nothing left to hold out, metrics are in-sample",
                        len(store.shards))
        self.config = c = effective_config(self.config, store)
        check_fit_inputs(c, store, split)
        t0 = time.perf_counter()
        if c.is_sae:
            model = self._fit_sae(store, split)
        else:
            model = self._fit_batch(store, split)
        model.meta.update(split_point=split, store=c.store, fit_config=c.to_dict(),
                          fit_seconds=round(time.perf_counter() - t0, 2))
        model.save(c.out)
        return {"out": c.out, "method": c.method, "split_point": split,
                "n_concepts": model.n_concepts, "dim": model.dim,
                "metrics": model.meta.get("metrics", {}), "seconds": model.meta["fit_seconds"]}

    def _fit_sae(self, store, split: str):
        from raypipe.concepts.sae_training import train_sae
        from raypipe.concepts.training_config import TrainConfig

        c = self.config
        train = TrainConfig(method=c.method, n_concepts=c.concepts, top_k=c.top_k, epochs=c.epochs,
                            batch_size=c.batch_size, lr=c.lr, seed=c.seed,
                            shuffle_buffer=c.shuffle_buffer, checkpoint_every=c.checkpoint_every,
                            holdout_shards=c.holdout_shards)
        return train_sae(store, split, train, c.out, progress=c.progress)

    def _fit_batch(self, store, split: str):
        from raypipe.concepts.batch_methods import fit_batch_method
        from raypipe.concepts.reservoir import capacity_for_budget, reservoir_sample
        from raypipe.concepts.sae_training import holdout_partition

        c = self.config
        train, held = holdout_partition(store, c.holdout_shards)
        checksums = [r.checksum for r in train.shards]
        capacity = capacity_for_budget(c.memory_budget_mb * 2**20, store.dim(split))
        batches = (b["activations"] for b in train.iter_batches(split, batch_size=8192, columns=()))
        sample, seen = reservoir_sample(batches, capacity, seed=c.seed)
        log.info("%s: fitting on a uniform sample of %d of %d rows (budget %d MB)", c.method,
                 len(sample), seen, c.memory_budget_mb)
        model = fit_batch_method(c.method, sample, c.concepts, seed=c.seed)
        model.meta["reservoir"] = {"rows_sampled": int(len(sample)), "rows_seen": int(seen),
                                   "memory_budget_mb": c.memory_budget_mb}
        model.meta["train_checksums"] = checksums
        _remove_sae_artefacts(Path(c.out))
        fit_sample = {f"sample_{k}": v for k, v in model.meta.get("metrics", {}).items()}
        model.meta["metrics"] = dict(fit_sample, **heldout_metrics(
            model, held if c.holdout_shards else train, split),
            evaluated_on="holdout" if c.holdout_shards else "training rows")
        return model


def effective_config(config: FitConfig, store) -> FitConfig:
    """``config`` as the trainer runs it: a store with no shard to spare holds none out."""
    if config.holdout_shards >= len(store.shards):
        return FitConfig(**(config.to_dict() | {"holdout_shards": 0}))
    return config


def check_fit_inputs(config: FitConfig, store, split: str) -> None:
    """User errors the store's manifest reveals, raised before Ray starts (``fit_concepts``) with
    the flags to change, rather than as sklearn's error from inside the trainer actor; and, for
    a batch method, a different fit already in ``--out`` (``check_batch_refit``).

    ``config`` is the ``effective_config``.
    """
    from raypipe.concepts.reservoir import capacity_for_budget
    from raypipe.concepts.sae_training import holdout_partition

    dim = store.dim(split)
    if config.method in ("pca", "ica", "svd", "sparse_pca") and config.concepts > dim:
        raise FitInputError(
            f"--concepts {config.concepts} exceeds the width {dim} of split point {split!r}: "
            f"{config.method} finds at most {dim} components; lower --concepts, or use an "
            "overcomplete method (an SAE, nmf, kmeans, dictionary_learning)")
    if config.is_sae:
        return
    train, _ = holdout_partition(store, config.holdout_shards)
    if config.method == "kmeans":
        rows = min(len(train), capacity_for_budget(config.memory_budget_mb * 2**20, dim))
        if config.concepts > rows:
            raise FitInputError(
                f"--concepts {config.concepts} exceeds the {rows} rows kmeans is fitted on (the "
                f"reservoir sample of {len(train)} training rows within --memory-budget-mb "
                f"{config.memory_budget_mb}): lower --concepts, or fit on more activations")
    check_batch_refit(Path(config.out),
                      batch_fit_identity(config, split, [r.checksum for r in train.shards]))


def batch_fit_identity(config: FitConfig, split: str, train_checksums: list[str]) -> dict:
    """What a batch fit's dictionary depends on (SAE-only knobs, the store's path and runtime
    settings left out): two fits with the same identity write the same dictionary."""
    return {"method": config.method, "concepts": config.concepts, "split_point": split,
            "seed": config.seed, "holdout_shards": config.holdout_shards,
            "memory_budget_mb": config.memory_budget_mb, "train_checksums": train_checksums}


def saved_fit_identity(header: dict) -> dict:
    """The ``batch_fit_identity`` keys that a saved ``dictionary.json`` header records."""
    meta = header.get("meta", {})
    fit_config = meta.get("fit_config") or {}
    saved = {"method": header.get("method"), "concepts": header.get("n_concepts"),
             "split_point": meta.get("split_point")}
    saved |= {k: fit_config[k] for k in ("seed", "holdout_shards", "memory_budget_mb")
              if k in fit_config}
    if "train_checksums" in meta:
        saved["train_checksums"] = meta["train_checksums"]
    return saved


def check_batch_refit(out: Path, identity: dict) -> None:
    """Refuse to overwrite ``out``'s dictionary (or SAE checkpoint) with a different batch fit.

    The SAE path refuses a changed config through its checkpoint (``ResumeMismatchError``);
    a batch method has no checkpoint, so its saved ``dictionary.json`` plays that part. An
    identical fit may rewrite the directory (same seed: the same dictionary).
    """
    from raypipe.concepts.concept_model import JSON_FILE
    from raypipe.concepts.sae_training import CHECKPOINT_DIR, ResumeMismatchError

    fix = f"Fix: use a new --out, or delete {out} to fit from scratch."
    if (out / CHECKPOINT_DIR).exists():
        raise ResumeMismatchError(
            f"{out} holds the checkpoint of a sparse-autoencoder training run "
            f"({out / CHECKPOINT_DIR}); a {identity['method']} fit would mix with it.\n{fix}")
    try:
        header = json.loads((out / JSON_FILE).read_text())
    except (OSError, ValueError):
        return  # nothing (readable) to protect: a fresh fit
    saved = saved_fit_identity(header)
    diffs = [(k, saved[k], identity[k]) for k in saved if saved[k] != identity[k]]
    diffs = [(k, "the saved dictionary's training shards", "other contents (another store?)")
             if k == "train_checksums" else (k, a, b) for k, a, b in diffs]
    if diffs:
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in diffs)
        raise ResumeMismatchError(
            f"{out / JSON_FILE} was written by a different fit (saved -> this call):\n{lines}\n"
            f"{fix}")


def _remove_sae_artefacts(out: Path) -> None:
    """A batch fit has no training curve: one left by an earlier SAE in ``out`` must not be
    shown (by the report) as this dictionary's."""
    from raypipe.concepts.sae_training import CURVE_NAME, HISTORY_NAME

    for name in (CURVE_NAME, HISTORY_NAME):
        (out / name).unlink(missing_ok=True)


def heldout_metrics(model, store, split: str, batch_size: int = 8192) -> dict:
    """R², MSE, mean L0 and the dead fraction over the rows of ``store`` (streamed): the same
    keys as SAE training.

    A concept is dead when it is 0 on every one of these rows (``sae_training.evaluate``'s
    ``holdout_dead_fraction``). A batch fit has no training stream to track firing over, so
    ``dead_fraction`` is that same measurement.
    """
    from raypipe.concepts.metrics import MetricAccumulator

    acc = MetricAccumulator()
    fired = torch.zeros(model.n_concepts, dtype=torch.bool)
    for batch in store.iter_batches(split, batch_size=batch_size, columns=()):
        x = torch.from_numpy(batch["activations"])
        codes = model.encode(x)
        acc.update(x, model.decode(codes), codes)
        fired |= (codes != 0).any(0)
    if not len(store):
        return {}
    dead = float((~fired).double().mean())
    return {**acc.result(), "dead_fraction": dead, "holdout_dead_fraction": dead}


class FitInputError(ValueError):
    """The store or split point given to `raypipe fit` cannot be used."""


def _split(store, split_point: str | None) -> str:
    if split_point is None:
        if len(store.split_points) != 1:
            raise FitInputError(f"store {store.path!r} has split points {store.split_points}: choose one "
                             "with --split-point")
        return store.split_points[0]
    if split_point not in store.split_points:
        raise FitInputError(f"split point {split_point!r} is not in store {store.path!r}; it has "
                         f"{store.split_points}")
    return split_point


def fit_concepts(config: FitConfig) -> dict:
    """Run the trainer as a Ray actor (restarted once if it dies; it resumes from its checkpoint)."""
    import ray

    from raypipe.concepts.overcomplete_import import require_overcomplete
    from raypipe.runtime import fault_hook_args, init_ray
    from raypipe.store import ActivationStore

    require_overcomplete()  # fail fast, before Ray starts
    store = ActivationStore(config.store)
    check_fit_inputs(effective_config(config, store), store, _split(store, config.split_point))
    init_ray(config.address, 1, config.num_cpus)
    actor_cls = ray.remote(num_gpus=config.num_gpus, num_cpus=config.num_cpus, max_restarts=2,
                           max_task_retries=2, **fault_hook_args())(ConceptTrainer)
    trainer = actor_cls.remote(config.to_dict())
    summary = ray.get(trainer.fit.remote()) | {
        "config": config.to_dict(),
        # what the dictionary was fitted on: `raypipe mine` refits when the store's shards change
        "store_checksums": [r.checksum for r in store.shards]}
    Path(config.out, "fit_summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    return summary


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)
