"""Deletion and insertion curves: is an attribution's ranking of units the one the model uses?

Deletion (Petsiuk et al. 2018, RISE; DeYoung et al. 2020, ERASER "comprehensiveness") removes
a document's units one step at a time, most important first, and records the model's score for
the explained target after every step; a faithful ranking makes the score fall fast, so its
area under the curve is small. Insertion starts from every unit removed and puts them back in
the same order; a faithful ranking makes the score rise fast (large area). A random order is
the reference both should beat.

Everything here is pure numpy over one document's ``g`` units. Masks are ``(m, g)`` bool with
True = unit kept, the convention of ``masks.py``, so they go straight into
``perturb.perturbed_inputs``. Row ``i`` of a curve's masks has ``counts[i]`` units removed
(deletion) or inserted (insertion); ``counts`` runs from 0 to g, so row 0 of a deletion is the
original document and its last row the fully removed one, and the insertion rows are the
complements of the deletion rows.
"""
from __future__ import annotations

import numpy as np

CURVE_KINDS = ("deletion", "insertion")


def step_counts(n_units: int, steps: int | None = None) -> np.ndarray:
    """``(m,)`` int64: how many units are removed (or inserted) at each point of a curve.

    ``steps=None`` (or ``steps >= n_units``) moves one unit per step: ``0, 1, ..., g``
    (m = g + 1). Fewer steps spread the g units evenly: ``round(linspace(0, g, steps + 1))``,
    so long documents cost ``steps + 1`` forwards instead of ``g + 1``.
    """
    if n_units < 1:
        raise ValueError(f"a curve needs at least one unit, got n_units={n_units}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1 (or None for one unit per step), got {steps}")
    if steps is None or steps >= n_units:
        return np.arange(n_units + 1, dtype=np.int64)
    return np.round(np.linspace(0, n_units, steps + 1)).astype(np.int64)


def fractions(n_units: int, steps: int | None = None) -> np.ndarray:
    """``(m,)`` float64 in [0, 1]: the x axis of a curve, the fraction of units moved."""
    return step_counts(n_units, steps) / float(n_units)


def ranking(scores: np.ndarray) -> np.ndarray:
    """``(g,)`` unit indices by decreasing score; ties keep document order (stable).

    Raises:
        ValueError: ``scores`` is not 1-d or holds NaN/inf (no order is defined for those).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be (g,) unit scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        bad = np.flatnonzero(~np.isfinite(scores)).tolist()
        raise ValueError(f"unit scores at positions {bad} are not finite; a deletion/insertion "
                         "order needs finite scores")
    return np.argsort(-scores, kind="stable")


def order_masks(order: np.ndarray, kind: str, steps: int | None = None) -> np.ndarray:
    """``(m, g)`` bool masks (True = kept) moving units in ``order`` (a permutation of 0..g-1).

    ``kind="deletion"``: row i removes ``order[:counts[i]]``; ``"insertion"``: row i keeps only
    ``order[:counts[i]]`` (the complement of the deletion row).
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(CURVE_KINDS)}")
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    g = order.shape[0]
    if not np.array_equal(np.sort(order), np.arange(g)):
        raise ValueError(f"order must be a permutation of 0..{g - 1}, got {order.tolist()}")
    counts = step_counts(g, steps)
    rank = np.empty(g, dtype=np.int64)
    rank[order] = np.arange(g)                     # rank[j]: when unit j is moved
    moved = rank[None, :] < counts[:, None]        # (m, g)
    return ~moved if kind == "deletion" else moved


def deletion_masks(scores: np.ndarray, steps: int | None = None) -> np.ndarray:
    """``(m, g)`` bool: remove units by decreasing ``scores`` (g,), most important first.

    Row 0 keeps every unit (the original), the last row none.
    """
    return order_masks(ranking(scores), "deletion", steps)


def insertion_masks(scores: np.ndarray, steps: int | None = None) -> np.ndarray:
    """``(m, g)`` bool: from every unit removed, insert units by decreasing ``scores`` (g,).

    Row 0 keeps no unit, the last row all; row i is ``~deletion_masks(scores, steps)[i]``.
    """
    return order_masks(ranking(scores), "insertion", steps)


def random_order_masks(n_units: int, seed: int, kind: str, steps: int | None = None) -> np.ndarray:
    """``(m, g)`` bool: the ``kind`` curve's masks for a uniformly random order of the units.

    The order depends only on ``seed`` (``numpy.random.default_rng``), so the same seed gives the
    same deletion and insertion sequences, wherever it runs: use ``masks.doc_seed`` per document.
    """
    order = np.random.default_rng(seed).permutation(n_units)
    return order_masks(order, kind, steps)


def curve_auc(curve: np.ndarray, x: np.ndarray | None = None) -> float:
    """Trapezoidal area under ``curve`` (m,) over ``x`` (m,), by default evenly spaced in [0, 1].

    With ``x`` in [0, 1] (the fraction of units moved, see ``fractions``) the area is
    normalised per document: documents of any length compare, and a flat curve's area equals
    its value.
    """
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    if y.shape[0] < 2:
        raise ValueError(f"a curve needs at least 2 points for an area, got {y.shape[0]}")
    xs = np.linspace(0.0, 1.0, y.shape[0]) if x is None else np.asarray(x, dtype=np.float64).reshape(-1)
    if xs.shape != y.shape:
        raise ValueError(f"x has shape {xs.shape} but the curve has {y.shape}")
    if np.any(np.diff(xs) < 0):
        raise ValueError("x must be non-decreasing")
    return float(np.sum(np.diff(xs) * (y[1:] + y[:-1]) / 2.0))
