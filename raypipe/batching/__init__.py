"""Tokenization and token-budget batching: documents → model-ready micro-batches."""
from raypipe.batching.token_budget import pad_batch, plan_micro_batches, resolve_batch_tokens
from raypipe.batching.tokenize import TokenizedDoc, TokenizeStats, tokenize_documents

__all__ = ["TokenizedDoc", "TokenizeStats", "tokenize_documents", "plan_micro_batches", "pad_batch",
           "resolve_batch_tokens"]
