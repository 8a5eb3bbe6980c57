"""The attribution driver: plan → Ray Data pipeline → attribution store, resumable by shard.

    pending shards ─► prepare_shard (CPU: units, masks, perturbed ids)
                   ─► ScoreShard (actor pool: packed, length-sorted forwards or gradients)
                   ─► estimate_shard (CPU: estimators, atomic shard write) ─► driver: manifest
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from raypipe import __version__
from raypipe.attribution.config import AttributeConfig
from raypipe.busy_time import ModelStageTimes, StageTime
from raypipe.config import ConfigError, model_stamp
from raypipe.corpus import open_corpus
from raypipe.extraction.plan import resolve_max_length
from raypipe.runtime import (cpu_task_concurrency, fault_hook_args, init_ray,
                             plan_while_ray_starts, progress_bar, quiet_ray_data)
from raypipe.store import ATTRIBUTION_FORMAT, ShardRecord, StoreWriter

log = logging.getLogger("raypipe.attribute")


@dataclass
class AttributeResult(ModelStageTimes):
    store: str
    documents: int = 0
    rows: int = 0
    forward_rows: int = 0  # sequences the model scored
    resumed_forward_rows: int = 0  # of those, in shards an earlier run wrote
    mask_rows: int = 0     # sequences the methods asked for (original included), before dedup
    truncated: int = 0
    skipped_empty: int = 0
    skipped_continuations: int = 0  # generation: documents without a usable continuation
    unreadable: int = 0  # corpus rows that could not be read (bad JSON, a non-text cell, ...)
    problems: list = field(default_factory=list)  # (position, message), the first 100
    decode_fallbacks: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    wall_seconds: float = 0.0
    kind: str = ""
    counters: dict = field(default_factory=dict)
    stage: StageTime = field(default_factory=StageTime, repr=False)  # the shards' busy intervals

    @property
    def run_forward_rows(self) -> int:
        """Sequences this run scored (a resumed job's old shards excluded)."""
        return self.forward_rows - self.resumed_forward_rows

    def add(self, stats: dict, *, resumed: bool = False) -> None:
        """Count a shard's stats; ``resumed``: an earlier run wrote it, so it adds to the
        totals but not to this run's model-stage time or rate."""
        if resumed:
            self.resumed_forward_rows += int(stats.get("forward_rows", 0))
        self.documents += int(stats.get("docs", 0))
        self.rows += int(stats.get("rows", 0))
        self.forward_rows += int(stats.get("forward_rows", 0))
        self.mask_rows += int(stats.get("mask_rows", 0))
        self.truncated += int(stats.get("truncated", 0))
        self.skipped_empty += int(stats.get("skipped_empty", 0))
        self.skipped_continuations += int(stats.get("skipped_continuations", 0))
        self.decode_fallbacks += int(stats.get("decode_fallbacks", 0))
        self.unreadable += int(stats.get("unreadable", 0))
        self.problems.extend(stats.get("problems", [])[: max(0, 100 - len(self.problems))])
        if not resumed:
            self.stage.add(stats.get("model_seconds", 0.0), stats.get("busy_until"))

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "stage"}
        d["model_seconds"] = self.model_seconds
        d["actor_seconds"] = self.actor_seconds
        d["forward_rows_per_second"] = round(self.run_forward_rows / self.model_seconds, 1) \
            if self.model_seconds else 0.0
        return d


