"""The extraction driver: plan → Ray Data pipeline → manifest, resumable at shard granularity.

Data flow (one Ray Data dataset, streamed with backpressure, so memory stays flat):

    pending shard ids ──► tokenize_shard (CPU tasks) ──► ExtractShard (actor pool) ──► records
                                                           │ writes shards/shard-N.parquet
    driver: each record returned is added to manifest.json (atomic rewrite)

A shard is listed in the manifest only after its file was committed, so a job killed at any
point resumes by re-running the same command: listed shards are skipped, the rest are redone
under the same names (never duplicated).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from raypipe import __version__
from raypipe.busy_time import ModelStageTimes, StageTime
from raypipe.config import ExtractConfig
from raypipe.extraction.plan import ExtractPlan, plan_extraction
from raypipe.runtime import (cpu_task_concurrency, fault_hook_args, init_ray,
                             plan_while_ray_starts, progress_bar, quiet_ray_data)
from raypipe.store import ShardRecord, StoreWriter

log = logging.getLogger("raypipe.extract")

@dataclass
class ExtractResult(ModelStageTimes):
    """What a finished (or resumed) job did; also stored as the manifest's ``summary``."""

    store: str
    documents: int = 0
    units: int = 0
    tokens: int = 0
    truncated: int = 0
    windowed: int = 0
    skipped_empty: int = 0
    no_units: int = 0  # documents whose tokens are all special (zero-width or control characters)
    resumed_tokens: int = 0  # tokens of shards an earlier run wrote (in the totals, not the rates)
    decode_fallbacks: int = 0
    unreadable: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    wall_seconds: float = 0.0
    plan_cached: bool = False  # the model facts came from the plan cache (see plan_cache)
    problems: list = field(default_factory=list)
    stage: StageTime = field(default_factory=StageTime, repr=False)  # the shards' busy intervals

    @property
    def tokens_per_second(self) -> float:
        """This run's tokens over this run's wall time (a resumed job's old shards excluded)."""
        run_tokens = self.tokens - self.resumed_tokens
        return run_tokens / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def model_tokens_per_second(self) -> float:
        """Steady state: this run's tokens over the model stage's wall time, the time during
        which at least one actor was busy with a shard (forward, reduce, write; overlapping
        shards and actors working side by side counted once)."""
        run_tokens = self.tokens - self.resumed_tokens
        return run_tokens / self.model_seconds if self.model_seconds else 0.0

    def add(self, stats: dict, *, resumed: bool = False) -> None:
        """Count a shard's stats; ``resumed``: an earlier run wrote it, so it adds to the
        totals but not to this run's time or rates."""
        for key in ("truncated", "windowed", "skipped_empty", "no_units", "decode_fallbacks",
                    "unreadable", "tokens"):
            setattr(self, key, getattr(self, key) + int(stats.get(key, 0)))
        self.documents += int(stats.get("docs", 0))
        self.units += int(stats.get("units", 0))
        if resumed:
            self.resumed_tokens += int(stats.get("tokens", 0))
            return
        self.stage.add(stats.get("seconds", 0.0), stats.get("busy_until"))
        self.problems.extend(stats.get("problems", [])[: max(0, 100 - len(self.problems))])

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "stage"}
        d["model_seconds"] = self.model_seconds
        d["actor_seconds"] = self.actor_seconds
        d["tokens_per_second"] = round(self.tokens_per_second, 1)
        d["model_tokens_per_second"] = round(self.model_tokens_per_second, 1)
        return d


def extract_activations(config: ExtractConfig) -> ExtractResult:
    """Run (or resume) an extraction job and return its summary."""
    t0 = time.perf_counter()
    # Ray starts while the plan is made; a store that turns out complete costs a Ray start.
    plan = plan_while_ray_starts(lambda: _plan_and_import_stages(config), config.address,
                                 config.actors, config.num_cpus)
    fingerprint = plan.corpus.describe()
    resolved = {"split_points": plan.split_points, "docs_per_shard": plan.docs_per_shard,
                "model_files": plan.model_files}  # the plan read the model's files once
    writer = StoreWriter(config.out, _manifest_header(config, plan, fingerprint),
                         config.config_hash(fingerprint, resolved),
                         legacy_hash=config.config_hash(fingerprint, resolved, model_files=False))
    result = ExtractResult(store=config.out, plan_cached=plan.facts_cached)
    pending = []
    for shard_id, start, stop in plan.shards:
        if writer.is_complete(shard_id):
            result.shards_skipped += 1
            result.add(writer.completed[shard_id].stats, resumed=True)
        else:
            pending.append({"shard_id": shard_id, "doc_start": start, "doc_end": stop})
    if result.shards_skipped:
        log.info("resuming %s: %d shards already complete, %d to go", config.out,
                 result.shards_skipped, len(pending))
    if pending:
        _run_pending(config, plan, writer, pending, result)
    if config.id_column:
        _report_duplicate_ids(config, writer, result)
    result.wall_seconds = time.perf_counter() - t0
    writer.finalize(result.as_dict())
    return result


