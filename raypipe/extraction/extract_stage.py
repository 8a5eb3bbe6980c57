"""Stage 2 (model actors): forward one tokenized shard, reduce to units, write the shard.

Each actor holds one SplitModel (sharded over the actor's GPUs by accelerate when it owns
several). The shard is written by the actor itself, atomically and under a name derived from the
shard id, so a retried shard after an actor crash overwrites rather than duplicates; the driver
lists it in the manifest only when the returned record arrives.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import asdict

import numpy as np
import torch

from raypipe.batching import resolve_batch_tokens
from raypipe.config import ExtractConfig
from raypipe.extraction.forward import UNIT_COLUMNS, document_activations, unit_rows
from raypipe.granularity import Aggregation
from raypipe.runtime import maybe_die
from raypipe.store import build_shard_table, write_shard



class ExtractShard:
    """Callable class for ``map_batches``: ``{shard_id, payload}`` → ``{record}`` (JSON)."""

    def __init__(self, config: dict, store_root: str) -> None:
        import transformers

        from raypipe.models import SplitModel

        transformers.logging.disable_progress_bar()  # one bar per actor garbles the driver's bar

        self.config = ExtractConfig(**config)
        self.store_root = store_root
        threads = self.config.torch_threads or max(1, (os.cpu_count() or 1) // self.config.actors)
        torch.set_num_threads(threads)
        device_map = self.config.device_map
        if device_map is None and self.config.num_gpus and torch.cuda.is_available():
            device_map = "auto" if self.config.num_gpus > 1 else "cuda"
        self.model = SplitModel(self.config.model, self.config.split_points,
                                auto_class=self.config.auto_class, dtype=self.config.dtype,
                                device_map=device_map, trust_remote_code=self.config.trust_remote_code,
                                output_index=self.config.output_index)
        self.aggregation = Aggregation.parse(self.config.aggregation)
        self.batch_tokens = resolve_batch_tokens(self.config.batch_tokens, self.model.input_device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self.process(pickle.loads(p)) for p in batch["payload"]]
        return {"record": np.asarray(records, dtype=object)}

    def process(self, shard: dict) -> str:
        maybe_die(shard["shard_id"])
        t0 = time.perf_counter()
        docs = shard["docs"]
        per_doc = document_activations(self.model, docs, batch_tokens=self.batch_tokens,
                                       padding_side=self.config.padding_side)
        t_forward = time.perf_counter() - t0
        columns, acts = unit_rows(docs, per_doc, self.aggregation, self.model.hidden_sizes)
        table = build_shard_table(*(columns[k] for k in UNIT_COLUMNS), acts, self.config.store_dtype)
        stats = dict(shard["stats"], units=table.num_rows, forward_seconds=t_forward,
                     hidden_sizes=self.model.hidden_sizes,
                     seconds=time.perf_counter() - t0, problems=shard["problems"])
        record = write_shard(self.store_root, shard["shard_id"], table, doc_start=shard["doc_start"],
                             doc_end=shard["doc_end"], stats=stats)
        return json.dumps(asdict(record))
