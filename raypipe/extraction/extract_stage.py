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

from raypipe.batching import pad_batch, plan_micro_batches
from raypipe.batching.token_budget import unpad
from raypipe.config import ExtractConfig
from raypipe.granularity import Aggregation, aggregate
from raypipe.store import build_shard_table, write_shard

FAULT_ENV = "RAYPIPE_FAULT_KILL_ONCE"  # "MARKER_PATH:SHARD_ID": test hook, kills the actor once


class ExtractShard:
    """Callable class for ``map_batches``: ``{shard_id, payload}`` → ``{record}`` (JSON)."""

    def __init__(self, config: dict, store_root: str) -> None:
        from raypipe.models import SplitModel

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
        self.pad_id = _pad_id(self.model.tokenizer)
        self.aggregation = Aggregation.parse(self.config.aggregation)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self.process(pickle.loads(p)) for p in batch["payload"]]
        return {"record": np.asarray(records, dtype=object)}

    def process(self, shard: dict) -> str:
        _maybe_die(shard["shard_id"])
        t0 = time.perf_counter()
        docs = shard["docs"]
        per_doc = self.activations(docs)
        t_forward = time.perf_counter() - t0
        columns: dict[str, list] = {k: [] for k in ("doc_id", "unit", "text", "char_start", "char_end")}
        acts: dict[str, list[torch.Tensor]] = {p: [] for p in self.model.split_points}
        for doc, doc_acts in zip(docs, per_doc):
            n_units = len(doc.units)
            columns["doc_id"].extend([doc.doc_id] * n_units)
            columns["unit"].extend(range(n_units))
            columns["text"].extend(doc.units.text)
            columns["char_start"].extend(doc.units.char_start.tolist())
            columns["char_end"].extend(doc.units.char_end.tolist())
            for path, tokens in doc_acts.items():
                acts[path].append(aggregate(tokens, doc.units, self.aggregation))
        stacked = {p: (torch.cat(v) if v else torch.empty(0, self.model.hidden_sizes[p]))
                   for p, v in acts.items()}
        table = build_shard_table(columns["doc_id"], columns["unit"], columns["text"],
                                  columns["char_start"], columns["char_end"], stacked,
                                  self.config.store_dtype)
        stats = dict(shard["stats"], units=table.num_rows, forward_seconds=t_forward,
                     seconds=time.perf_counter() - t0, problems=shard["problems"])
        record = write_shard(self.store_root, shard["shard_id"], table, doc_start=shard["doc_start"],
                             doc_end=shard["doc_end"], stats=stats)
        return json.dumps(asdict(record))

    def activations(self, docs: list) -> list[dict[str, torch.Tensor]]:
        """Per document, ``{split: (t, d)}`` float32 on CPU over all its windows' tokens."""
        seqs = [(d, w) for d, doc in enumerate(docs) for w in range(len(doc.windows))]
        lengths = [len(docs[d].windows[w]) for d, w in seqs]
        pieces: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        side = self.config.padding_side
        for batch in plan_micro_batches(lengths, self.config.batch_tokens):
            ids, mask = pad_batch([docs[seqs[i][0]].windows[seqs[i][1]] for i in batch],
                                  self.pad_id, side)
            out = self.model.forward_activations(ids.to(self.model.input_device),
                                                 mask.to(self.model.input_device))
            out = {p: t.to("cpu", torch.float32) for p, t in out.items()}
            longest = ids.shape[1]
            for row, i in enumerate(batch):
                pieces[seqs[i]] = {p: unpad(t[row], lengths[i], longest, side) for p, t in out.items()}
        result = []
        for d, doc in enumerate(docs):
            windows = [pieces[(d, w)] for w in range(len(doc.windows))]
            result.append({p: torch.cat([w[p] for w in windows]) for p in self.model.split_points})
        return result


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _maybe_die(shard_id: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    marker, _, target = spec.rpartition(":")
    if int(target) == int(shard_id) and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)
