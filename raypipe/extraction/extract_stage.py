"""Stage 2 (model actors): forward one tokenized shard, reduce to units, write the shard.

Each actor holds one SplitModel (sharded over the actor's GPUs by accelerate when it owns
several), or on a CPU one per forward lane, all over the same weights (TorchLanes: each lane
forwards its share of a shard's documents, balanced by tokens, on its own thread). The shard is written by the actor itself, atomically and under a name derived from the
shard id, so a retried shard after an actor crash overwrites rather than duplicates; the driver
lists it in the manifest only when the returned record arrives.

An actor takes two shards at a time (``CALLS_PER_ACTOR``): every torch op (model load,
forwards, unit reduction, store-dtype conversion) runs on the dedicated lane threads, a shard's
Parquet write + checksum (single-threaded; idle device time on a GPU) overlaps the next
shard's forward, and the next shard is already in the actor when a forward ends, so Ray Data's
dispatch (0.05-0.2 s a shard on 2 cores) leaves no gap. Measured on all of rt-polarity at split
1 (MiniLM, 2 cores, 3 alternating rounds): the shard phase went from 30.4 to 28.1 s (median).

The driver imports this module only to hand the class to Ray Data, so torch and the forward
code are imported where the actor uses them, not at module level: a driver whose plan came
from the plan cache (see plan_cache) then starts the pipeline without importing torch at all.
"""
from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from raypipe.batching.packed_docs import unpack_documents
from raypipe.busy_time import BusyClock
from raypipe.config import ExtractConfig
from raypipe.frozen_heap import loading_frozen_heap
from raypipe.granularity import Aggregation
from raypipe.runtime import actor_lanes, actor_torch_threads, maybe_die
from raypipe.store import build_shard_table, write_shard
from raypipe.torch_thread import TorchLanes, TorchThread

if TYPE_CHECKING:
    import torch

CALLS_PER_ACTOR = 2  # shards in progress per actor: one on the torch lanes, one writing


class ExtractShard:
    """Callable class for ``map_batches``: ``{shard_id, payload}`` → ``{record}`` (JSON)."""

    def __init__(self, config: dict, store_root: str) -> None:
        import transformers

        transformers.logging.disable_progress_bar()  # one bar per actor garbles the driver's bar

        self.config = ExtractConfig(**config)
        self.store_root = store_root
        # model load and probe, forwards, unit reduction and the store-dtype conversion all run
        # on the lanes, this thread first (see raypipe.torch_thread); Ray's call threads write
        # and checksum
        self._torch = TorchThread()
        with loading_frozen_heap():  # imports and load: ~1 s less (see raypipe.frozen_heap)
            self._torch.run(self._load)
        self._lanes = TorchLanes(self._torch, len(self.models), self._threads_per_lane)
        self._busy = BusyClock()

    def _load(self) -> None:
        """On the torch thread: thread count, SplitModel, aggregation and token budget."""
        import torch

        from raypipe.batching import resolve_batch_tokens
        from raypipe.models import SplitModel
        from raypipe.models.loading import actor_device_map

        threads = actor_torch_threads(self.config.torch_threads, self.config.num_cpus,
                                      self.config.actors)
        device_map = actor_device_map(self.config.num_gpus, self.config.device_map)
        lanes, self._threads_per_lane = actor_lanes(self.config.cpu_replicas, threads,
                                                    on_gpu=device_map != "cpu")
        torch.set_num_threads(self._threads_per_lane)
        # one SplitModel per forward lane, all over the same weights (see TorchLanes)
        self.models = SplitModel.replicas(self.config.model, lanes, self.config.split_points,
                                          auto_class=self.config.auto_class, dtype=self.config.dtype,
                                          device_map=device_map,
                                          trust_remote_code=self.config.trust_remote_code,
                                          output_index=self.config.output_index)
        self.model = self.models[0]
        if len(self.models) < lanes:  # a model sharded by a device map: one lane, every thread
            self._threads_per_lane = threads
        self.aggregation = Aggregation.parse(self.config.aggregation)
        self.batch_tokens = resolve_batch_tokens(self.config.batch_tokens, self.model.input_device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self.process(pickle.loads(p)) for p in batch["payload"]]
        return {"record": np.asarray(records, dtype=object)}

    def process(self, shard: dict) -> str:
        maybe_die(shard["shard_id"])
        self._busy.enter()
        try:
            record = self._process(shard)
        finally:
            busy, until = self._busy.leave()
        # "seconds": this actor's busy time since its previous shard finished, ending at
        # "busy_until" (see raypipe.busy_time): the driver sums and unions them
        record.stats["seconds"] = busy
        record.stats["busy_until"] = until
        return json.dumps(asdict(record))

    def _lane_work(self, lane: int, docs: list, out: tuple) -> float:
        """On lane ``lane``: its share of a shard's documents forwarded and their unit rows
        written into the shard's rows (``out``); returns its forward seconds."""
        from raypipe.extraction.forward import write_unit_rows

        return write_unit_rows(self.models[lane], docs, out, batch_tokens=self.batch_tokens,
                               aggregation=self.aggregation, padding_side=self.config.padding_side)

    def _table(self, docs: list, acts: dict[str, torch.Tensor]):
        """On lane 0: the shard's table from its rows (in document order)."""
        from raypipe.extraction.forward import UNIT_COLUMNS, unit_columns

        columns = unit_columns(docs)
        return build_shard_table(*(columns[k] for k in UNIT_COLUMNS), acts, self.config.store_dtype)

    def _shard_table(self, docs: list):
        """The shard's table and its forward seconds (not counting the wait for the other
        shard's turn): each lane forwards a share of the documents balanced by tokens and
        writes their rows in place (the slowest lane's forward seconds count); one lane (a GPU,
        a sharded model) forwards them all."""
        from raypipe.batching.token_budget import balanced_groups
        from raypipe.extraction.forward import empty_unit_rows

        groups = balanced_groups([sum(len(w) for w in doc.windows) for doc in docs], len(self._lanes))
        acts, first = empty_unit_rows(docs, self.model.hidden_sizes)
        seconds = self._lanes.map(self._lane_work, [([docs[i] for i in g], (acts, first[g]))
                                                    for g in groups])
        table = self._lanes.run(0, self._table, docs, acts)
        return table, max(seconds, default=0.0)

    def _process(self, shard: dict):
        t0 = time.perf_counter()
        table, t_forward = self._shard_table(unpack_documents(shard["docs"]))
        stats = dict(shard["stats"], units=table.num_rows, forward_seconds=t_forward,
                     hidden_sizes=self.model.hidden_sizes,
                     shard_seconds=time.perf_counter() - t0, problems=shard["problems"])
        return write_shard(self.store_root, shard["shard_id"], table, doc_start=shard["doc_start"],
                           doc_end=shard["doc_end"], stats=stats)
