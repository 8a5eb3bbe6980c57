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
from raypipe.granularity import Aggregation, Units, aggregate, concatenate_units

_HALF_DTYPES = (torch.float16, torch.bfloat16)

UNIT_COLUMNS = ("doc_id", "unit", "text", "char_start", "char_end")


def pad_token_id(tokenizer) -> int:
    """The pad id, else EOS (GPT-2 has no pad token); pads are masked out, so any id is exact."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _forward_batches(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                     padding_side: str = "right"
                     ) -> Iterator[tuple[list[tuple[int, int, int]], dict[str, torch.Tensor], int]]:
    """Per sorted token-budget micro-batch of ``docs``' windows: ``(rows, out, longest)`` with
    ``rows[r] = (index in docs, window, length)`` of padded row r and ``out = {split: (b,
    longest, d)}`` as the model returned it (its device and dtype)."""
    seqs = [(d, w) for d, doc in enumerate(docs) for w in range(len(doc.windows))]
    lengths = [len(docs[d].windows[w]) for d, w in seqs]
    pad_id = pad_token_id(model.tokenizer)
    for batch in plan_micro_batches(lengths, batch_tokens):
        ids, mask = pad_batch([docs[seqs[i][0]].windows[seqs[i][1]] for i in batch], pad_id,
                              padding_side)
        out = model.forward_activations(ids.to(model.input_device), mask.to(model.input_device))
        yield [(*seqs[i], lengths[i]) for i in batch], out, ids.shape[1]


class _Windows:
    """The windows of documents cut into several, kept on the host (float32) until a document's
    last window has run; then its tokens are concatenated in window order."""

    def __init__(self, docs: Sequence[TokenizedDoc]) -> None:
        self.count = [len(doc.windows) for doc in docs]
        self.left = list(self.count)
        self.pieces: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def add(self, d: int, w: int, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Keep window ``w`` of document ``d``; returns the whole document once all ran."""
        self.pieces[(d, w)] = acts
        self.left[d] -= 1
        if self.left[d]:
            return None
        windows = [self.pieces.pop((d, k)) for k in range(self.count[d])]
        return {p: torch.cat([x[p] for x in windows]) for p in acts}


def _host_window(t: torch.Tensor, row: int, length: int, longest: int, side: str) -> torch.Tensor:
    """Row ``row``'s real positions, float32 on the host (copied in the model dtype, widened
    there: half the transfer of a bf16 model)."""
    return unpad(t[row], length, longest, side).to("cpu").to(torch.float32)


def _finished_documents(model, docs: Sequence[TokenizedDoc], *, batch_tokens: int,
                        padding_side: str = "right"
                        ) -> Iterator[list[tuple[int, dict[str, torch.Tensor]]]]:
    """After each micro-batch, the documents whose last window it ran: ``[(index in docs,
    {split: (t, d)} float32 on CPU over all its windows' tokens)]``. Windows of unfinished
    documents are the only token activations kept between batches."""
    windows = _Windows(docs)
    for rows, out, longest in _forward_batches(model, docs, batch_tokens=batch_tokens,
                                               padding_side=padding_side):
        finished = []
        for row, (d, w, n) in enumerate(rows):
            whole = windows.add(d, w, {p: _host_window(t, row, n, longest, padding_side)
                                       for p, t in out.items()})
            if whole is not None:
                finished.append((d, whole))
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

    The documents a micro-batch finishes are reduced to their units right away and copied to
    their rows, so host memory holds one micro-batch of token activations, the windows of
    documents not finished yet, and the unit rows, never every token of the shard: for an 8B
    model (d = 4096), 512 documents of 2k tokens are 17 GB of float32 a split point, while
    their ``sample`` rows are 8 MB.

    A document that fits one window (nearly all of them) is reduced straight from the padded
    batch, where the model left it: one ``aggregate`` call for all such documents of the
    batch, over the batch flattened to ``(b * longest, d)`` with their units offset to their
    rows' real positions. On a GPU that reduction runs on the device and only the unit rows
    cross to the host (a ``sample`` row instead of every token of the document, padding never);
    on a CPU it saves the per-document copies. Documents cut into several windows wait on the
    host (`_Windows`) and are reduced there when their last window has run.

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
    windows = _Windows(docs)
    forward_seconds, t0 = 0.0, time.perf_counter()
    written = 0
    for rows, batch_out, longest in _forward_batches(model, docs, batch_tokens=batch_tokens,
                                                     padding_side=padding_side):
        _wait_for(batch_out)  # a GPU runs ahead of the clock; the reduction would wait anyway
        forward_seconds += time.perf_counter() - t0
        in_batch, offsets, windowed, windowed_acts = [], [], [], []
        for row, (d, w, n) in enumerate(rows):
            if windows.count[d] == 1:
                in_batch.append(d)
                offsets.append(row * longest + (0 if padding_side == "right" else longest - n))
                continue
            whole = windows.add(d, w, {p: _host_window(t, row, n, longest, padding_side)
                                       for p, t in batch_out.items()})
            if whole is not None:
                windowed.append(d)
                windowed_acts.append(whole)
        if in_batch:
            units = concatenate_units([docs[d].units for d in in_batch], offsets)
            _place(acts, first, docs, in_batch, {
                p: _unit_rows_of(t.reshape(-1, t.shape[-1]), units, aggregation)
                for p, t in batch_out.items()})
        if windowed:
            _place(acts, first, docs, windowed,
                   _reduce([docs[d] for d in windowed], windowed_acts, aggregation, hidden))
        written += len(in_batch) + len(windowed)
        t0 = time.perf_counter()
    if written != len(docs):
        raise RuntimeError(f"{len(docs) - written} of {len(docs)} documents were never finished "
                           "by a forward; their rows would be left unwritten")
    return forward_seconds


def _wait_for(tensors: dict[str, torch.Tensor]) -> None:
    """Block until the kernels that make ``tensors`` have run (CUDA queues them and returns),
    so that the forward seconds are the forward's."""
    for device in {t.device for t in tensors.values() if t.device.type == "cuda"}:
        torch.cuda.synchronize(device)


def _place(acts: dict[str, torch.Tensor], first: np.ndarray, docs: Sequence[TokenizedDoc],
           done: Sequence[int], reduced: dict[str, torch.Tensor]) -> None:
    """Copy the unit rows of documents ``done`` (concatenated in that order) to their rows."""
    rows = _row_index([int(first[d]) for d in done], [len(docs[d].units) for d in done])
    for p, x in reduced.items():
        acts[p].index_copy_(0, rows, x)


def _unit_rows_of(tokens: torch.Tensor, units: Units, aggregation: Aggregation) -> torch.Tensor:
    """``aggregate`` of ``(t, d)`` token activations on their device, returned float32 on CPU.

    The numbers are those of widening every token to float32 first: selections (token units,
    max, min, signed max) are exact in float16/bfloat16, so they are taken in the model's dtype
    and only the selected rows are widened (half the transfer); sums and means widen first.
    On a GPU, sums and means use atomic adds whose order is not fixed: rows may differ from a
    CPU run (or another GPU run) in the last bits.
    """
    selects = (aggregation in (Aggregation.MAX, Aggregation.MIN, Aggregation.SIGNED_MAX)
               or bool((units.packed()[1] == 1).all()))
    if tokens.dtype != torch.float32 and not (selects and tokens.dtype in _HALF_DTYPES):
        tokens = tokens.to(torch.float32)
    return aggregate(tokens, units, aggregation).to("cpu").to(torch.float32)


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
    return {p: _unit_rows_of(torch.cat([d[p] for d in per_doc]), units, aggregation)
            for p in hidden_sizes}
