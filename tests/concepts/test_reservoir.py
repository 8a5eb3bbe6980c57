"""Reservoir sampling keeps a uniform sample of the stream, deterministic per seed."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from raypipe.concepts.reservoir import capacity_for_budget, reservoir_sample


def _stream(n_rows: int, sizes: list[int], dim: int = 3) -> list[np.ndarray]:
    """Row i is filled with the value i, split into batches of the given sizes."""
    assert sum(sizes) == n_rows
    rows = np.repeat(np.arange(n_rows, dtype=np.float32)[:, None], dim, axis=1)
    return np.split(rows, np.cumsum(sizes)[:-1])


def _inclusion_counts(n_rows: int, sizes: list[int], capacity: int, trials: int) -> np.ndarray:
    counts = np.zeros(n_rows)
    batches = _stream(n_rows, sizes)
    for seed in range(trials):
        sample, seen = reservoir_sample(iter(batches), capacity, seed=seed)
        ids = sample[:, 0].astype(int)
        assert seen == n_rows and len(ids) == min(capacity, n_rows)
        assert len(set(ids)) == len(ids), "sampled without replacement"
        counts[ids] += 1
    return counts


def test_every_row_is_kept_with_probability_capacity_over_rows():
    # batches that straddle the fill boundary, a 1-row batch and one larger than the capacity
    n_rows, capacity, trials = 30, 6, 1500
    counts = _inclusion_counts(n_rows, [4, 7, 1, 10, 8], capacity, trials)
    expected = np.full(n_rows, trials * capacity / n_rows)
    assert chisquare(counts, expected).pvalue > 1e-3
    assert counts.sum() == trials * capacity


def test_one_slot_hit_many_times_in_one_batch_keeps_the_last_row():
    # with capacity 1 and a single batch every row competes for slot 0: if the first writer
    # won instead of the last, early rows would be heavily over-represented
    n_rows, trials = 12, 2400
    counts = _inclusion_counts(n_rows, [n_rows], 1, trials)
    assert chisquare(counts, np.full(n_rows, trials / n_rows)).pvalue > 1e-3


def test_short_stream_returns_every_row_in_order():
    batches = _stream(5, [2, 3])
    sample, seen = reservoir_sample(batches, capacity=10)
    assert seen == 5 and sample.dtype == np.float32
    np.testing.assert_array_equal(sample[:, 0], np.arange(5))


def test_deterministic_per_seed():
    batches = _stream(100, [25] * 4)
    a, _ = reservoir_sample(batches, 10, seed=3)
    b, _ = reservoir_sample(batches, 10, seed=3)
    c, _ = reservoir_sample(batches, 10, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rows_are_copied_not_aliased_to_the_callers_buffer():
    buffer = np.zeros((4, 2), dtype=np.float32)

    def reused_buffer():
        for i in range(3):
            buffer[:] = i
            yield buffer

    sample, seen = reservoir_sample(reused_buffer(), capacity=12, seed=0)
    assert seen == 12
    np.testing.assert_array_equal(sample[:, 0], np.repeat([0, 1, 2], 4))


def test_empty_stream():
    sample, seen = reservoir_sample([], capacity=4)
    assert seen == 0 and sample.shape[0] == 0


@pytest.mark.parametrize("bad, match", [
    (dict(capacity=0), "capacity"),
    (dict(batches=[{"activations": np.zeros((2, 2))}]), "activations"),
    (dict(batches=[np.zeros((2, 3)), np.zeros((2, 4))]), "columns"),
    (dict(batches=[np.zeros(3)]), "2-D"),
])
def test_bad_input_errors_name_the_problem(bad, match):
    args = {"batches": [np.zeros((2, 3))], "capacity": 2, **bad}
    with pytest.raises((ValueError, TypeError), match=match):
        reservoir_sample(**args)


def test_capacity_for_budget():
    assert capacity_for_budget(1 << 20, 256) == 1024
    assert capacity_for_budget(1 << 20, 256, dtype_bytes=2) == 2048
    with pytest.raises(ValueError, match="at least 1024 bytes"):
        capacity_for_budget(100, 256)
    with pytest.raises(ValueError, match="dim"):
        capacity_for_budget(1 << 20, 0)
