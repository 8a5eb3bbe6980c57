"""Factories for small shard tables and job headers (a few docs, d <= 8: tests run in seconds)."""
from __future__ import annotations

import numpy as np
from raypipe.store import build_shard_table

SPLITS = ("encoder.layer.0", "encoder.layer.1")
DIMS = {"encoder.layer.0": 8, "encoder.layer.1": 5}


def make_units(doc_start: int, doc_end: int, rng: np.random.Generator,
               dtype: str = "float32", string_ids: bool = False):
    """Docs ``[doc_start, doc_end)`` with 1-4 units each → (table, {split: float32 (n, d)})."""
    counts = rng.integers(1, 5, size=doc_end - doc_start)
    doc_id = np.repeat(np.arange(doc_start, doc_end), counts)
    unit = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, int)
    text = [f"d{d}u{u}" for d, u in zip(doc_id, unit)]
    start = unit * 3
    acts = {p: rng.standard_normal((len(doc_id), d)).astype(np.float32) for p, d in DIMS.items()}
    ids = [f"doc-{d:04d}" for d in doc_id] if string_ids else doc_id
    table = build_shard_table(ids, unit, text, start, start + 2, acts, dtype)
    return table, acts


def make_config(**overrides) -> dict:
    config = {"model": "tiny-bert", "split_points": [0, 1], "granularity": "token",
              "store_dtype": "float32", "docs_per_shard": 3}
    config.update(overrides)
    return config


def make_header(**config_overrides) -> dict:
    return {"model": "tiny-bert", "split_points": list(SPLITS), "dtype": "float32",
            "hidden_sizes": dict(DIMS), "granularity": "token",
            "config": make_config(**config_overrides)}
