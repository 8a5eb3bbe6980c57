"""Cut sequences into micro-batches by a token budget instead of a row count.

Why a token budget: a fixed row count either wastes memory on short texts or runs out of it on
long ones, and unsorted batches spend most of their compute on padding (measured here: sorting by
length made MiniLM extraction 1.6–1.9x faster). Sorting by length and filling each micro-batch up
to ``batch_tokens`` padded tokens keeps the padding small and the cost per batch flat.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Default budgets when a job leaves ``batch_tokens`` unset. Measured on MiniLM over rt-polarity
# (2 CPU cores, sorted batches): 1024-2048 padded tokens ran 10-25% faster than 8192, whose
# activations no longer fit the CPU caches; a GPU wants large batches to stay busy.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 8192
# Jobs that take gradients keep every activation for the backward pass: half the budget on GPUs.
GRADIENT_GPU_BATCH_TOKENS = 4096


def resolve_batch_tokens(batch_tokens: int | None, device: torch.device | str,
                         gpu_default: int = GPU_BATCH_TOKENS) -> int:
    """``batch_tokens`` when given, else the default for the device the model's inputs go to
    (``gpu_default`` lets a job that keeps gradients ask for less on accelerators)."""
    if batch_tokens is not None:
        return int(batch_tokens)
    return CPU_BATCH_TOKENS if torch.device(device).type == "cpu" else gpu_default


def plan_micro_batches(lengths: Sequence[int], batch_tokens: int,
                       max_batch_size: int | None = None) -> list[np.ndarray]:
    """Group sequence indices into micro-batches, longest first.

    Each batch holds sequences sorted by decreasing length, and ``len(batch) * longest``
    (the padded size) stays within ``batch_tokens``; a sequence longer than the budget gets a
    batch of its own. Every index appears exactly once.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, batch_tokens // longest)
        if max_batch_size is not None:
            size = min(size, max_batch_size)
        batches.append(order[start:start + size])
        start += size
    return batches


def balanced_groups(lengths: Sequence[int], n: int) -> list[list[int]]:
    """Indices split into at most ``n`` groups of near-equal total length, for ``n`` forward
    lanes: taken longest first and dealt out back and forth (0, 1, …, n-1, n-1, …, 0), so every
    group also gets a similar mix of lengths and batches as tightly as the whole. Each group
    is in increasing index order; empty groups are left out."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    groups: list[list[int]] = [[] for _ in range(n)]
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for rank, index in enumerate(order.tolist()):
        turn = rank % (2 * n)
        groups[turn if turn < n else 2 * n - 1 - turn].append(index)
    return [sorted(g) for g in groups if g]


def pad_batch(sequences: Sequence[np.ndarray], pad_id: int, side: str = "right",
              masks: Sequence[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id arrays into ``input_ids`` and ``attention_mask``, both ``(n, longest)`` int64.

    Right padding is the default for every model: with a causal mask, real tokens never attend to
    pads that come after them and keep positions 0..t-1, so their activations equal an unpadded
    forward. Left padding is offered for models that require it.
    """
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        sl = slice(0, n) if side == "right" else slice(longest - n, longest)
        ids[row, sl] = torch.as_tensor(np.asarray(seq), dtype=torch.long)
        mask[row, sl] = 1 if masks is None else torch.as_tensor(np.asarray(masks[row]), dtype=torch.long)
    return ids, mask


def unpad(tensor: torch.Tensor, length: int, longest: int, side: str) -> torch.Tensor:
    """The ``length`` real positions of one padded row ``(longest, ...)``."""
    return tensor[:length] if side == "right" else tensor[longest - length:]
