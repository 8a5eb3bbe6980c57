"""Per-concept top-k as a map-reduce: each block keeps its own top-k, merges keep the best.

The top-k of a union is the top-k of the per-part top-ks, so each Ray task only returns
``(K, k)`` values and row ids however large its shard is, and the merge is exact.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TopK:
    """Per concept, the ``k`` largest activations and the global rows they come from."""

    values: np.ndarray   # (K, k) float32, descending; -inf where fewer than k rows exist
    rows: np.ndarray     # (K, k) int64 global row index; -1 where empty
    fired: np.ndarray    # (K,) int64: rows where the concept is > 0 (its activation frequency)
    total: np.ndarray    # (K,) float64: sum of activations, for the mean
    n_rows: int          # rows seen


def block_topk(codes: torch.Tensor, first_row: int, k: int) -> TopK:
    """``codes`` (n, K) for rows ``first_row .. first_row + n`` → their per-concept top-k."""
    n, n_concepts = codes.shape
    take = min(k, n)
    values = np.full((n_concepts, k), -np.inf, np.float32)
    rows = np.full((n_concepts, k), -1, np.int64)
    if take:
        top = torch.topk(codes.T, take, dim=1)                # (K, take), sorted descending
        values[:, :take] = top.values.float().cpu().numpy()
        rows[:, :take] = top.indices.cpu().numpy() + first_row
    fired = (codes > 0).sum(0).cpu().numpy().astype(np.int64)
    total = codes.double().sum(0).cpu().numpy()
    return TopK(values, rows, fired, total, n)


def merge_topk(parts: Iterable[TopK], k: int) -> TopK:
    """Exact merge of per-block top-ks (ties broken by the lower row id, so order is stable)."""
    parts = list(parts)
    values = np.concatenate([p.values for p in parts], axis=1)
    rows = np.concatenate([p.rows for p in parts], axis=1)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -values.astype(np.float64)),
                       axis=1)[:, :k]
    return TopK(np.take_along_axis(values, order, 1), np.take_along_axis(rows, order, 1),
                sum(p.fired for p in parts), sum(p.total for p in parts), sum(p.n_rows for p in parts))
