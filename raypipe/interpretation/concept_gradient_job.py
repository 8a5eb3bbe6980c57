"""Concept-to-output gradients over a corpus, on Ray: one row of K gradients per document.

    pending shards ─► ConceptGradientShard (actor pool: model + concepts loaded once; tokenize,
                      token-budget batches, spliced forward + backward, atomic shard write)
                   ─► driver: manifest

The math is ``concept_gradients.concept_output_gradients``; this module only plans shards,
runs actors and writes the store. Store (``format`` ``raypipe.concept_gradients/1``):
``OUT/manifest.json`` and ``OUT/shards/shard-NNNNNN.parquet`` with one row per non-empty
document: ``doc_id``, ``target`` (class or token id explained), ``score`` (its output under
``mode``), ``n_tokens``, ``gradients`` ``list<float>`` (K: the gradient summed over the
document's tokens) and ``mean_concepts`` ``list<float>`` (K: the concept activations averaged
over its tokens). Shards listed in the manifest are skipped when the job is run again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raypipe.config import (RUNTIME_ONLY, ConfigError, _opt, model_stamp, paths_as_strings,
                            require_at_least_one, require_fields)

log = logging.getLogger("raypipe.concept_gradients")

CONCEPT_GRADIENTS_FORMAT = "raypipe.concept_gradients/1"
REQUIRED_COLUMNS = ("doc_id", "target", "gradients", "mean_concepts")


@dataclass
class ConceptGradientConfig:
    """A concept-gradient job: corpus → model actors with a spliced concept dictionary → store."""

    model: str = _opt("", "model: a local folder (save_pretrained) or a hub id; a sequence "
                      "classifier or a causal LM", required=True)
    corpus: Any = _opt("", "corpus: a .txt (one document per line), .jsonl, .csv/.tsv, .parquet, a "
                       "datasets.save_to_disk folder, 'hf:NAME', or 'stdlib:docstrings'", required=True)
    concepts: str = _opt("", "concept model directory (the --out of `raypipe fit`)", required=True)
    out: str = _opt("", "output store directory", required=True)
    target: Any = _opt("predicted", "explained output: 'predicted' (the argmax), or a class index "
                       "(classifier) / token id (causal LM, scored at the last token)")
    mode: str = _opt("logits", "score of the target: logits, softmax or log_softmax")
    split_point: str | None = _opt(None, "module whose output is spliced (default: the concept "
                                   "model's meta['split_point'])")
    output_index: int = _opt(0, "which element of a tuple-valued module output is the hidden state")
    auto_class: str | None = _opt(None, "transformers auto class, e.g. "
                                  "AutoModelForSequenceClassification (default: from the config)")
    text_column: str = _opt("text", "text column of JSONL/CSV/Parquet/HF corpora")
    id_column: str | None = _opt(None, "column to use as doc_id (default: the 0-based row number)")
    max_length: int | None = _opt(None, "tokens per document; longer ones are truncated and "
                                  "counted (default: the model's maximum)")
    batch_tokens: int | None = _opt(None, "padded tokens per micro-batch on the model actors "
                                     "(default: 4096 on a GPU, as gradients are kept; 1024 on "
                                     "CPU)")
    actors: int = _opt(1, "number of model actors (each holds one copy of the model)")
    num_gpus: float = _opt(0.0, "GPUs per model actor")
    num_cpus: float = _opt(1.0, "CPUs reserved per model actor")
    docs_per_shard: int = _opt(64, "documents per output shard (the unit of resuming)")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else a local Ray)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        from raypipe.attribution.scoring import MODES

        require_fields(self, "model", "corpus", "concepts", "out")
        self.target = _parse_target(self.target)
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        require_at_least_one(self, "actors", "batch_tokens", "docs_per_shard")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {self.max_length}")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ConfigError(f"num_gpus and num_cpus must be >= 0, got {self.num_gpus}, {self.num_cpus}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not isinstance(d["corpus"], str):
            d["corpus"] = f"<python list of {len(self.corpus)} documents>"
        return d

    def config_hash(self, fingerprint: dict, *, model_files: bool = True) -> str:
        """Hash of what the store's content depends on: output fields, corpus, concept model
        and the model's files (`model_stamp`; ``model_files=False``: the hash of stores
        written before raypipe recorded them)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_ONLY}
        if model_files:
            fields["model_files"] = model_stamp(self.model)
        blob = json.dumps({"config": fields, **fingerprint}, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _parse_target(target: Any) -> int | str:
    """``"predicted"``, or a non-negative int (CLI/YAML strings of digits are read as ints)."""
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, bool) or not (target == "predicted" or isinstance(target, int)):
        raise ConfigError(f"target={target!r}: use 'predicted' or a class index / token id")
    if isinstance(target, int) and target < 0:
        raise ConfigError(f"target must be >= 0, got {target}")
    return target


