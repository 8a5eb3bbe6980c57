"""The model-side math of extraction, shared by the Ray actors and the in-memory API.

``document_activations`` runs sorted token-budget micro-batches and gives each document its
tokens' activations back; ``unit_rows`` reduces them to one row per unit. Neither knows about Ray.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from raypipe.batching import TokenizedDoc, pad_batch, plan_micro_batches
from raypipe.batching.token_budget import unpad
from raypipe.granularity import Aggregation, aggregate, concatenate_units

UNIT_COLUMNS = ("doc_id", "unit", "text", "char_start", "char_end")


def pad_token_id(tokenizer) -> int:
    """The pad id, else EOS (GPT-2 has no pad token); pads are masked out, so any id is exact."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def document_activations(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                         padding_side: str = "right") -> list[dict[str, torch.Tensor]]:
    """Per document, ``{split: (t, d)}`` float32 on CPU over all its windows' tokens, in order."""
    seqs = [(d, w) for d, doc in enumerate(docs) for w in range(len(doc.windows))]
    lengths = [len(docs[d].windows[w]) for d, w in seqs]
    pieces: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    pad_id = pad_token_id(model.tokenizer)
    for batch in plan_micro_batches(lengths, batch_tokens):
        ids, mask = pad_batch([docs[seqs[i][0]].windows[seqs[i][1]] for i in batch], pad_id,
                              padding_side)
        out = model.forward_activations(ids.to(model.input_device), mask.to(model.input_device))
        out = {p: t.to("cpu", torch.float32) for p, t in out.items()}
        longest = ids.shape[1]
        for row, i in enumerate(batch):
            pieces[seqs[i]] = {p: unpad(t[row], lengths[i], longest, padding_side)
                               for p, t in out.items()}
    result = []
    for d, doc in enumerate(docs):
        windows = [pieces[(d, w)] for w in range(len(doc.windows))]
        result.append({p: torch.cat([w[p] for w in windows]) for p in model.split_points})
    return result


def unit_rows(docs: Sequence[TokenizedDoc], per_doc: Sequence[dict[str, torch.Tensor]],
              aggregation: Aggregation | str, hidden_sizes: dict[str, int]
              ) -> tuple[dict[str, list], dict[str, torch.Tensor]]:
    """One row per unit: the unit columns and ``{split: (rows, d)}`` activations.

    All documents are reduced in one ``aggregate`` call (their tokens concatenated, unit members
    offset accordingly): a few kernels per shard instead of per document, which matters on
    small CPUs where each tiny kernel pays thread start-up.
    """
    aggregation = Aggregation.parse(aggregation)
    columns: dict[str, list] = {k: [] for k in UNIT_COLUMNS}
    offsets, offset = [], 0
    for doc, doc_acts in zip(docs, per_doc):
        n_units = len(doc.units)
        columns["doc_id"].extend([doc.doc_id] * n_units)
        columns["unit"].extend(range(n_units))
        offsets.append(offset)
        offset += len(next(iter(doc_acts.values()))) if doc_acts else 0
    units = concatenate_units([doc.units for doc in docs], offsets)
    columns["text"] = units.text
    columns["char_start"] = units.char_start.tolist()
    columns["char_end"] = units.char_end.tolist()
    if not len(units):
        return columns, {p: torch.empty(0, d) for p, d in hidden_sizes.items()}
    acts = {p: aggregate(torch.cat([d[p] for d in per_doc]), units, aggregation) for p in hidden_sizes}
    return columns, acts
