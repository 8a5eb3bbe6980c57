"""`raypipe interpret`: top-activating units of every concept over the whole store, on Ray.

One Ray task per shard encodes that shard's activations with the concept model and keeps a
per-concept top-k (plus firing counts); the driver merges the ``(K, k)`` results exactly, then
looks up the winning units and cuts a context window around each from its neighbouring units.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.config import ConfigError
from raypipe.interpretation.interpret_config import InterpretConfig
from raypipe.interpretation.top_activations import TopK, block_topk, merge_topk

log = logging.getLogger("raypipe.interpret")


def shard_topk(store_path: str, shard_index: int, first_row: int, concepts: str, split: str,
               k: int, batch_size: int) -> TopK:
    """The map step: one shard's per-concept top-k (runs as a Ray task)."""
    import torch

    from raypipe.concepts.concept_model import ConceptModel
    from raypipe.store import ActivationStore

    store = ActivationStore(store_path)
    view = copy.copy(store)
    view.shards = [store.shards[shard_index]]
    model = ConceptModel.load(concepts)
    parts, row = [], first_row
    with torch.inference_mode():
        for batch in view.iter_batches(split, batch_size=batch_size, columns=()):
            x = torch.from_numpy(batch["activations"])
            parts.append(block_topk(model.encode(x), row, k))
            row += len(x)
    if not parts:
        parts.append(block_topk(torch.zeros(0, model.n_concepts), row, k))
    return merge_topk(parts, k)


def interpret_concepts(config: InterpretConfig) -> dict:
    """Run the map-reduce and write the tables; returns a summary."""
    import ray

    from raypipe.concepts.concept_model import ConceptModel
    from raypipe.interpretation.concept_gradient_job import concepts_fingerprint
    from raypipe.runtime import init_ray, progress_bar
    from raypipe.store import ActivationStore

    store = ActivationStore(config.store)
    model = ConceptModel.load(config.concepts)
    fingerprint = concepts_fingerprint(config.concepts)  # which dictionary: `mine` redoes on a refit
    split = model.meta.get("split_point") or store.split_points[0]
    if split not in store.split_points:
        raise ConfigError(f"the concepts were fitted on {split!r}, which store {config.store!r} does "
                          f"not have ({store.split_points})")
    init_ray(config.address, 0, 0)
    task = ray.remote(num_cpus=1)(shard_topk)
    offsets = np.concatenate([[0], np.cumsum([s.rows for s in store.shards])])
    refs = [task.remote(config.store, i, int(offsets[i]), config.concepts, split, config.top_k,
                        config.batch_size) for i in range(len(store.shards))]
    parts = []
    with progress_bar(config.progress, len(refs), "interpret") as bar:
        bar.unit = "shard"
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            parts.append(ray.get(done[0]))
            bar.update(1)
    merged = merge_topk(parts, config.top_k)
    units = store.store_order_units()  # merged rows index the store in shard order
    top = top_table(merged, units, config.context)
    concepts = concept_table(merged, top)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(top, out / "top_activations.parquet")
    pq.write_table(concepts, out / "concepts.parquet")
    summary = {"store": config.store, "concepts": config.concepts, "split_point": split,
               "method": model.method, "n_concepts": model.n_concepts, "rows": int(merged.n_rows),
               "dead_concepts": int((merged.fired == 0).sum()), "metrics": model.meta.get("metrics", {}),
               "concepts_fingerprint": fingerprint, "config": dataclasses.asdict(config)}
    (out / "interpretation.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def top_table(top: TopK, units: pa.Table, context: int) -> pa.Table:
    """One row per (concept, rank) with the unit, its text and a context window."""
    doc = units.column("doc_id").to_pylist()
    text = units.column("text").to_pylist()
    start = units.column("char_start").to_numpy()
    end = units.column("char_end").to_numpy()
    unit = units.column("unit").to_numpy()
    rows: dict[str, list] = {k: [] for k in ("concept", "rank", "activation", "doc_id", "unit", "text",
                                            "char_start", "char_end", "context", "highlight_start",
                                            "highlight_end")}
    for concept in range(top.rows.shape[0]):
        for rank, (row, value) in enumerate(zip(top.rows[concept], top.values[concept])):
            if row < 0:
                continue
            ctx, h0, h1 = context_window(doc, text, start, end, int(row), context)
            for key, val in (("concept", concept), ("rank", rank), ("activation", float(value)),
                             ("doc_id", doc[row]), ("unit", int(unit[row])), ("text", text[row]),
                             ("char_start", int(start[row])), ("char_end", int(end[row])),
                             ("context", ctx), ("highlight_start", h0), ("highlight_end", h1)):
                rows[key].append(val)
    return pa.table(rows)


def context_window(doc: list, text: list, start: np.ndarray, end: np.ndarray, row: int,
                   width: int) -> tuple[str, int, int]:
    """Text of the units around ``row`` in its document, and where ``row``'s text sits in it.

    Units are joined with a space wherever their character spans leave a gap, which rebuilds
    the source text for tokens and words without needing the corpus itself.
    """
    lo, hi = row, row
    while lo > 0 and row - lo < width and doc[lo - 1] == doc[row]:
        lo -= 1
    while hi + 1 < len(doc) and hi - row < width and doc[hi + 1] == doc[row]:
        hi += 1
    pieces, h0, h1, cursor = [], 0, 0, 0
    for i in range(lo, hi + 1):
        if i > lo and start[i] > end[i - 1]:
            pieces.append(" ")
            cursor += 1
        if i == row:
            h0 = cursor
        pieces.append(text[i])
        cursor += len(text[i])
        if i == row:
            h1 = cursor
    return "".join(pieces), h0, h1


def concept_table(top: TopK, table: pa.Table) -> pa.Table:
    """Per concept: firing frequency, mean activation, and its most common top texts."""
    n = max(top.n_rows, 1)
    words: dict[int, list[str]] = {}
    for concept, text in zip(table.column("concept").to_pylist(), table.column("text").to_pylist()):
        words.setdefault(concept, []).append(text.strip().lower())
    summaries = []
    for concept in range(top.rows.shape[0]):
        counts: dict[str, int] = {}
        for w in words.get(concept, []):
            counts[w] = counts.get(w, 0) + 1
        summaries.append(", ".join(w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:5]))
    return pa.table({"concept": np.arange(top.rows.shape[0]),
                     "frequency": top.fired / n, "mean_activation": top.total / n,
                     "top_texts": summaries})
