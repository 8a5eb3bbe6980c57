"""Deletion/insertion faithfulness of an attribution store, as a distributed job.

    store shards ─► prepare_curves (CPU: re-read + re-tokenize the documents, check the units,
                    deletion / insertion / random masks → perturbed ids)
                 ─► ScoreShard (the attribution job's actor pool: packed, length-sorted forwards)
                 ─► curves_shard (CPU: curves and their areas) ─► driver: parquet + json summary

One Ray row per store shard, so work is spread exactly as the attribution job spread it. The
model, baseline, granularity, mode and max_length all come from the store's manifest: the
curves measure the attributions under the perturbation they were computed with.

Generation stores hold a (target tokens × units) matrix per document. A unit's importance for
the curves is its column sum (its effect on the whole continuation), and each curve point is
the continuation's score summed over its tokens (with mode log_softmax: the log-probability of
the continuation), the same quantity the stored ``original_score`` holds.
"""
from __future__ import annotations

import functools
import json
import logging
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.faithfulness import (curve_auc, deletion_masks, fractions,
                                              insertion_masks, random_order_masks)
from raypipe.attribution.masks import distinct_masks, doc_seed
from raypipe.config import ConfigError, _opt, paths_as_strings
from raypipe.corpus import CorpusSource, open_corpus

log = logging.getLogger("raypipe.faithfulness")

CURVES = ("deletion", "insertion", "random_deletion", "random_insertion")
RESULTS_NAME = "faithfulness.parquet"
SUMMARY_NAME = "faithfulness.json"


class UnitMismatchError(ValueError):
    """The re-tokenized document's units differ from the ones stored with its attributions."""



@functools.lru_cache(maxsize=4)
def cached_tokenizer(name: str, trust_remote_code: bool):
    """One transformers tokenizer per worker process (Ray reuses workers across tasks). The
    curve tasks still load it by name: this job's driver loads no tokenizer to ship a backend
    from, as the extraction and attribution drivers do (see ``raypipe.batching.backend``)."""
    from raypipe.models.loading import load_tokenizer

    return load_tokenizer(name, trust_remote_code=trust_remote_code)


