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


SPECIAL_TOKENS = ("mask", "pad", "unk", "eos", "bos")


class BackendTokenizer:
    """A ``tokenizers.Tokenizer`` with what the CPU stages need from a tokenizer: windows with
    offsets (``tokenize_documents``), plain ids (a continuation to explain), and the special
    token ids (``mask_token_id``, ``pad_token_id``, ... as on a transformers tokenizer, for the
    attribution baselines)."""

    is_fast = True

    def __init__(self, tokenizer: Any, truncation_side: str = "right", special_ids: dict | None = None,
                 name_or_path: str = "") -> None:
        self.tokenizer = tokenizer
        self.truncation_side = truncation_side
        self.name_or_path = name_or_path
        for name in SPECIAL_TOKENS:
            setattr(self, f"{name}_token_id", (special_ids or {}).get(name))

    @classmethod
    def from_spec(cls, spec: dict) -> "BackendTokenizer":
        """From ``backend_spec(hf_tokenizer)`` (plain JSON-able data, cheap to ship to tasks)."""
        special = tuple(sorted((spec.get("special_ids") or {}).items()))
        return _load(spec["json"], spec["truncation_side"], special, spec.get("name_or_path", ""))

    def encode_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens or truncation (as
        ``hf_tokenizer(text, add_special_tokens=False)["input_ids"]``)."""
        self.tokenizer.no_truncation()
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_windows(self, texts: Sequence[str], max_length: int) -> list[list[Any]]:
        """Per text, its windows' ``Encoding`` objects: the first ``max_length`` tokens, then
        the overflowing ones in order (each with the special tokens)."""
        self.tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first",
                                         direction=self.truncation_side)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [[enc, *enc.overflowing] for enc in encodings]


def backend_spec(tokenizer: Any) -> dict:
    """What a worker needs to stand in for ``tokenizer``: its Rust backend as JSON, its
    truncation side, its special token ids and its name (for error messages)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; raypipe "
                         "needs one for character offsets")
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in SPECIAL_TOKENS}
    return {"json": backend.to_str(), "truncation_side": getattr(tokenizer, "truncation_side", "right"),
            "special_ids": {k: int(v) for k, v in special.items() if v is not None},
            "name_or_path": str(getattr(tokenizer, "name_or_path", "") or "")}


@functools.lru_cache(maxsize=4)
def _load(json_text: str, truncation_side: str, special: tuple, name_or_path: str) -> BackendTokenizer:
    """One tokenizer per worker process and spec: Ray reuses workers across tasks."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json_text)
    tokenizer.no_padding()
    return BackendTokenizer(tokenizer, truncation_side, dict(special), name_or_path)


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


def encode_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s ids without special tokens or truncation, from either kind of tokenizer."""
    if isinstance(tokenizer, BackendTokenizer):
        return tokenizer.encode_ids(text)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def word_tokenizer(tokenizer: Any) -> Any:
    """What ``doc_tokens_from_encodings`` asks whether a word continues across windows."""
    return tokenizer.tokenizer if isinstance(tokenizer, BackendTokenizer) else tokenizer
