"""Mask designs: shapes, determinism, and the structure each estimator relies on."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from raypipe.attribution import PERTURBATION_METHODS, MaskPlan, doc_seed, make_masks
from raypipe.attribution.masks import distinct_masks


@pytest.mark.parametrize("method", PERTURBATION_METHODS)
def test_masks_are_deterministic_and_bool(method):
    a = make_masks(method, 6, n_samples=32, seed=3)
    b = make_masks(method, 6, n_samples=32, seed=3)
    assert isinstance(a, MaskPlan) and a.method == method
    assert a.masks.dtype == bool and a.masks.shape[1] == 6 == a.n_units
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.info == b.info


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "sobol"])
def test_random_designs_change_with_the_seed(method):
    a = make_masks(method, 12, n_samples=32, seed=0).masks
    b = make_masks(method, 12, n_samples=32, seed=1).masks
    assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.parametrize("method", PERTURBATION_METHODS)
def test_no_units_gives_an_empty_plan(method):
    plan = make_masks(method, 0)
    assert plan.masks.shape == (0, 0)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="kernel_shap"):
        make_masks("shapley", 3)


def test_unknown_parameter_is_rejected_but_estimator_parameters_pass():
    with pytest.raises(TypeError, match="widht"):
        make_masks("lime", 3, widht=0.3)
    assert make_masks("lime", 3, kernel_width=0.3, alpha=2.0).masks.shape == (65, 3)


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation"])
def test_occlusion_removes_one_unit_per_row(method):
    masks = make_masks(method, 4).masks
    expected = np.ones((5, 4), dtype=bool)
    for j in range(4):
        expected[1 + j, j] = False
    np.testing.assert_array_equal(masks, expected)


def test_kernel_shap_exact_enumerates_every_coalition_once():
    plan = make_masks("kernel_shap", 5, n_samples=32)
    assert plan.info["exact"] is True and plan.masks.shape == (32, 5)
    codes = plan.masks.astype(int) @ (1 << np.arange(5))
    assert sorted(codes.tolist()) == list(range(32))


def test_kernel_shap_sampled_has_ends_and_antithetic_pairs():
    plan = make_masks("kernel_shap", 8, n_samples=64, seed=2)
    m = plan.masks
    assert plan.info["exact"] is False and m.shape == (64, 8)
    assert not m[0].any() and m[1].all()
    pairs = m[2:].reshape(-1, 2, 8)
    np.testing.assert_array_equal(pairs[:, 0], ~pairs[:, 1])
    sizes = m[2:].sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 7


def test_kernel_shap_sizes_follow_the_kernel_mass():
    g = 16  # 2**16 > n_samples: the sampled regime
    plan = make_masks("kernel_shap", g, n_samples=20002, seed=0)
    assert not plan.info["exact"]
    drawn = plan.masks[2::2].sum(axis=1)  # first of each pair: the drawn coalition
    k = np.arange(1, g)
    expected = (1 / (k * (g - k))) / (1 / (k * (g - k))).sum()
    observed = np.bincount(drawn, minlength=g)[1:] / drawn.size
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_lime_rows_remove_between_one_and_all_units():
    plan = make_masks("lime", 7, n_samples=400, seed=0)
    m = plan.masks
    assert m.shape == (401, 7) and m[0].all()
    removed = (~m[1:]).sum(axis=1)
    assert removed.min() == 1 and removed.max() == 7
    # uniform number removed: every count 1..7 appears roughly 400/7 times
    assert np.bincount(removed, minlength=8)[1:].min() > 30


def test_sobol_layout_and_power_of_two():
    g = 3
    plan = make_masks("sobol", g, n_samples=20, seed=0)
    n = plan.info["n"]
    assert n == 32 and plan.masks.shape == (n * (g + 2), g)
    a, b = plan.masks[:n], plan.masks[n:2 * n]
    for i in range(g):
        a_b = plan.masks[(2 + i) * n:(3 + i) * n]
        np.testing.assert_array_equal(a_b[:, i], b[:, i])
        np.testing.assert_array_equal(np.delete(a_b, i, axis=1), np.delete(a, i, axis=1))
    # thresholded scrambled Sobol' points: each unit kept in about half the rows of A and B
    assert np.all(np.abs(np.concatenate([a, b]).mean(axis=0) - 0.5) < 0.1)


def test_doc_seed_is_stable_and_distinguishes_documents():
    expected = int.from_bytes(hashlib.blake2b(b"7\x1fdoc-3", digest_size=8).digest(), "little")
    assert doc_seed(7, "doc-3") == expected & ((1 << 63) - 1)
    assert doc_seed(7, 3) == doc_seed(7, "3")
    seeds = {doc_seed(7, i) for i in range(100)} | {doc_seed(8, 0)}
    assert len(seeds) == 101 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("method", ["sobol", "kernel_shap", "lime", "occlusion"])
def test_distinct_masks_rebuild_every_row_without_repeats(method):
    plan = make_masks(method, 4, n_samples=16, seed=1)
    rows, index = distinct_masks(plan.masks)
    assert len(np.unique(rows, axis=0)) == len(rows), "each distinct mask once"
    assert not rows.all(axis=1).any(), "the all-kept mask is the original, never a row"
    table = np.concatenate([np.ones((1, 4), bool), rows])
    np.testing.assert_array_equal(table[index], plan.masks)
    if method == "sobol":  # 4 units: 2**4 possible masks, 16 * (4 + 2) rows asked for
        assert len(rows) < 16 and len(index) == 96


def test_distinct_masks_of_an_empty_plan():
    rows, index = distinct_masks(np.zeros((0, 0), bool))
    assert rows.shape == (0, 0) and index.shape == (0,)
