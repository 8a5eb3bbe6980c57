"""The map-reduce top-k equals a brute-force top-k over all rows."""
from __future__ import annotations

import numpy as np
import torch

from raypipe.interpretation.top_activations import block_topk, merge_topk


def test_blockwise_merge_equals_brute_force():
    rng = np.random.default_rng(0)
    codes = torch.from_numpy(np.maximum(rng.standard_normal((1000, 7)), 0).astype(np.float32))
    bounds = [0, 3, 250, 251, 600, 1000]
    parts = [block_topk(codes[a:b], a, 5) for a, b in zip(bounds[:-1], bounds[1:])]
    merged = merge_topk(parts, 5)
    ref_rows = np.argsort(-codes.numpy(), axis=0, kind="stable")[:5].T
    np.testing.assert_array_equal(merged.rows, ref_rows)
    np.testing.assert_allclose(merged.values, np.take_along_axis(codes.numpy().T, ref_rows, 1))
    np.testing.assert_array_equal(merged.fired, (codes > 0).sum(0).numpy())
    assert merged.n_rows == 1000
    np.testing.assert_allclose(merged.total, codes.double().sum(0).numpy())


def test_fewer_rows_than_k_pad_with_empty_slots():
    part = block_topk(torch.tensor([[1.0, 0.0], [2.0, 3.0]]), 10, 4)
    merged = merge_topk([part, block_topk(torch.zeros(0, 2), 12, 4)], 4)
    assert merged.rows[0].tolist() == [11, 10, -1, -1]
    assert merged.values[1, :2].tolist() == [3.0, 0.0]