@dataclass
class FaithfulnessConfig:
    """A faithfulness job: attribution store → deletion/insertion curves (actors) → AUCs."""

    store: str = _opt("", "attribution store to evaluate (classification or generation)",
                      required=True)
    out: str = _opt("", "output directory for faithfulness.parquet and faithfulness.json",
                    required=True)
    corpus: Any = _opt(None, "corpus to re-read (default: the store's; needed when the store was "
                       "made from an in-memory list); it must be the same documents")
    steps: int | None = _opt(None, "points per curve - 1 (default: one unit per step)")
    seed: int = _opt(0, "seed of the random-order baseline (per document via doc_seed)")
    actors: int = _opt(1, "model actors")
    num_gpus: float = _opt(0.0, "GPUs per model actor")
    num_cpus: float = _opt(1.0, "CPUs reserved per model actor")
    torch_threads: int | None = _opt(None, "torch threads per actor (default: cores / actors on CPU)")
    batch_tokens: int | None = _opt(None, "padded tokens per packed forward batch "
                                     "(default: 8192 on a GPU, 1024 on CPU)")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else a local Ray)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        for name in ("store", "out"):
            if not getattr(self, name):
                raise ConfigError(f"'{name}' is required (--{name})")
        if self.steps is not None and int(self.steps) < 1:
            raise ConfigError(f"steps must be >= 1 (or unset for one unit per step), got {self.steps}")
        for name in ("actors", "batch_tokens"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        import dataclasses

        d = dataclasses.asdict(self)
        if isinstance(d["corpus"], (list, tuple)):
            d["corpus"] = f"<python list of {len(self.corpus)} documents>"
        return d


# -- pure per-row pieces ---------------------------------------------------------------------
def curve_masks(scores: np.ndarray, seed: int, steps: int | None) -> np.ndarray:
    """``(4, m, g)`` bool: deletion, insertion, random deletion, random insertion masks."""
    g = len(scores)
    return np.stack([deletion_masks(scores, steps), insertion_masks(scores, steps),
                     random_order_masks(g, seed, "deletion", steps),
                     random_order_masks(g, seed, "insertion", steps)])


def row_curves(original: float, scores: np.ndarray, index: np.ndarray, x: np.ndarray) -> dict:
    """Curves ``(4, m)`` and their areas from the scores of ``distinct_masks``' rows ``(r,)``."""
    values = np.concatenate([[original], np.asarray(scores, dtype=np.float64)])
    curves = values[index]
    out = {f"{name}_auc": curve_auc(curves[i], x) for i, name in enumerate(CURVES)}
    out["deletion_curve"] = curves[0].tolist()
    out["insertion_curve"] = curves[1].tolist()
    return out


# -- stages ------------------------------------------------------------------------------------
STORE_COLUMNS = ("doc_id", "target", "units", "char_start", "char_end", "scores", "shape",
                 "target_tokens", "original_score")


def unit_importance(row: dict) -> np.ndarray:
    """``(g,)`` scores that order the units: the row's scores, or for a generation row's
    (T, g) matrix its column sums (each unit's effect on the whole continuation)."""
    scores = np.asarray(row["scores"], dtype=np.float64)
    shape = row.get("shape") or [len(scores)]
    return scores.reshape(shape).sum(0) if len(shape) == 2 else scores


def _read_store_shard(store: str, name: str, columns: tuple[str, ...] = STORE_COLUMNS) -> list[dict]:
    import pyarrow.parquet as pq

    from raypipe.store.layout import resolve_store

    fs, base = resolve_store(store)
    with fs.open_input_file(f"{base}/{name}") as f:
        return pq.read_table(f, columns=list(columns)).to_pylist()


def _check_units(doc, row: dict) -> None:
    units = doc.units
    same = (list(units.text) == list(row["units"])
            and units.char_start.tolist() == list(row["char_start"])
            and units.char_end.tolist() == list(row["char_end"]))
    if not same:
        raise UnitMismatchError(
            f"document {row['doc_id']!r}: re-tokenized units {list(units.text)[:8]}... differ from "
            f"the stored ones {list(row['units'])[:8]}...: the corpus, tokenizer or max_length is "
            "not the one the attribution store was made with (pass the same --corpus), or the "
            "store was made by an older raypipe whose unit rules differ (re-run attribute)")


def prepare_curves(batch: dict[str, np.ndarray], *, corpus: CorpusSource, store: str,
                   tokenizer_name: str, trust_remote_code: bool, max_length: int,
                   granularity: str, baseline: str, seed: int,
                   steps: int | None) -> dict[str, np.ndarray]:
    """Store shard rows → ``{shard_id, payload}``: one DocWork per store row, with its meta."""
    from raypipe.attribution.perturb import perturbed_inputs
    from raypipe.attribution.perturb_stage import DocWork, effective_baseline
    from raypipe.batching import tokenize_documents
    from raypipe.granularity import Granularity

    tokenizer = cached_tokenizer(tokenizer_name, trust_remote_code)
    base = effective_baseline(baseline, tokenizer)
    payloads = []
    for shard_id, name, start, stop in zip(batch["shard_id"], batch["name"], batch["doc_start"],
                                           batch["doc_end"]):
        rows = _read_store_shard(store, str(name))
        read = corpus.read_range(int(start), int(stop))
        docs, _ = tokenize_documents(read.documents, tokenizer, max_length=max_length,
                                     overflow="truncate", granularity=Granularity.parse(granularity))
        by_id = {str(d.doc_id): d for d in docs}
        work, meta, skipped = [], [], 0
        for row in rows:
            doc = by_id.get(str(row["doc_id"]))
            if doc is None:
                raise UnitMismatchError(
                    f"document {row['doc_id']!r} of store shard {int(shard_id)} is not among the "
                    f"non-empty documents at corpus positions [{int(start)}, {int(stop)}): pass the "
                    "corpus the store was made from (--corpus)")
            _check_units(doc, row)
            scores = unit_importance(row)
            if len(scores) == 0:
                skipped += 1
                continue
            masks = curve_masks(scores, doc_seed(seed, row["doc_id"]), steps)
            distinct, index = distinct_masks(masks)  # the four curves share rows
            ids, attention = perturbed_inputs(doc.windows[0], doc.units.members, distinct,
                                              baseline=base, tokenizer=tokenizer)
            target_ids = None
            if row.get("target_tokens"):  # generation: re-score the stored continuation
                target_ids = np.asarray(tokenizer.convert_tokens_to_ids(row["target_tokens"]),
                                        dtype=np.int64)
            work.append(DocWork(doc, ids=ids, attention=attention, target_ids=target_ids))
            meta.append({"doc_id": row["doc_id"], "target": int(row["target"]), "index": index,
                         "n_units": len(scores),
                         "fractions": fractions(len(scores), steps),
                         "stored_original": row["original_score"]})
        payloads.append(pickle.dumps({
            "shard_id": int(shard_id), "doc_start": int(start), "doc_end": int(stop),
            "work": work, "meta": meta,
            "stats": {"rows": len(meta), "skipped_no_units": skipped}},
            protocol=pickle.HIGHEST_PROTOCOL))
    return {"shard_id": np.asarray(batch["shard_id"]), "payload": np.asarray(payloads, dtype=object)}


def curves_shard(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scored shard → ``{shard_id, rows}``: one pickled list of result rows per shard."""
    out = []
    for payload in batch["payload"]:
        shard = pickle.loads(payload)
        rows = []
        for w, meta in zip(shard["work"], shard["meta"]):
            if "target_ids" in w.results:  # generation: the continuation's summed score
                original = float(np.sum(w.results["original"]))
                point_scores = np.asarray(w.results["scores"], dtype=np.float64).sum(1)
            else:
                col = list(w.results["targets"]).index(meta["target"])
                original = float(w.results["original"][col])
                point_scores = w.results["scores"][:, col]
            row = {"doc_id": meta["doc_id"], "target": meta["target"],
                   "n_units": meta["n_units"],
                   "original_score": original}
            row |= row_curves(original, point_scores, meta["index"], meta["fractions"])
            row["fractions"] = meta["fractions"].tolist()
            stored = meta["stored_original"]
            row["original_drift"] = None if stored is None else abs(original - float(stored))
            rows.append(row)
        out.append(pickle.dumps({"rows": rows, "stats": shard["stats"]},
                                protocol=pickle.HIGHEST_PROTOCOL))
    return {"shard_id": np.asarray(batch["shard_id"]), "result": np.asarray(out, dtype=object)}


# -- driver ------------------------------------------------------------------------------------
def _open_source(config: FaithfulnessConfig, manifest: dict) -> CorpusSource:
    """Re-open the store's corpus (or the override) and check it is the same one."""
    attr = manifest.get("config") or {}
    corpus = config.corpus if config.corpus is not None else attr.get("corpus")
    if isinstance(corpus, str) and corpus.startswith("<python list"):
        raise ConfigError(f"the store at {config.store!r} was made from an in-memory list of "
                          "documents, which it does not keep: pass the same list (or a file holding "
                          "it) as corpus")
    source = open_corpus(corpus, text_column=attr.get("text_column", "text"),
                         id_column=attr.get("id_column"))
    stored, now = manifest.get("corpus") or {}, source.describe()
    for key in ("kind", "count", "fingerprint", "size_bytes", "text_column", "id_column"):
        if key in stored and key in now and stored[key] != now[key]:
            raise ConfigError(f"corpus {key} is {now[key]!r} but the store was made from one with "
                              f"{stored[key]!r}: pass the corpus the store was made from")
    return source


def _score_config(config: FaithfulnessConfig, manifest: dict, targets: list[int]) -> AttributeConfig:
    """The store's AttributeConfig, as ScoreShard needs it: perturbation forwards of ``targets``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(AttributeConfig)}
    values = {k: v for k, v in (manifest.get("config") or {}).items() if k in names}
    task = manifest.get("task", "classification")
    target = ",".join(str(t) for t in targets) if task == "classification" else "predicted"
    values |= dict(corpus="-", out=config.out, method="occlusion", task=task,
                   target=target or "predicted", target_column=None,
                   max_length=manifest.get("max_length") or values.get("max_length"),
                   actors=config.actors, num_gpus=config.num_gpus, num_cpus=config.num_cpus,
                   torch_threads=config.torch_threads, batch_tokens=config.batch_tokens,
                   address=config.address, progress=False)
    return AttributeConfig(**values)


def _write(out: str, name: str, data: bytes) -> None:
    from raypipe.store.layout import resolve_store
    from raypipe.store.shard_writer import write_bytes_atomically

    fs, base = resolve_store(out)
    fs.create_dir(base, recursive=True)
    write_bytes_atomically(fs, f"{base}/{name}", data)


def _results_table(rows: list[dict]):
    import pyarrow as pa

    doc_type = pa.string() if any(isinstance(r["doc_id"], str) for r in rows) else pa.int64()
    floats = pa.list_(pa.float32())
    schema = pa.schema([("doc_id", doc_type), ("target", pa.int64()), ("n_units", pa.int64()),
                        ("original_score", pa.float32()), ("deletion_auc", pa.float64()),
                        ("insertion_auc", pa.float64()), ("random_deletion_auc", pa.float64()),
                        ("random_insertion_auc", pa.float64()), ("deletion_curve", floats),
                        ("insertion_curve", floats), ("fractions", floats)])
    rows = sorted(rows, key=lambda r: (r["doc_id"], r["target"]))
    return pa.table({f.name: [r[f.name] for r in rows] for f in schema}, schema=schema)


def summarize(rows: list[dict]) -> dict:
    """Corpus means of the four areas, and how often the attribution beats its random order."""
    if not rows:
        return {"rows": 0, "documents": 0}
    col = {k: np.asarray([r[f"{k}_auc"] for r in rows]) for k in CURVES}
    drift = [r["original_drift"] for r in rows if r["original_drift"] is not None]
    return {"rows": len(rows), "documents": len({str(r["doc_id"]) for r in rows}),
            "mean": {f"{k}_auc": float(v.mean()) for k, v in col.items()},
            "deletion_beats_random": float(np.mean(col["deletion"] < col["random_deletion"])),
            "insertion_beats_random": float(np.mean(col["insertion"] > col["random_insertion"])),
            "max_original_score_drift": float(max(drift)) if drift else None}


def evaluate_faithfulness(config: FaithfulnessConfig) -> dict:
    """Deletion/insertion curves and AUCs of every (document, target) row of an attribution
    store (classification or generation); writes ``out/faithfulness.parquet`` and
    ``out/faithfulness.json`` and returns the summary (lower deletion / higher insertion AUC
    than random = more faithful)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.data import ActorPoolStrategy

    from raypipe.attribution.forward_stage import ScoreShard
    from raypipe.runtime import init_ray, progress_bar, quiet_ray_data
    from raypipe.store import AttributionStore

    t0 = time.perf_counter()
    store = AttributionStore(config.store)
    manifest = store.manifest
    if manifest.get("task") not in ("classification", "generation"):
        raise ConfigError(f"the store at {config.store!r} explains {manifest.get('task')!r}: "
                          "deletion/insertion curves need a classification or generation store")
    source = _open_source(config, manifest)
    shards = [s for s in store.shards if s.rows > 0]
    targets = sorted({int(r["target"]) for s in shards
                      for r in _read_store_shard(config.store, s.name, ("target",))})
    score_config = _score_config(config, manifest, targets)
    rows: list[dict] = []
    skipped = 0
    if shards:
        init_ray(config.address, config.actors, config.num_cpus)
        quiet_ray_data(log)
        items = [{"shard_id": s.shard_id, "name": s.name, "doc_start": s.doc_start,
                  "doc_end": s.doc_end} for s in shards]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(prepare_curves, batch_size=1, num_cpus=0.5, fn_kwargs=dict(
            corpus=source, store=store.path, tokenizer_name=score_config.model,
            trust_remote_code=score_config.trust_remote_code, max_length=score_config.max_length,
            granularity=score_config.granularity, baseline=score_config.baseline,
            seed=config.seed, steps=config.steps))
        ds = ds.map_batches(ScoreShard, batch_size=1, compute=ActorPoolStrategy(size=config.actors),
                            num_cpus=config.num_cpus, num_gpus=config.num_gpus or None,
                            fn_constructor_kwargs={"config": score_config.to_dict()})
        ds = ds.map_batches(curves_shard, batch_size=1, num_cpus=0.5)
        with progress_bar(config.progress, sum(s.rows for s in shards), "faithfulness") as bar:
            for item in ds.iter_rows():
                result = pickle.loads(item["result"])
                rows.extend(result["rows"])
                skipped += int(result["stats"]["skipped_no_units"])
                bar.update(len(result["rows"]) + int(result["stats"]["skipped_no_units"]))
    sink = pa.BufferOutputStream()
    pq.write_table(_results_table(rows), sink)
    _write(config.out, RESULTS_NAME, sink.getvalue())
    summary = summarize(rows) | {
        "skipped_no_units": skipped, "store": store.path, "model": manifest.get("model"),
        "method": manifest.get("method"), "granularity": manifest.get("granularity"),
        "baseline": manifest.get("baseline"), "mode": manifest.get("mode"),
        "wall_seconds": round(time.perf_counter() - t0, 3), "config": config.to_dict()}
    _write(config.out, SUMMARY_NAME, json.dumps(summary, indent=2, default=str).encode())
    return summary
