"""Synthetic activations with a known (planted) sparse dictionary, written as an ActivationStore.

Each row is a non-negative combination of ``k`` of ``n_atoms`` unit-norm directions in
``R^d`` plus small Gaussian noise, so a dictionary learner that works should find the planted
directions again; ``best_cosines`` measures how well it did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raypipe.store import ActivationStore, StoreWriter, build_shard_table, write_shard

SPLIT = "encoder.layer.0"


@dataclass
class PlantedData:
    """``x`` (rows, d) float32 = ``codes`` (rows, n_atoms) @ ``atoms`` (n_atoms, d) + noise."""

    x: np.ndarray
    atoms: np.ndarray
    codes: np.ndarray


def planted_sparse_data(rows: int = 20_000, d: int = 32, n_atoms: int = 64, k: int = 3,
                        noise: float = 0.01, seed: int = 0) -> PlantedData:
    """Rows built from ``k`` random atoms each, with coefficients uniform in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.argsort(rng.random((rows, n_atoms)), axis=1)[:, :k]  # k distinct atoms per row
    codes = np.zeros((rows, n_atoms))
    np.put_along_axis(codes, idx, rng.uniform(0.5, 1.5, (rows, k)), axis=1)
    x = codes @ atoms + noise * rng.standard_normal((rows, d))
    return PlantedData(x.astype(np.float32), atoms.astype(np.float32), codes.astype(np.float32))


def write_store(root, x: np.ndarray, n_shards: int, split: str = SPLIT) -> ActivationStore:
    """Write ``x`` (rows, d) as ``n_shards`` near-equal shards of one split point; open it."""
    header = {"model": "synthetic", "split_points": [split], "dtype": "float32",
              "hidden_sizes": {split: int(x.shape[1])}, "granularity": "token",
              "config": {"synthetic": True}}
    writer = StoreWriter(root, header, "synthetic")
    bounds = np.linspace(0, len(x), n_shards + 1).astype(int)
    for shard_id, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        docs = np.arange(a, b)
        table = build_shard_table(docs, np.zeros(b - a, dtype=np.int32), [""] * (b - a), docs * 0,
                                  docs * 0, {split: x[a:b]}, "float32")
        writer.record(write_shard(root, shard_id, table, doc_start=int(a), doc_end=int(b)))
    writer.finalize({"rows": len(x)})
    return ActivationStore(root)


def best_cosines(planted: np.ndarray, learned: torch.Tensor | np.ndarray) -> np.ndarray:
    """For each planted atom (n_atoms, d), its best (signed) cosine with a learned atom (K, d)."""
    learned = np.asarray(learned, dtype=np.float64)
    a = planted / np.linalg.norm(planted, axis=1, keepdims=True)
    b = learned / (np.linalg.norm(learned, axis=1, keepdims=True) + 1e-12)
    return (a @ b.T).max(axis=1)