def _plan_and_import_stages(config: ExtractConfig) -> ExtractPlan:
    """The plan, then the pipeline's imports (Ray Data and the stage modules: ~0.7 s on 2
    cores, none of them torch), both in the thread that runs while Ray starts: Ray's start is
    mostly waiting for its processes, so with a cached plan the pipeline starts as soon as Ray
    is up."""
    plan = plan_extraction(config)
    import ray.data  # noqa: F401

    from raypipe.extraction import extract_stage, tokenize_stage  # noqa: F401
    return plan


def _run_pending(config: ExtractConfig, plan: ExtractPlan, writer: StoreWriter, pending: list[dict],
                 result: ExtractResult) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    # imported by the plan thread while Ray started (see _plan_and_import_stages)
    from raypipe.extraction.extract_stage import CALLS_PER_ACTOR, ExtractShard
    from raypipe.extraction.tokenize_stage import tokenize_shard

    init_ray(config.address, config.actors, config.num_cpus)
    quiet_ray_data(log)
    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    ds = ds.map_batches(tokenize_shard, batch_size=1, num_cpus=0.5,
                        concurrency=cpu_task_concurrency(config.actors, config.num_cpus),
                        fn_kwargs=dict(
        corpus=plan.corpus, tokenizer=plan.tokenizer_spec, max_length=plan.max_length,
        overflow=config.overflow, granularity=config.granularity))
    actor_args = fault_hook_args()
    ds = ds.map_batches(ExtractShard, batch_size=1, compute=ActorPoolStrategy(
                            size=config.actors, max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
                            enable_true_multi_threading=True),
                        num_cpus=config.num_cpus, num_gpus=config.num_gpus or None, **actor_args,
                        fn_constructor_kwargs={"config": config.to_dict() | {"corpus": "-"},
                                               "store_root": config.out})
    total_docs = sum(p["doc_end"] - p["doc_start"] for p in pending)
    with progress_bar(config.progress, total_docs, "extract") as bar:
        start = time.perf_counter()
        tokens = 0
        for row in ds.iter_rows():
            record = ShardRecord(**json.loads(row["record"]))
            if "hidden_sizes" not in writer.manifest:
                writer.update_header(hidden_sizes=record.stats.get("hidden_sizes", {}))
            writer.record(record)
            result.shards_written += 1
            result.add(record.stats)
            tokens += int(record.stats.get("tokens", 0))
            bar.update(record.doc_end - record.doc_start)
            bar.set_postfix(tokens_per_s=f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f}")


def _report_duplicate_ids(config: ExtractConfig, writer: StoreWriter, result: ExtractResult) -> None:
    """Ids of an id column are meant to name one document each; repeats are kept (each
    document's rows stay together) but reported, with a few of them."""
    from raypipe.store import ActivationStore

    n, examples = ActivationStore(config.out).duplicate_doc_ids()
    if n:
        message = (f"--id-column {config.id_column!r}: {n} ids name more than one document "
                   f"(e.g. {', '.join(map(repr, examples[:5]))}); their rows are kept, each "
                   "document's together, in corpus order")
        log.warning(message)
        result.problems.append((None, message))


def _manifest_header(config: ExtractConfig, plan: ExtractPlan, fingerprint: dict) -> dict:
    return {
        "raypipe_version": __version__,
        "model": config.model,
        "model_files": plan.model_files,  # also in the config hash (see model_stamp)
        "model_type": plan.model_type,
        "tokenizer": plan.tokenizer_name,
        "split_points": plan.split_points,
        "granularity": config.granularity,
        "aggregation": config.aggregation,
        "dtype": config.dtype,
        "store_dtype": config.store_dtype,
        "max_length": plan.max_length,
        "overflow": config.overflow,
        "documents": plan.n_docs,
        "docs_per_shard": plan.docs_per_shard,
        "corpus": fingerprint,
        "config": config.to_dict(),
    }
