"""A uniform sample of rows from a stream of activation batches, bounded in memory.

Batch dictionary methods (NMF, PCA, k-means, ...) need all their data at once, but a corpus'
activations do not fit in memory. Reservoir sampling (Vitter's algorithm R) keeps a uniform
sample without replacement of ``capacity`` rows in one pass, whatever the stream's length.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def reservoir_sample(batches: Iterable[np.ndarray], capacity: int,
                     seed: int = 0) -> tuple[np.ndarray, int]:
    """Sample up to ``capacity`` rows uniformly without replacement from ``(b, d)`` batches.

    Algorithm R: row ``t`` (0-based, over the whole stream) with ``t >= capacity`` draws
    ``j ~ U{0..t}`` and replaces slot ``j`` if ``j < capacity``. The draws are independent, so
    a whole batch draws at once; when several rows of a batch hit the same slot the last one
    wins, exactly as the row-by-row loop would. Every row ends in the sample with probability
    ``capacity / rows_seen``.

    Returns ``(sample, rows_seen)``: sample ``(min(capacity, rows_seen), d)`` float32, in
    reservoir order; the same batches and seed give the same sample.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"capacity must be a positive int (rows to keep), got {capacity!r}; "
                         "capacity_for_budget(memory_bytes, dim) gives one for a memory budget")
    capacity = int(capacity)
    rng = np.random.default_rng(seed)
    filling: list[np.ndarray] = []   # rows kept while the reservoir is not yet full
    n_filled = 0
    reservoir: np.ndarray | None = None  # (capacity, d) once full
    seen = 0
    dim: int | None = None
    for index, batch in enumerate(batches):
        rows = _as_rows(batch, dim, index)
        dim = rows.shape[1]
        if reservoir is None:
            take = min(len(rows), capacity - n_filled)
            # copy: the caller may reuse its buffer for the next batch
            filling.append(np.array(rows[:take], dtype=np.float32, copy=True))
            n_filled += take
            seen += take
            rows = rows[take:]
            if n_filled == capacity:
                reservoir = np.concatenate(filling)
                filling = []
        if len(rows) == 0:
            continue
        t = seen + np.arange(len(rows), dtype=np.int64)          # global row indices
        slots = rng.integers(0, t + 1)                             # j ~ U{0..t}, per row
        hits = np.flatnonzero(slots < capacity)
        if hits.size:
            # keep, for each slot, the last row of the batch that drew it
            uniq, first_in_reversed = np.unique(slots[hits][::-1], return_index=True)
            reservoir[uniq] = rows[hits[::-1][first_in_reversed]]
        seen += len(rows)
    if reservoir is not None:
        return reservoir, seen
    if filling:
        return np.concatenate(filling), seen
    return np.empty((0, dim or 0), dtype=np.float32), seen


def capacity_for_budget(memory_bytes: int, dim: int, dtype_bytes: int = 4) -> int:
    """Rows of ``dim`` values of ``dtype_bytes`` each that fit in ``memory_bytes``.

    This bounds the sample itself; the fit that follows needs working memory on top of it
    (sklearn solvers copy the data, often in float64), so budget accordingly.
    """
    for name, value in (("memory_bytes", memory_bytes), ("dim", dim), ("dtype_bytes", dtype_bytes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    row_bytes = int(dim) * int(dtype_bytes)
    rows = int(memory_bytes) // row_bytes
    if rows < 1:
        raise ValueError(f"a memory budget of {memory_bytes} bytes holds no row of {dim} values "
                         f"x {dtype_bytes} bytes; raise it to at least {row_bytes} bytes")
    return rows


def _as_rows(batch: object, dim: int | None, index: int) -> np.ndarray:
    """Batch ``index`` of the stream as a 2-D float32 array with ``dim`` columns."""
    if isinstance(batch, dict):
        raise TypeError(f"batch {index} is a dict (keys {sorted(batch)}); pass the activation "
                        "arrays, e.g. (b['activations'] for b in store.iter_batches(...))")
    rows = np.asarray(batch, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"batch {index} has shape {rows.shape}; expected (rows, dim) 2-D arrays")
    if dim is not None and rows.shape[1] != dim:
        raise ValueError(f"batch {index} has {rows.shape[1]} columns but earlier batches had {dim}; "
                         "sample one split point at a time")
    return rows
