"""The baseline a user would write by hand: sorted texts, token-budget batches, no hooks, no writes.

Two variants share the same batches: the full forward (all blocks) and the ideal partial forward
that stops after block ``last_block`` (the encoder's ``layer`` list truncated), which is the
lower bound on the cost of extracting an early split point.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Tokenized:
    """Token ids of each text (special tokens included, truncated to the model's maximum)."""

    ids: list[list[int]]
    pad_id: int
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def tokenize(tokenizer, texts: list[str], max_length: int) -> Tokenized:
    t0 = time.perf_counter()
    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Tokenized(list(enc["input_ids"]), int(pad), time.perf_counter() - t0)


def budget_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted longest first, each batch holding at most ``batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        size = max(1, batch_tokens // max(1, lengths[order[start]]))
        batches.append(order[start:start + size])
        start += size
    return batches


def fixed_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted longest first, ``batch_size`` per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def make_batches(lengths: list[int], scheme: tuple[str, int]) -> list[list[int]]:
    kind, size = scheme
    return budget_batches(lengths, size) if kind == "budget" else fixed_batches(lengths, size)


def pad(ids: list[list[int]], rows: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(ids[i]) for i in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, i in enumerate(rows):
        input_ids[r, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
        mask[r, :len(ids[i])] = 1
    return input_ids, mask


def run_loop(model, tok: Tokenized, batches: list[list[int]]) -> float:
    """Seconds to pad and forward every batch (the model's outputs are discarded)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for rows in batches:
            input_ids, mask = pad(tok.ids, rows, tok.pad_id)
            model(input_ids=input_ids, attention_mask=mask)
    return time.perf_counter() - t0


def warm_up(model, tok: Tokenized) -> None:
    """One small forward so that the first timed batch does not pay for lazy initialisation."""
    rows = list(range(min(8, len(tok.ids))))
    input_ids, mask = pad(tok.ids, rows, tok.pad_id)
    with torch.inference_mode():
        model(input_ids=input_ids, attention_mask=mask)


def choose_scheme(model, tok: Tokenized, candidates: list[tuple[str, int]], sample: int = 300,
                  rounds: int = 2, log=print) -> tuple[str, int]:
    """Time each batching scheme on an evenly spread sample of texts; return the fastest.

    Candidates are run round-robin ``rounds`` times and each keeps its best time, so a burst of
    load from other processes does not decide the choice.
    """
    step = max(1, len(tok.ids) // sample)
    sub = Tokenized(tok.ids[::step][:sample], tok.pad_id, 0.0)
    lengths = [len(x) for x in sub.ids]
    timings = {scheme: float("inf") for scheme in candidates}
    for _ in range(rounds):
        for scheme in candidates:
            timings[scheme] = min(timings[scheme], run_loop(model, sub, make_batches(lengths, scheme)))
    best = min(timings, key=timings.get)
    shown = ", ".join(f"{k}={v} {t:.2f}s" for (k, v), t in timings.items())
    log(f"plain loop batching check on {len(sub.ids)} texts (best of {rounds}): {shown} "
        f"-> {best[0]}={best[1]}")
    return best


class StopAfter:
    """Context manager: the encoder keeps only its first ``last_block + 1`` blocks."""

    def __init__(self, model, last_block: int) -> None:
        self.encoder = model.encoder
        self.keep = last_block + 1
        self.saved = None

    def __enter__(self):
        self.saved = self.encoder.layer
        self.encoder.layer = torch.nn.ModuleList(list(self.saved)[: self.keep])
        return self

    def __exit__(self, *exc) -> None:
        self.encoder.layer = self.saved
