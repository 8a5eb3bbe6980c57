"""Which units each perturbed copy of a document keeps: one boolean mask row per model call.

A document's explained features ("units": tokens, words or sentences) are switched on or off
as wholes. Every perturbation method here is a *design* — a matrix of keep/remove rows — plus
an estimator (``estimators.py``) that turns the model's scores on those rows back into one
number per unit. Keeping the two apart lets CPU tasks draw masks, model actors pack the
perturbed inputs of many documents into token-budget batches, and CPU tasks estimate again,
without any of them knowing about the others.

Masks are ``(m, g)`` bool, True = unit kept; row order is the order the estimator expects the
scores back in. Everything is deterministic in ``(method, n_units, n_samples, seed)``; use
``doc_seed`` to derive a per-document seed so a document's masks do not depend on which actor
or batch it lands in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERTURBATION_METHODS = ("occlusion", "feature_ablation", "lime", "kernel_shap", "sobol")

ESTIMATOR_PARAMS = ("kernel_width", "alpha")
"""Parameters of ``estimate`` (lime's); ``make_masks`` accepts and ignores them, so one
per-method parameter dict can be passed to both."""

_SOBOL_MAX_DIM = 21201  # scipy.stats.qmc.Sobol.MAXDIM; sobol uses 2 dimensions per unit.


@dataclass
class MaskPlan:
    """The masks of one document for one method, and what the estimator needs to read them."""

    method: str
    """One of ``PERTURBATION_METHODS``."""
    masks: np.ndarray
    """(m, g) bool, True = unit kept. Row order is the order scores come back in."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the estimator needs: kernel_shap's ``exact``, sobol's ``n`` and ``layout``, ..."""

    @property
    def n_units(self) -> int:
        """g, the number of units (columns of ``masks``)."""
        return int(self.masks.shape[1])

    @property
    def n_rows(self) -> int:
        """m, the number of perturbed inputs (model calls) this plan needs."""
        return int(self.masks.shape[0])


def doc_seed(seed: int, doc_id: int | str) -> int:
    """A per-document seed from the job seed and the document id.

    Stable across processes and Python versions (blake2b, not the salted ``hash()``), so a
    document's masks — and therefore its scores — do not depend on how documents are spread
    over actors and batches. ``doc_id`` is hashed through ``str``: ids that round-trip through
    JSON or Parquet as strings (``7`` vs ``"7"``) get the same seed on purpose.
    Returns a non-negative int below 2**63 (valid for numpy and scipy generators).
    """
    digest = hashlib.blake2b(f"{int(seed)}\x1f{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_masks(method: str, n_units: int, *, n_samples: int = 64, seed: int = 0,
               **params: Any) -> MaskPlan:
    """The masks of ``method`` for a document of ``n_units`` units.

    - ``occlusion`` / ``feature_ablation`` (Zeiler & Fergus 2014; captum ``FeatureAblation``):
      row 0 keeps everything (the original), row ``1 + j`` removes unit j only. m = g + 1;
      ``n_samples`` is ignored.
    - ``kernel_shap`` (Lundberg & Lee 2017): if ``2**g <= n_samples`` (or g = 1) all 2**g coalitions are
      enumerated (row r keeps unit j iff bit j of r is set), so the estimate is the exact
      Shapley value. Otherwise rows 0 and 1 are the empty and full coalitions (enforced exactly
      by the estimator), then ``(n_samples - 2) // 2`` (at least 1) antithetic pairs: a size k
      in 1..g-1 drawn with probability ∝ (g-1)/(k(g-k)) — the total Shapley-kernel mass of
      that size — a uniform coalition of that size, and its complement. m <= n_samples for
      n_samples >= 4. Because rows are drawn from the kernel, the estimator weighs them equally.
    - ``lime`` (Ribeiro et al. 2016): row 0 keeps everything, then ``n_samples`` rows that each
      remove a uniformly random number (1..g) of uniformly random units, as in the paper.
    - ``sobol`` (Saltelli et al. 2010; Fel et al. 2021 for attribution): a scrambled Sobol'
      sequence of dimension 2g (``scipy.stats.qmc.Sobol(d=2*g, scramble=True, rng=seed)``)
      gives matrices A and B of n points, n = ``n_samples`` rounded *up* to a power of 2 (at
      least 2; Sobol' points keep their balance properties only in powers of 2). Values are
      thresholded at 0.5 (kept iff >= 0.5): units are kept or removed, a discrete
      perturbation, so each unit is an independent Bernoulli(1/2) input and Sobol' indices
      of that input distribution are well defined. Rows are ``[A; B; A_B^1; ...; A_B^g]``
      where A_B^i is A with column i taken from B; m = n (g + 2).

    ``params`` may hold ``ESTIMATOR_PARAMS`` (ignored here); anything else is a TypeError.
    ``n_units == 0`` gives a ``(0, 0)`` plan (no model call; estimators return empty vectors).

    Raises:
        ValueError: unknown ``method`` (lists ``PERTURBATION_METHODS``), negative ``n_units``,
            ``n_samples < 1``, or a sobol plan wider than scipy supports.
    """
    if method not in PERTURBATION_METHODS:
        raise ValueError(f"unknown perturbation method {method!r}; use one of {PERTURBATION_METHODS}")
    g = int(n_units)
    if g < 0:
        raise ValueError(f"n_units must be >= 0, got {n_units}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}; 64 is a reasonable default")
    unknown = set(params) - set(ESTIMATOR_PARAMS)
    if unknown:
        raise TypeError(f"make_masks got unknown parameters {sorted(unknown)}; it takes n_samples "
                        f"and seed, and ignores the estimator's {ESTIMATOR_PARAMS}")
    if g == 0:
        return MaskPlan(method, np.zeros((0, 0), dtype=bool), {"n_units": 0})
    builders = {
        "occlusion": _single_unit_removal,
        "feature_ablation": _single_unit_removal,
        "kernel_shap": _kernel_shap_masks,
        "lime": _lime_masks,
        "sobol": _sobol_masks,
    }
    masks, info = builders[method](g, int(n_samples), int(seed))
    info["n_units"] = g
    return MaskPlan(method, masks, info)


def _single_unit_removal(g: int, n_samples: int, seed: int) -> tuple[np.ndarray, dict]:
    masks = np.ones((g + 1, g), dtype=bool)
    masks[1 + np.arange(g), np.arange(g)] = False
    return masks, {}


def _random_subsets(rng: np.random.Generator, g: int, sizes: np.ndarray) -> np.ndarray:
    """(len(sizes), g) bool rows, row r a uniform random subset of exactly sizes[r] units."""
    ranks = np.argsort(np.argsort(rng.random((sizes.shape[0], g)), axis=1), axis=1)
    return ranks < sizes[:, None]


def _kernel_shap_masks(g: int, n_samples: int, seed: int) -> tuple[np.ndarray, dict]:
    if g == 1 or (g < 63 and 2**g <= n_samples):  # one unit: its 2 coalitions are all there is
        codes = np.arange(2**g, dtype=np.int64)
        masks = ((codes[:, None] >> np.arange(g)) & 1).astype(bool)
        return masks, {"exact": True}
    rng = np.random.default_rng(seed)
    n_pairs = max(1, (n_samples - 2) // 2)
    k = np.arange(1, g)
    size_p = (g - 1) / (k * (g - k))
    sizes = rng.choice(k, size=n_pairs, p=size_p / size_p.sum())
    drawn = _random_subsets(rng, g, sizes)
    pairs = np.stack([drawn, ~drawn], axis=1).reshape(2 * n_pairs, g)
    ends = np.array([np.zeros(g, dtype=bool), np.ones(g, dtype=bool)])
    return np.concatenate([ends, pairs]), {"exact": False, "n_pairs": n_pairs}


def _lime_masks(g: int, n_samples: int, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    n_removed = rng.integers(1, g + 1, size=n_samples)
    removed = _random_subsets(rng, g, n_removed)
    return np.concatenate([np.ones((1, g), dtype=bool), ~removed]), {}


def _sobol_masks(g: int, n_samples: int, seed: int) -> tuple[np.ndarray, dict]:
    from scipy.stats import qmc

    if 2 * g > _SOBOL_MAX_DIM:
        raise ValueError(f"sobol needs 2 * n_units <= {_SOBOL_MAX_DIM} dimensions, got n_units={g}; "
                         "explain coarser units (words or sentences) or use kernel_shap")
    log2_n = max(1, int(np.ceil(np.log2(n_samples))))
    n = 2**log2_n
    points = qmc.Sobol(d=2 * g, scramble=True, rng=seed).random_base2(log2_n) >= 0.5  # (n, 2g)
    a, b = points[:, :g], points[:, g:]
    a_b = np.repeat(a[None], g, axis=0)  # (g, n, g): A_B^i = A with column i from B
    a_b[np.arange(g), :, np.arange(g)] = b.T
    masks = np.concatenate([a, b, a_b.reshape(g * n, g)])
    return masks, {"n": n, "layout": "A;B;A_B^1..A_B^g"}


def distinct_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask rows a model must actually score, and where every row reads its score.

    Designs repeat rows: Sobol's ``A_B^i`` equals ``A`` wherever B's column i equals A's (half
    the rows on average), sampled KernelSHAP/LIME coalitions collide on short documents, and
    the all-kept row is the original, which the actor scores anyway. Identical masks give
    identical inputs, so scoring each distinct one once changes no score and saves those
    forwards (about 47% of Sobol's, 7% of KernelSHAP's and LIME's on rt-polarity words).

    Args:
        masks: ``(..., g)`` bool, True = unit kept, any leading shape.
    Returns:
        rows ``(r, g)`` bool: the distinct masks other than all-kept, in a fixed (sorted)
        order; index (the leading shape of ``masks``) int64 into ``[original, row 0, ...,
        row r-1]``, so ``scores[index]`` rebuilds every row's score.
    """
    masks = np.asarray(masks, dtype=bool)
    g = masks.shape[-1]
    if masks.size == 0:  # no rows, or no units (every row then keeps "everything")
        return np.zeros((0, g), dtype=bool), np.zeros(masks.shape[:-1], dtype=np.int64)
    flat = masks.reshape(-1, g)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    full = unique.all(axis=1)                            # (u,) the all-kept row, if any
    lookup = np.zeros(len(unique), dtype=np.int64)
    lookup[~full] = 1 + np.arange(int((~full).sum()))
    return unique[~full], lookup[inverse.reshape(-1)].reshape(masks.shape[:-1])