def attribute(config: AttributeConfig) -> AttributeResult:
    """Run (or resume) an attribution job over a corpus."""
    t0 = time.perf_counter()
    corpus = open_corpus(config.corpus, text_column=config.text_column, id_column=config.id_column,
                         split=config.corpus_split)
    targets = None
    if config.target_column:
        targets = open_corpus(config.corpus, text_column=config.target_column,
                              split=config.corpus_split, token_ids=True,
                              text_flag="--target-column")
    n_docs = len(corpus) if config.max_docs is None else min(len(corpus), config.max_docs)

    def plan() -> tuple[str, int, dict, dict, str | int, int]:
        from raypipe.attribution.forward_stage import task_kind
        from raypipe.attribution.perturb import resolve_baseline
        from raypipe.attribution.perturb_stage import effective_baseline
        from raypipe.batching.backend import backend_spec
        from raypipe.models.meta_model import load_meta_model

        meta, tokenizer = load_meta_model(config.model, auto_class=config.auto_class,
                                          trust_remote_code=config.trust_remote_code)
        kind = task_kind(config.task, meta)
        if config.target_column and kind != "generation":
            raise ConfigError("--target-column names a continuation to explain: it needs a causal "
                              f"LM (generation), but {type(meta).__name__} is a classifier")
        max_length = resolve_max_length(config.max_length, meta, tokenizer)
        id2label = {str(k): v for k, v in (getattr(meta.config, "id2label", None) or {}).items()}
        baseline = effective_baseline(config.baseline, tokenizer)
        try:  # here, with the real tokenizer, rather than in every CPU task or actor later
            token_id = resolve_baseline(baseline, tokenizer)
        except ValueError as error:
            raise ConfigError(f"--baseline {config.baseline}: {error}") from None
        vocab = meta.get_input_embeddings().num_embeddings
        if token_id is not None and token_id >= vocab:
            raise ConfigError(f"--baseline {config.baseline}: token id {token_id} is outside the "
                              f"model's vocabulary [0, {vocab}); give an id below {vocab}, or "
                              "mask, pad, unk or remove")
        _check_class_targets(config, kind, meta)
        return kind, max_length, id2label, backend_spec(tokenizer), baseline, vocab

    # Ray starts while the model is checked on the meta device (both take seconds).
    kind, max_length, id2label, tokenizer_spec, baseline, vocab = plan_while_ray_starts(
        plan, config.address, config.actors, config.num_cpus)
    fingerprint = corpus.describe()
    header = {"raypipe_version": __version__, "model": config.model,
              "model_files": model_stamp(config.model), "task": kind,
              "method": config.method, "granularity": config.granularity, "mode": config.mode,
              "n_samples": config.n_samples, "seed": config.seed, "baseline": config.baseline,
              "max_length": max_length, "documents": n_docs, "corpus": fingerprint,
              "id2label": id2label, "config": config.to_dict()}
    writer = StoreWriter(config.out, header, config.config_hash(fingerprint), format=ATTRIBUTION_FORMAT,
                         legacy_hash=config.config_hash(fingerprint, model_files=False))
    result = AttributeResult(store=config.out, kind=kind)
    step = config.docs_per_shard
    pending = []
    for shard_id, start in enumerate(range(0, n_docs, step)):
        if writer.is_complete(shard_id):
            result.shards_skipped += 1
            result.add(writer.completed[shard_id].stats, resumed=True)
        else:
            pending.append({"shard_id": shard_id, "doc_start": start, "doc_end": min(start + step, n_docs)})
    if pending:
        parameters = json.dumps(config.parameters(max_length=max_length, baseline=baseline),
                                sort_keys=True)
        _run(config, corpus, targets, max_length, id2label, tokenizer_spec, writer, pending, result,
             parameters, vocab)
    result.wall_seconds = time.perf_counter() - t0
    writer.finalize(result.as_dict())
    return result


def _check_class_targets(config: AttributeConfig, kind: str, meta) -> None:
    """Class indices beyond the classifier's labels fail before anything runs (in an actor they
    would fail after Ray started, leaving a store that blocks the corrected re-run)."""
    if kind == "generation" or config.targets is None:
        return
    n_labels = int(getattr(meta.config, "num_labels", 0) or 0)
    bad = [t for t in config.targets if t >= n_labels]
    if n_labels and bad:
        names = getattr(meta.config, "id2label", None) or {}
        labels = ", ".join(f"{i} ({names.get(i, names.get(str(i), i))})" for i in range(n_labels))
        raise ConfigError(f"--target {config.target}: class {bad[0]} is out of range; "
                          f"{type(meta).__name__} has {n_labels} labels: {labels}")


def _run(config, corpus, targets, max_length, id2label, tokenizer_spec, writer, pending,
         result, parameters: str, vocab: int) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    # The stages import torch: here, not at module level, so that the driver's Ray starts
    # while the plan thread imports it (see raypipe.granularity).
    from raypipe.attribution.estimate_stage import estimate_shard
    from raypipe.attribution.forward_stage import ScoreShard
    from raypipe.attribution.perturb_stage import prepare_shard

    init_ray(config.address, config.actors, config.num_cpus)
    quiet_ray_data(log)
    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    cpu_tasks = cpu_task_concurrency(config.actors, config.num_cpus)
    ds = ds.map_batches(prepare_shard, batch_size=1, num_cpus=0.5, concurrency=cpu_tasks,
                        fn_kwargs=dict(
        corpus=corpus, targets=targets, tokenizer=tokenizer_spec, max_length=max_length,
        granularity=config.granularity, method=config.method, n_samples=config.n_samples,
        seed=config.seed, baseline=config.baseline, gradient=config.is_gradient,
        vocab_size=vocab))
    ds = ds.map_batches(ScoreShard, batch_size=1, compute=ActorPoolStrategy(size=config.actors),
                        num_cpus=config.num_cpus, num_gpus=config.num_gpus or None,
                        fn_constructor_kwargs={"config": config.to_dict() | {"corpus": "-"}},
                        **fault_hook_args())
    ds = ds.map_batches(estimate_shard, batch_size=1, num_cpus=0.5, concurrency=cpu_tasks,
                        fn_kwargs=dict(
        store_root=config.out, method=config.method, id2label=id2label,
        parameters=parameters))
    total = sum(p["doc_end"] - p["doc_start"] for p in pending)
    with progress_bar(config.progress, total, f"attribute[{config.method}]") as bar:
        for row in ds.iter_rows():
            record = ShardRecord(**json.loads(row["record"]))
            writer.record(record)
            result.shards_written += 1
            result.add(record.stats)
            bar.update(record.doc_end - record.doc_start)
