"""Stage 3 (CPU tasks): estimate unit scores from the model's scores, write the shard."""
from __future__ import annotations

import json
import pickle
from dataclasses import asdict

import numpy as np

from raypipe.attribution.estimators import estimate
from raypipe.store import build_attribution_table, write_shard
from raypipe.store.attributions import ATTRIBUTION_KEYS


def document_rows(work, method: str, id2label: dict | None = None,
                  parameters: str | None = None) -> list[dict]:
    """One row per (document, target): the units and their scores; ``parameters``: the job's
    score-defining options as JSON (`AttributeConfig.parameters`)."""
    doc, res = work.doc, work.results
    if "skipped" in res:
        return []
    if "unit_scores" in res:
        matrix, first = np.asarray(res["unit_scores"], np.float32), None      # (T, g)
    else:
        est = estimate(work.plan, np.asarray(res["scores"]))
        matrix = np.atleast_2d(est["scores"]).astype(np.float32)
        first = est.get("first_order")
        first = None if first is None else np.atleast_2d(first).astype(np.float32)
    units = dict(units=list(doc.units.text), char_start=doc.units.char_start.tolist(),
                 char_end=doc.units.char_end.tolist(), method=method, parameters=parameters)
    if "target_ids" in res:  # generation: one row, the (T, g) matrix flattened
        return [dict(units, doc_id=doc.doc_id, target=0, target_label=res["target_text"],
                     scores=matrix.reshape(-1).tolist(), shape=list(matrix.shape),
                     target_tokens=list(res["target_tokens"]),
                     first_order=None if first is None else first.reshape(-1).tolist(),
                     original_score=float(np.sum(res["original"])))]
    rows = []
    for j, target in enumerate(res["targets"]):
        label = (id2label or {}).get(str(target), (id2label or {}).get(target, str(target)))
        rows.append(dict(units, doc_id=doc.doc_id, target=int(target), target_label=str(label),
                         scores=matrix[j].tolist(), shape=[matrix.shape[1]],
                         first_order=None if first is None else first[j].tolist(),
                         original_score=float(res["original"][j])))
    return rows


def estimate_shard(batch: dict[str, np.ndarray], *, store_root: str, method: str,
                   id2label: dict | None, parameters: str | None = None) -> dict[str, np.ndarray]:
    records = []
    for payload in batch["payload"]:
        shard = pickle.loads(payload)
        rows = [r for w in shard["work"] for r in document_rows(w, method, id2label, parameters)]
        skipped = sum(1 for w in shard["work"] if "skipped" in w.results)
        table = build_attribution_table(rows)
        stats = dict(shard["stats"], rows=len(rows), skipped_continuations=skipped)
        record = write_shard(store_root, shard["shard_id"], table, doc_start=shard["doc_start"],
                             doc_end=shard["doc_end"], stats=stats, required=ATTRIBUTION_KEYS)
        records.append(json.dumps(asdict(record)))
    return {"record": np.asarray(records, dtype=object)}
