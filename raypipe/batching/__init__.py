"""Tokenization and token-budget batching: documents → model-ready micro-batches.

The token-budget helpers (torch) load on first use: the tokenize tasks import this package, and
a CPU worker that tokenizes with the Rust tokenizer alone starts ~2 s sooner on 2 cores when it
does not import torch (see ``raypipe.batching.backend``).
"""
from raypipe.batching.tokenize import TokenizedDoc, TokenizeStats, tokenize_documents

__all__ = ["TokenizedDoc", "TokenizeStats", "tokenize_documents", "plan_micro_batches", "pad_batch",
           "resolve_batch_tokens"]

_TOKEN_BUDGET = ("pad_batch", "plan_micro_batches", "resolve_batch_tokens")


def __getattr__(name: str):
    if name in _TOKEN_BUDGET:
        from raypipe.batching import token_budget

        for attr in _TOKEN_BUDGET:
            globals()[attr] = getattr(token_budget, attr)
        return globals()[name]
    raise AttributeError(f"module 'raypipe.batching' has no attribute {name!r}")
