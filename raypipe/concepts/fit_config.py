"""The ``raypipe fit`` job config (YAML keys = field names = flags)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from raypipe.concepts.methods import ALL_METHODS, SAE_METHODS
from raypipe.config import (ConfigError, _opt, paths_as_strings, require_at_least_one,
                            require_fields)


@dataclass
class FitConfig:
    """Fit a concept dictionary on one split point of an ActivationStore, in a trainer actor."""

    store: str = _opt("", "ActivationStore directory (the --out of `raypipe extract`)", required=True)
    out: str = _opt("", "output directory: dictionary.safetensors + dictionary.json, checkpoints, "
                    "metrics", required=True)
    split_point: str | None = _opt(None, "split point (module path) to fit on (default: the "
                                   "store's only one)")
    method: str = _opt("topk_sae", "relu_sae, topk_sae, batchtopk_sae, jumprelu_sae, mp_sae, nmf, "
                       "semi_nmf, convex_nmf, pca, ica, kmeans, svd, sparse_pca, dictionary_learning")
    concepts: int = _opt(64, "number of concepts K")
    top_k: int = _opt(8, "active concepts per row for topk/batchtopk (iterations for mp_sae)")
    epochs: int = _opt(1, "SAE passes over the training shards")
    batch_size: int = _opt(1024, "rows per SAE optimiser step")
    lr: float = _opt(5e-4, "SAE peak learning rate (warmup, then cosine decay)")
    seed: int = _opt(0, "seed of the initialisation, shuffling and reservoir sample")
    shuffle_buffer: int | None = _opt(None, "rows pooled by the streaming shuffle (default: "
                                     "65536, fewer for rows wider than 2048: at most 512 MiB)")
    checkpoint_every: int = _opt(500, "SAE steps between checkpoints (a killed trainer resumes)")
    holdout_shards: int = _opt(1, "last N shards held out for the metrics (0: in-sample)")
    memory_budget_mb: int = _opt(2048, "batch methods (nmf, pca, ...): the uniform reservoir "
                                 "sample of rows they are fitted on stays within this budget")
    num_gpus: float = _opt(0.0, "GPUs for the trainer actor")
    num_cpus: float = _opt(1.0, "CPUs for the trainer actor")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else local)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        require_fields(self, "store", "out")
        try:
            from raypipe.concepts.methods import check_method

            check_method(self.method)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        require_at_least_one(self, "concepts", "top_k", "epochs", "batch_size", "memory_budget_mb",
                             "checkpoint_every")
        if self.holdout_shards < 0:
            raise ConfigError(f"holdout_shards must be >= 0, got {self.holdout_shards}")
        if self.method in ("topk_sae", "batchtopk_sae") and self.top_k > self.concepts:
            raise ConfigError(f"--top-k {self.top_k} exceeds --concepts {self.concepts}: a "
                              f"{self.method} keeps top_k of its concepts active per row; lower "
                              "--top-k or raise --concepts")

    @property
    def is_sae(self) -> bool:
        return self.method in SAE_METHODS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


__all__ = ["FitConfig", "ALL_METHODS"]
