"""Tokenize documents into model windows and the units each document will be reported as.

This runs on CPU tasks, before the model stage: the fast tokenizer gives character offsets and
word ids, from which the units (tokens, words, sentences, ...) are fixed here, so the model
actors only run forwards and reduce.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from raypipe.batching.backend import encode_windows, word_tokenizer
from raypipe.corpus import Document
from raypipe.granularity import Granularity, Units, doc_tokens_from_encodings, group_units

OVERFLOW_MODES = ("truncate", "window")


@dataclass
class TokenizedDoc:
    """One document, ready for the model: its windows of token ids and its units."""

    doc_id: int | str
    position: int
    text: str
    windows: list[np.ndarray]  # per window, (l_w,) int64 token ids incl. special tokens
    units: Units               # members index the concatenation of all windows' tokens
    truncated: bool = False    # tokens beyond max_length were dropped

    @property
    def n_tokens(self) -> int:
        return int(sum(len(w) for w in self.windows))


@dataclass
class TokenizeStats:
    """Counters reported in the shard stats and the job summary, so nothing is dropped silently."""

    docs: int = 0
    tokens: int = 0
    truncated: int = 0
    windowed: int = 0
    skipped_empty: int = 0
    skipped_empty_ids: list = field(default_factory=list)
    no_units: int = 0  # tokenized to special tokens only (e.g. zero-width or control characters)

    def as_dict(self) -> dict:
        return {"docs": self.docs, "tokens": self.tokens, "truncated": self.truncated,
                "windowed": self.windowed, "skipped_empty": self.skipped_empty,
                "no_units": self.no_units}


def tokenize_documents(documents: Sequence[Document], tokenizer, *, max_length: int,
                       overflow: str, granularity: Granularity) -> tuple[list[TokenizedDoc], TokenizeStats]:
    """Tokenize ``documents``; empty (whitespace-only) documents are skipped and counted.

    ``tokenizer``: a transformers fast tokenizer, or a ``BackendTokenizer`` (its Rust backend
    alone, as the CPU tasks use it); both give the same windows and units.

    ``overflow="truncate"`` keeps the first ``max_length`` tokens and counts the document as
    truncated; ``"window"`` cuts it into consecutive windows of at most ``max_length`` tokens
    (each with the model's special tokens) so that every token is covered.
    """
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("raypipe needs a fast (Rust) tokenizer for character offsets; "
                         f"{type(tokenizer).__name__} is not one")
    stats = TokenizeStats()
    kept = []
    for doc in documents:
        if doc.text is None or not doc.text.strip():
            stats.skipped_empty += 1
            stats.skipped_empty_ids.append(doc.doc_id)
        else:
            kept.append(doc)
    if not kept:
        return [], stats
    per_doc = encode_windows(tokenizer, [d.text for d in kept], max_length)
    words = word_tokenizer(tokenizer)
    out = []
    for doc, encodings in zip(kept, per_doc):
        truncated = len(encodings) > 1 and overflow == "truncate"
        if truncated:
            encodings = encodings[:1]
            stats.truncated += 1
        elif len(encodings) > 1:
            stats.windowed += 1
        tokens = doc_tokens_from_encodings(doc.text, encodings, words)
        units = group_units(tokens, granularity)
        windows = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        item = TokenizedDoc(doc.doc_id, doc.position, doc.text, windows, units, truncated)
        stats.docs += 1
        stats.no_units += not units.members
        stats.tokens += item.n_tokens
        out.append(item)
    return out, stats
