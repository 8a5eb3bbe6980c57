"""The model-side math of extraction, shared by the Ray actors and the in-memory API.

``unit_activations`` runs sorted token-budget micro-batches and reduces the documents each one
finishes to one row per unit; ``document_activations`` gives each document its tokens'
activations back (the padded ``ALL`` output), ``unit_rows`` reduces them. None knows about Ray.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

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


def _finished_documents(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                        padding_side: str = "right"
                        ) -> Iterator[list[tuple[int, dict[str, torch.Tensor]]]]:
    """After each micro-batch, the documents whose last window it ran: ``[(index in docs,
    {split: (t, d)} float32 on CPU over all its windows' tokens)]``. Windows of unfinished
    documents are the only token activations kept between batches."""
    seqs = [(d, w) for d, doc in enumerate(docs) for w in range(len(doc.windows))]
    lengths = [len(docs[d].windows[w]) for d, w in seqs]
    left = [len(doc.windows) for doc in docs]
    pieces: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    pad_id = pad_token_id(model.tokenizer)
    for batch in plan_micro_batches(lengths, batch_tokens):
        ids, mask = pad_batch([docs[seqs[i][0]].windows[seqs[i][1]] for i in batch], pad_id,
                              padding_side)
        out = model.forward_activations(ids.to(model.input_device), mask.to(model.input_device))
        # copied in the model dtype, widened on the host: half the transfer of a bf16 model
        out = {p: t.to("cpu").to(torch.float32) for p, t in out.items()}
        longest = ids.shape[1]
        finished = []
        for row, i in enumerate(batch):
            pieces[seqs[i]] = {p: unpad(t[row], lengths[i], longest, padding_side)
                               for p, t in out.items()}
            d = seqs[i][0]
            left[d] -= 1
            if left[d] == 0:
                windows = [pieces.pop((d, w)) for w in range(len(docs[d].windows))]
                finished.append((d, {p: torch.cat([w[p] for w in windows]) for p in out}))
        yield finished


def document_activations(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                         padding_side: str = "right") -> list[dict[str, torch.Tensor]]:
    """Per document, ``{split: (t, d)}`` float32 on CPU over all its windows' tokens, in order.

    Holds every token of ``docs`` at once: for padded (``ALL``) outputs; `unit_activations`
    streams instead."""
    result: list[dict[str, torch.Tensor] | None] = [None] * len(docs)
    for finished in _finished_documents(model, docs, batch_tokens=batch_tokens,
                                        padding_side=padding_side):
        for d, acts in finished:
            result[d] = acts
    return result


def unit_activations(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                     aggregation: Aggregation | str, padding_side: str = "right"
                     ) -> tuple[dict[str, list], dict[str, torch.Tensor], float]:
    """`unit_rows` of the model's outputs for ``docs``, reduced while the forwards go on.

    Returns the columns, the activations ``{split: (rows, d)}`` float32 on CPU in document
    order, and the seconds spent in forwards (the reductions excluded). See `write_unit_rows`.
    """
    acts, first = empty_unit_rows(docs, model.hidden_sizes)
    seconds = write_unit_rows(model, docs, (acts, first), batch_tokens=batch_tokens,
                              aggregation=aggregation, padding_side=padding_side)
    return unit_columns(docs), acts, seconds


def empty_unit_rows(docs: Sequence[TokenizedDoc], hidden_sizes: dict[str, int]
                    ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """``({split: (rows, d)} float32 CPU tensors, not initialised; the first row of each of
    ``docs``)``: the rows `write_unit_rows` fills, in document order. Allocated by numpy, so
    that no torch op runs on the calling thread (see raypipe.torch_thread)."""
    counts = np.fromiter((len(doc.units) for doc in docs), dtype=np.int64, count=len(docs))
    rows = int(counts.sum())
    return ({p: torch.from_numpy(np.empty((rows, n), dtype=np.float32))
             for p, n in hidden_sizes.items()}, np.cumsum(counts) - counts)


def write_unit_rows(model, docs: Sequence[TokenizedDoc],
                    out: tuple[dict[str, torch.Tensor], np.ndarray], *, batch_tokens: int,
                    aggregation: Aggregation | str, padding_side: str = "right") -> float:
    """Run ``docs`` and write each one's unit rows into ``out`` = ``({split: (rows, d)}
    float32 tensors, first row of each of docs)``; returns the seconds spent in forwards.

    The documents a micro-batch finishes are reduced to their units right away (one
    ``aggregate`` call for all of them) and copied to their rows, so host memory holds one
    micro-batch of token activations, the windows of documents not finished yet, and the unit
    rows, never every token of the shard: for an 8B model (d = 4096), 512 documents of 2k
    tokens are 17 GB of float32 a split point, while their ``sample`` rows are 8 MB.

    Forward lanes share one shard's tensors this way, each writing its documents' rows in
    place (disjoint rows), so the shard's rows are in document order with no merge copy
    (measured: 0.06 s of row writes against 0.2 s of concatenations and a reordering gather for
    a 73k-row, 384-wide shard).

    Raises:
        RuntimeError: a document never finished (its rows would be left uninitialised).
    """
    aggregation = Aggregation.parse(aggregation)
    hidden = model.hidden_sizes
    acts, first = out
    forward_seconds, t0 = 0.0, time.perf_counter()
    written = 0
    for finished in _finished_documents(model, docs, batch_tokens=batch_tokens,
                                        padding_side=padding_side):
        forward_seconds += time.perf_counter() - t0
        if finished:
            done = [docs[d] for d, _ in finished]
            reduced = _reduce(done, [a for _, a in finished], aggregation, hidden)
            rows = _row_index([int(first[d]) for d, _ in finished], [len(doc.units) for doc in done])
            for p in hidden:
                acts[p].index_copy_(0, rows, reduced[p])
            written += len(finished)
        t0 = time.perf_counter()
    if written != len(docs):
        raise RuntimeError(f"{len(docs) - written} of {len(docs)} documents were never finished "
                           "by a forward; their rows would be left unwritten")
    return forward_seconds


def _row_index(starts: Sequence[int], counts: Sequence[int]) -> torch.Tensor:
    """The rows ``starts[i] .. starts[i] + counts[i] - 1`` of every document, concatenated."""
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(counts) - counts), counts)
    return torch.from_numpy(offsets + np.arange(int(counts.sum()), dtype=np.int64))


def unit_rows(docs: Sequence[TokenizedDoc], per_doc: Sequence[dict[str, torch.Tensor]],
              aggregation: Aggregation | str, hidden_sizes: dict[str, int]
              ) -> tuple[dict[str, list], dict[str, torch.Tensor]]:
    """One row per unit: the unit columns and ``{split: (rows, d)}`` activations.

    All documents are reduced in one ``aggregate`` call (their tokens concatenated, unit members
    offset accordingly): a few kernels per shard instead of per document, which matters on
    small CPUs where each tiny kernel pays thread start-up.
    """
    return unit_columns(docs), _reduce(docs, per_doc, Aggregation.parse(aggregation), hidden_sizes)


def unit_columns(docs: Sequence[TokenizedDoc]) -> dict[str, list]:
    """``doc_id, unit, text, char_start, char_end`` of every unit of ``docs``, in order."""
    columns: dict[str, list] = {"doc_id": [], "unit": []}
    for doc in docs:
        columns["doc_id"].extend([doc.doc_id] * len(doc.units))
        columns["unit"].extend(range(len(doc.units)))
    columns["text"] = [t for doc in docs for t in doc.units.text]
    for key in ("char_start", "char_end"):
        columns[key] = np.concatenate([getattr(doc.units, key) for doc in docs]).tolist() \
            if docs else []
    return columns


def _reduce(docs: Sequence[TokenizedDoc], per_doc: Sequence[dict[str, torch.Tensor]],
            aggregation: Aggregation, hidden_sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """``{split: (units, d)}`` of ``docs``: their tokens concatenated, members offset."""
    offsets, offset = [], 0
    for doc_acts in per_doc:
        offsets.append(offset)
        offset += len(next(iter(doc_acts.values()))) if doc_acts else 0
    units = concatenate_units([doc.units for doc in docs], offsets)
    if not len(units):
        return {p: torch.empty(0, d) for p, d in hidden_sizes.items()}
    return {p: aggregate(torch.cat([d[p] for d in per_doc]), units, aggregation) for p in hidden_sizes}
