"""The Rust tokenizer behind a transformers fast tokenizer, for the CPU tokenize tasks.

Why: ``AutoTokenizer`` imports transformers and torch (~2 s of CPU per worker process on these
machines), while the ``tokenizers`` library loads a tokenizer in ~0.05 s. The driver has the
transformers tokenizer anyway (it plans the job with it) and ships its backend, serialized,
to the workers; a job's early shards then no longer share the 2 cores with a tokenizer worker's
imports while the model actor starts.

Serializing the *loaded* backend, rather than reading ``tokenizer.json`` in the worker, keeps
whatever transformers changed when it loaded the tokenizer (post-processors that add BOS/EOS,
added tokens), so the ids, offsets and word ids are the ones the transformers tokenizer gives.
Truncation is set here explicitly, as transformers sets it for ``truncation=True,
return_overflowing_tokens=True, stride=0``: longest-first, on the tokenizer's truncation side,
each overflowing window with the special tokens again.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


class BackendTokenizer:
    """A ``tokenizers.Tokenizer`` with what ``tokenize_documents`` needs from a tokenizer."""

    is_fast = True

    def __init__(self, tokenizer: Any, truncation_side: str = "right") -> None:
        self.tokenizer = tokenizer
        self.truncation_side = truncation_side

    @classmethod
    def from_spec(cls, spec: dict) -> "BackendTokenizer":
        """From ``backend_spec(hf_tokenizer)`` (plain JSON-able data, cheap to ship to tasks)."""
        return _load(spec["json"], spec["truncation_side"])

    def encode_windows(self, texts: Sequence[str], max_length: int) -> list[list[Any]]:
        """Per text, its windows' ``Encoding`` objects: the first ``max_length`` tokens, then
        the overflowing ones in order (each with the special tokens)."""
        self.tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first",
                                         direction=self.truncation_side)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [[enc, *enc.overflowing] for enc in encodings]


def backend_spec(tokenizer: Any) -> dict:
    """What a worker needs to rebuild ``tokenizer``'s Rust backend: its JSON and truncation side."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; raypipe "
                         "needs one for character offsets")
    return {"json": backend.to_str(), "truncation_side": getattr(tokenizer, "truncation_side", "right")}


@functools.lru_cache(maxsize=4)
def _load(json_text: str, truncation_side: str) -> BackendTokenizer:
    """One tokenizer per worker process and spec: Ray reuses workers across tasks."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json_text)
    tokenizer.no_padding()
    return BackendTokenizer(tokenizer, truncation_side)


def encode_windows(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[Any]]:
    """Per text, its windows' encodings, from a transformers fast tokenizer or a
    ``BackendTokenizer`` (the same encodings either way; tested)."""
    if isinstance(tokenizer, BackendTokenizer):
        return tokenizer.encode_windows(texts, max_length)
    enc = tokenizer(list(texts), truncation=True, max_length=max_length,
                    return_overflowing_tokens=True, stride=0, return_offsets_mapping=True,
                    return_special_tokens_mask=True, add_special_tokens=True)
    per_text: list[list[Any]] = [[] for _ in texts]
    for window_index, sample in enumerate(enc["overflow_to_sample_mapping"]):
        per_text[sample].append(enc.encodings[window_index])
    return per_text


def word_tokenizer(tokenizer: Any) -> Any:
    """What ``doc_tokens_from_encodings`` asks whether a word continues across windows."""
    return tokenizer.tokenizer if isinstance(tokenizer, BackendTokenizer) else tokenizer
