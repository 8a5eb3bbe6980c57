"""The in-process API: activations of a few texts as tensors, no Ray, no store.

For notebooks and tests; the same tokenization, batching and unit code as the distributed job,
so a result here equals the rows a job writes for the same texts.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import torch

from raypipe.batching import resolve_batch_tokens, tokenize_documents
from raypipe.corpus import Document
from raypipe.extraction.forward import (UNIT_COLUMNS, document_activations, pad_token_id,
                                        unit_activations)
from raypipe.extraction.plan import resolve_max_length
from raypipe.granularity import Granularity


@dataclass
class UnitActivations:
    """One row per unit, in (doc_id, unit) order, as an ActivationStore would hold them."""

    units: pa.Table                      # doc_id, unit, text, char_start, char_end
    activations: dict[str, torch.Tensor]  # split path -> (rows, d) float32
    truncated: int = 0                    # texts cut at max_length (overflow="truncate")


@dataclass
class PaddedActivations:
    """Granularity ``all``: every position of a right-padded batch."""

    activations: dict[str, torch.Tensor]  # split path -> (n, l, d) float32, zeros at padding
    input_ids: torch.Tensor                # (n, l)
    attention_mask: torch.Tensor           # (n, l), 0 at padding (and for empty texts)
    truncated: int = 0                     # texts cut at max_length


def get_activations(model, texts: Sequence[str], *, granularity: str = "token",
                    aggregation: str = "mean", max_length: int | None = None,
                    overflow: str = "truncate", batch_tokens: int | None = None
                    ) -> UnitActivations | PaddedActivations:
    """Activations of ``texts`` at ``model``'s split points (``model`` is a SplitModel)."""
    gran = Granularity.parse(granularity)
    max_length = resolve_max_length(max_length, model.hf_model, model.tokenizer)
    documents = [Document(doc_id=i, text=t, position=i) for i, t in enumerate(texts)]
    unit_kind = Granularity.ALL_TOKENS if gran is Granularity.ALL else gran
    if gran is Granularity.ALL and overflow != "truncate":
        raise ValueError("granularity 'all' gives one padded row per text: use overflow='truncate'")
    docs, stats = tokenize_documents(documents, model.tokenizer, max_length=max_length,
                                     overflow=overflow, granularity=unit_kind)
    if stats.truncated:  # counted on the result too; never silent (as the job's summary)
        warnings.warn(f"{stats.truncated} of {len(texts)} texts were longer than max_length="
                      f"{max_length} tokens and were truncated; pass overflow='window' to keep "
                      "every token (not with granularity 'all'), or a larger max_length",
                      stacklevel=2)
    budget = resolve_batch_tokens(batch_tokens, model.input_device)
    if gran is Granularity.ALL:
        out = _padded(model, texts, docs, document_activations(model, docs, batch_tokens=budget))
    else:
        columns, acts, _ = unit_activations(model, docs, batch_tokens=budget,
                                            aggregation=aggregation)
        out = UnitActivations(pa.table({k: columns[k] for k in UNIT_COLUMNS}), acts)
    out.truncated = stats.truncated
    return out


def _padded(model, texts, docs, per_doc) -> PaddedActivations:
    longest = max((d.n_tokens for d in docs), default=0)
    n = len(texts)
    ids = torch.full((n, longest), pad_token_id(model.tokenizer), dtype=torch.long)
    mask = torch.zeros((n, longest), dtype=torch.long)
    acts = {p: torch.zeros(n, longest, d) for p, d in model.hidden_sizes.items()}
    for doc, doc_acts in zip(docs, per_doc):
        t = doc.n_tokens
        ids[doc.position, :t] = torch.as_tensor(doc.windows[0])
        mask[doc.position, :t] = 1
        for p, a in doc_acts.items():
            acts[p][doc.position, :t] = a
    return PaddedActivations(acts, ids, mask)

