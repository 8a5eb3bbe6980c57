"""Stage 1 (CPU tasks): read one shard's documents and tokenize them.

The output row carries the shard as one pickled payload: the model stage needs whole shards,
because a shard is the unit that is written, committed and resumed. Its documents travel as
columns (``raypipe.batching.packed_docs``), which the model actor unpickles with far less
Python work than the documents themselves.

The tasks tokenize with the Rust tokenizer alone (``BackendTokenizer``, shipped by the driver
as JSON): a worker that imported transformers' tokenizer would also import torch, ~2 s of CPU
taken from the model actor while it starts. Nothing here imports torch (tested).
"""
from __future__ import annotations

import pickle

import numpy as np

from raypipe.batching import tokenize_documents
from raypipe.batching.backend import BackendTokenizer
from raypipe.batching.packed_docs import pack_documents
from raypipe.corpus import CorpusSource
from raypipe.granularity import Granularity


def tokenize_shard(batch: dict[str, np.ndarray], *, corpus: CorpusSource, tokenizer: dict,
                   max_length: int, overflow: str, granularity: str) -> dict[str, np.ndarray]:
    """``{shard_id, doc_start, doc_end}`` rows → ``{shard_id, payload}`` rows; ``tokenizer`` is
    ``backend_spec(hf_tokenizer)``."""
    tokenizer = BackendTokenizer.from_spec(tokenizer)
    gran = Granularity.parse(granularity)
    payloads = []
    for shard_id, start, stop in zip(batch["shard_id"], batch["doc_start"], batch["doc_end"]):
        read = corpus.read_range(int(start), int(stop))
        docs, stats = tokenize_documents(read.documents, tokenizer, max_length=max_length,
                                         overflow=overflow, granularity=gran)
        counters = stats.as_dict()
        counters["decode_fallbacks"] = read.decode_fallbacks
        counters["unreadable"] = len(read.problems)
        payloads.append(pickle.dumps({
            "shard_id": int(shard_id), "doc_start": int(start), "doc_end": int(stop),
            "docs": pack_documents(docs), "stats": counters, "problems": read.problems[:100],
        }, protocol=pickle.HIGHEST_PROTOCOL))
    return {"shard_id": np.asarray(batch["shard_id"]), "payload": np.asarray(payloads, dtype=object)}
