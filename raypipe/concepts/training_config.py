"""``TrainConfig``: every knob of a streaming SAE run, validated when built.

A checkpoint records the config it was made with; resuming with a config that would change the
result (``RESULT_FIELDS``) is refused, while ``device``, ``checkpoint_every`` and ``log_every``
may change between runs because they do not change the trained weights on one device.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields

from raypipe.concepts.methods import SAE_METHODS

_FREE_FIELDS = ("device", "checkpoint_every", "log_every")


@dataclass
class TrainConfig:
    """How to train one sparse autoencoder on one split point of an ActivationStore."""

    method: str = "topk_sae"
    """One of relu_sae, topk_sae, batchtopk_sae, jumprelu_sae, mp_sae."""
    n_concepts: int = 1024
    """Dictionary size K (number of latents)."""
    top_k: int = 32
    """Active latents per row: TopK (exact), BatchTopK (batch average), MP (iterations)."""
    epochs: int = 1
    """Passes over the training shards."""
    batch_size: int = 1024
    """Rows per optimiser step."""
    lr: float = 5e-4
    """Peak Adam learning rate, reached after the warmup."""
    warmup_steps: int = 100
    """Linear warmup from lr / warmup_steps to lr, then cosine decay to lr * final_lr_ratio.
    Capped at a tenth of the run's steps (``sae_training.warmup_for``), so short runs reach lr."""
    final_lr_ratio: float = 0.1
    """Learning rate at the last step, as a fraction of lr."""
    l1: float = 1e-3
    """relu_sae sparsity weight: loss = MSE + l1 * mean over rows of sum_k |z_k|."""
    jumprelu_l0: float = 1e-3
    """jumprelu_sae sparsity weight: loss = MSE + jumprelu_l0 * mean over rows of L0."""
    clip_grad: float = 1.0
    """Maximum global gradient norm per step (0 = no clipping), as overcomplete's train_sae."""
    shuffle_buffer: int | None = None
    """Rows pooled by the store's shuffling reader (0: shard order and rows within a shard
    only); None: ``default_shuffle_buffer(d)``, 65,536 rows or fewer for wide activations."""
    seed: int = 0
    """Seeds the weights' initialisation and every epoch's shuffle."""
    checkpoint_every: int = 500
    """Steps between checkpoints written to out_dir/checkpoint/."""
    log_every: int = 50
    """Steps between history entries (the only host syncs of the training loop)."""
    dead_after: int = 10_000_000
    """A latent is dead if it has not fired for this many training rows (or never fired)."""
    device: str = "auto"
    """torch device; "auto" takes cuda when available, else cpu."""
    holdout_shards: int = 1
    """The last N shards of the store are held out for the final metrics (0 = none: in-sample)."""

    def __post_init__(self) -> None:
        if self.method not in SAE_METHODS:
            close = difflib.get_close_matches(str(self.method), SAE_METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"TrainConfig.method={self.method!r} is not an SAE method{hint}; "
                             f"use one of {SAE_METHODS}")
        for name in ("n_concepts", "top_k", "epochs", "batch_size", "checkpoint_every",
                     "log_every", "dead_after"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed", "holdout_shards"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.shuffle_buffer is not None:
            _check_int("shuffle_buffer", self.shuffle_buffer, minimum=0)
        if self.method in ("topk_sae", "batchtopk_sae") and self.top_k > self.n_concepts:
            raise ValueError(f"TrainConfig.top_k={self.top_k} exceeds n_concepts="
                             f"{self.n_concepts}; lower top_k or raise n_concepts")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr={self.lr!r} must be > 0 (e.g. 5e-4)")
        if not 0 <= self.final_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.final_lr_ratio={self.final_lr_ratio!r} must be in "
                             "[0, 1] (the last step's lr as a fraction of lr)")
        for name in ("l1", "jumprelu_l0", "clip_grad"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 0")
        if self.device != "auto" and not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device={self.device!r} must be a string such as "
                             "'auto', 'cpu' or 'cuda:0'")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A dict (YAML job file, checkpoint.json) → config; an unknown key is a ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    def result_differences(self, other: "TrainConfig") -> list[tuple[str, object, object]]:
        """``[(field, self value, other value)]`` for the fields that change the trained SAE."""
        a, b = self.to_dict(), other.to_dict()
        return [(k, a[k], b[k]) for k in a if k not in _FREE_FIELDS and a[k] != b[k]]


SHUFFLE_BUFFER_ROWS = 65536
SHUFFLE_BUFFER_BYTES = 512 * 2**20


def default_shuffle_buffer(dim: int) -> int:
    """Rows of the default shuffle buffer for ``dim``-wide float32 rows: 65,536, or as many as
    fit in 512 MiB when rows are wider (d=4096: 32,768; an 8B model's residual stream is that
    wide), so the buffer's memory does not grow with the model."""
    return max(1, min(SHUFFLE_BUFFER_ROWS, SHUFFLE_BUFFER_BYTES // (4 * max(1, int(dim)))))


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= {minimum}")