def concepts_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 of a saved concept model's two files: a refitted dictionary is a different job."""
    from raypipe.concepts.concept_model import JSON_FILE, TENSORS_FILE

    digest = hashlib.sha256()
    for name in (JSON_FILE, TENSORS_FILE):
        with open(Path(directory) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def gradient_table(rows: list[dict]) -> pa.Table:
    """Rows ``{doc_id, target, score, n_tokens, gradients (K,), mean_concepts (K,)}`` → shard table."""
    doc_type = pa.string() if any(isinstance(r["doc_id"], str) for r in rows) else pa.int64()
    schema = pa.schema([("doc_id", doc_type), ("target", pa.int64()), ("score", pa.float32()),
                        ("n_tokens", pa.int64()), ("gradients", pa.list_(pa.float32())),
                        ("mean_concepts", pa.list_(pa.float32()))],
                       metadata={"raypipe.format": CONCEPT_GRADIENTS_FORMAT})
    return pa.table({f.name: [r[f.name] for r in rows] for f in schema}, schema=schema)


class ConceptGradientShard:
    """Callable class for ``map_batches``: shard descriptors in, written ``ShardRecord``s (JSON) out."""

    def __init__(self, config: dict, corpus, split_point: str, max_length: int) -> None:
        import transformers

        from raypipe.frozen_heap import loading_frozen_heap
        from raypipe.torch_thread import TorchThread

        transformers.logging.disable_progress_bar()
        self.config = ConceptGradientConfig(**config)
        self.corpus = corpus
        self.split_point = split_point
        self.max_length = max_length
        # model load and every shard's gradients on one thread (see raypipe.torch_thread)
        self._torch = TorchThread()
        with loading_frozen_heap():  # see raypipe.frozen_heap
            self._torch.run(self._load)

    def _load(self) -> None:
        import torch

        from raypipe.batching import resolve_batch_tokens
        from raypipe.batching.token_budget import GRADIENT_GPU_BATCH_TOKENS
        from raypipe.concepts.concept_model import ConceptModel
        from raypipe.models.loading import actor_device_map, load_model_and_tokenizer

        if not self.config.num_gpus:
            torch.set_num_threads(max(1, int(self.config.num_cpus)))
        device_map = actor_device_map(self.config.num_gpus)
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.config.model, auto_class=self.config.auto_class, device_map=device_map)
        self.concepts = ConceptModel.load(self.config.concepts)
        self.batch_tokens = resolve_batch_tokens(self.config.batch_tokens,
                                                 next(self.model.parameters()).device,
                                                 gpu_default=GRADIENT_GPU_BATCH_TOKENS)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self._torch.run(self.run_shard, int(s), int(a), int(b)) for s, a, b in
                   zip(batch["shard_id"], batch["doc_start"], batch["doc_end"])]
        return {"record": np.asarray(records, dtype=object)}

    def run_shard(self, shard_id: int, doc_start: int, doc_end: int) -> str:
        """Compute and write one shard; returns its ShardRecord as JSON."""
        from raypipe.batching import pad_batch, plan_micro_batches, tokenize_documents
        from raypipe.extraction.forward import pad_token_id
        from raypipe.granularity import Granularity
        from raypipe.interpretation.concept_gradients import concept_output_gradients
        from raypipe.store import write_shard

        t0 = time.perf_counter()
        documents = self.corpus.read_range(doc_start, doc_end).documents
        docs, stats = tokenize_documents(documents, self.tokenizer, max_length=self.max_length,
                                         overflow="truncate", granularity=Granularity.TOKEN)
        ids_per_doc = [d.windows[0] for d in docs]
        rows: list[dict | None] = [None] * len(docs)
        pad_id = pad_token_id(self.tokenizer)
        for batch in plan_micro_batches([len(x) for x in ids_per_doc], self.batch_tokens):
            ids, mask = pad_batch([ids_per_doc[i] for i in batch], pad_id)
            out = concept_output_gradients(self.model, self.concepts, self.split_point, ids, mask,
                                           target=self.config.target, mode=self.config.mode,
                                           output_index=self.config.output_index)
            n_tokens = mask.sum(1)
            means = out["concepts"].sum(1) / n_tokens[:, None].float()
            for row, i in enumerate(batch):
                rows[i] = {"doc_id": docs[i].doc_id, "target": int(out["targets"][row]),
                           "score": float(out["scores"][row]), "n_tokens": int(n_tokens[row]),
                           "gradients": out["gradients"][row].tolist(),
                           "mean_concepts": means[row].tolist()}
        stats_dict = stats.as_dict() | {"model_seconds": time.perf_counter() - t0}
        record = write_shard(self.config.out, shard_id, gradient_table(rows), doc_start=doc_start,
                             doc_end=doc_end, stats=stats_dict, required=REQUIRED_COLUMNS)
        return json.dumps(dataclasses.asdict(record))


