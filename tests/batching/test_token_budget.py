"""Token-budget micro-batches: every sequence once, padded size within budget, little padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.batching import pad_batch, plan_micro_batches
from raypipe.batching.token_budget import unpad


def test_every_index_once_and_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=500)
    batches = plan_micro_batches(lengths, batch_tokens=512)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        assert len(b) * lengths[b].max() <= 512
        assert list(lengths[b]) == sorted(lengths[b], reverse=True)


def test_sorting_keeps_padding_small():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 200, size=2000)
    batches = plan_micro_batches(lengths, batch_tokens=4096)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.1


def test_sequence_longer_than_budget_gets_its_own_batch():
    batches = plan_micro_batches([10, 300, 5], batch_tokens=100)
    assert [b.tolist() for b in batches] == [[1], [0, 2]]


def test_max_batch_size_and_bad_budget():
    assert all(len(b) <= 3 for b in plan_micro_batches([1] * 10, 1000, max_batch_size=3))
    with pytest.raises(ValueError, match="batch_tokens"):
        plan_micro_batches([1], 0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_and_unpad_round_trip(side):
    seqs = [np.array([5, 6, 7]), np.array([8]), np.array([9, 10])]
    ids, mask = pad_batch(seqs, pad_id=0, side=side)
    assert ids.shape == (3, 3) and mask.sum().item() == 6
    for row, seq in enumerate(seqs):
        assert unpad(ids[row], len(seq), 3, side).tolist() == seq.tolist()
        assert torch.equal(unpad(mask[row], len(seq), 3, side), torch.ones(len(seq), dtype=torch.long))


def test_default_budget_depends_on_the_device():
    from raypipe.batching import resolve_batch_tokens
    from raypipe.batching.token_budget import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS

    assert resolve_batch_tokens(None, "cpu") == CPU_BATCH_TOKENS
    assert resolve_batch_tokens(None, "cuda:1") == GPU_BATCH_TOKENS
    assert resolve_batch_tokens(None, torch.device("cuda", 0), gpu_default=4096) == 4096
    assert resolve_batch_tokens(300, "cuda") == 300  # an explicit budget always wins
    assert CPU_BATCH_TOKENS < GPU_BATCH_TOKENS


def test_balanced_groups_hold_every_index_once_with_near_equal_tokens():
    from raypipe.batching.token_budget import balanced_groups

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 200, size=501)
    for n in (1, 2, 3, 4):
        groups = balanced_groups(lengths, n)
        assert len(groups) == n and all(g == sorted(g) for g in groups)
        assert sorted(i for g in groups for i in g) == list(range(501))
        totals = [int(lengths[g].sum()) for g in groups]
        assert max(totals) - min(totals) <= lengths.max()   # within one document
    assert balanced_groups([5], 3) == [[0]]                  # no empty groups
    with pytest.raises(ValueError):
        balanced_groups([1, 2], 0)