def concept_gradients_job(config: ConceptGradientConfig) -> dict:
    """Run (or resume) a concept-gradient job; returns a summary (also the manifest's ``summary``)."""
    from raypipe import __version__
    from raypipe.concepts.concept_model import ConceptModel
    from raypipe.corpus import open_corpus
    from raypipe.extraction.plan import resolve_max_length
    from raypipe.interpretation.concept_gradients import module_path
    from raypipe.models.meta_model import load_meta_model
    from raypipe.store import StoreWriter

    t0 = time.perf_counter()
    corpus = open_corpus(config.corpus, text_column=config.text_column, id_column=config.id_column)
    n_docs = len(corpus)
    concepts = ConceptModel.load(config.concepts)
    split = config.split_point or concepts.meta.get("split_point")
    if split is None:
        raise ConfigError(f"concept model {config.concepts!r} records no meta['split_point']: pass "
                          "--split-point (the module whose activations it was fitted on)")
    meta, tokenizer = load_meta_model(config.model, auto_class=config.auto_class)
    path = module_path(meta, split)   # resolved (and checked) on the driver, before any actor
    max_length = resolve_max_length(config.max_length, meta, tokenizer)
    fingerprint = {"corpus": corpus.describe(), "concepts": concepts_fingerprint(config.concepts)}
    header = {"raypipe_version": __version__, "model": config.model,
              "model_files": model_stamp(config.model), "split_point": path,
              "concept_method": concepts.method, "n_concepts": concepts.n_concepts,
              "target": config.target, "mode": config.mode, "max_length": max_length,
              "documents": n_docs, "id2label": {str(k): v for k, v in
                                                (getattr(meta.config, "id2label", None) or {}).items()},
              **fingerprint, "config": config.to_dict()}
    writer = StoreWriter(config.out, header, config.config_hash(fingerprint),
                         format=CONCEPT_GRADIENTS_FORMAT,
                         legacy_hash=config.config_hash(fingerprint, model_files=False))
    summary = {"store": config.out, "documents": 0, "rows": 0, "truncated": 0, "skipped_empty": 0,
               "shards_written": 0, "shards_skipped": 0, "model_seconds": 0.0}
    pending = []
    for shard_id, start in enumerate(range(0, n_docs, config.docs_per_shard)):
        if writer.is_complete(shard_id):
            summary["shards_skipped"] += 1
            _add(summary, writer.completed[shard_id])
        else:
            pending.append({"shard_id": shard_id, "doc_start": start,
                            "doc_end": min(start + config.docs_per_shard, n_docs)})
    if pending:
        _run(config, corpus, path, max_length, writer, pending, summary)
    summary["wall_seconds"] = time.perf_counter() - t0
    writer.finalize(summary)
    return summary


def _add(summary: dict, record) -> None:
    summary["rows"] += record.rows
    for key in ("docs", "truncated", "skipped_empty", "model_seconds"):
        summary["documents" if key == "docs" else key] += record.stats.get(key, 0)


def _run(config: ConceptGradientConfig, corpus, path: str, max_length: int, writer, pending: list,
         summary: dict) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from raypipe.runtime import init_ray, progress_bar, quiet_ray_data
    from raypipe.store import ShardRecord

    init_ray(config.address, config.actors, config.num_cpus)
    quiet_ray_data(log)
    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    ds = ds.map_batches(ConceptGradientShard, batch_size=1,
                        compute=ActorPoolStrategy(size=config.actors),
                        num_cpus=config.num_cpus, num_gpus=config.num_gpus or None,
                        fn_constructor_kwargs={"config": config.to_dict() | {"corpus": "-"},
                                               "corpus": corpus, "split_point": path,
                                               "max_length": max_length})
    total = sum(p["doc_end"] - p["doc_start"] for p in pending)
    with progress_bar(config.progress, total, "concept-gradients") as bar:
        for row in ds.iter_rows():
            record = ShardRecord(**json.loads(row["record"]))
            writer.record(record)
            summary["shards_written"] += 1
            _add(summary, record)
            bar.update(record.doc_end - record.doc_start)
