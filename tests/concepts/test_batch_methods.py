"""Batch methods: fits and encodings checked against numpy, scipy and sklearn computed directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, DictionaryLearning, FastICA, SparsePCA, TruncatedSVD

from raypipe.concepts.batch_methods import fit_batch_method, nnls_codes, reconstruction_metrics

# sklearn's solvers stop early on these tiny problems; the tests check the numbers instead
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny matrices on 2 shared cores: extra threads only add contention (10-100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _signed(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)).astype(np.float32)


def _low_rank_nonneg(n, d=20, rank=3, seed=0, basis_seed=99):
    rng = np.random.default_rng(seed)
    basis = np.abs(np.random.default_rng(basis_seed).normal(size=(rank, d)))
    return (np.abs(rng.normal(size=(n, rank))) @ basis).astype(np.float32)


def _rel_err(model, x):
    return reconstruction_metrics(model, x)["relative_error"]


def test_pca_matches_numpy_svd_up_to_sign():
    x, new = _signed(), _signed(50, seed=1)
    model = fit_batch_method("pca", x, 4)
    mean = x.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    signs = np.sign(np.sum(model.dictionary.numpy() * vt[:4], axis=1))
    np.testing.assert_allclose(model.dictionary.numpy(), signs[:, None] * vt[:4], atol=1e-4)
    np.testing.assert_allclose(model.encode(new), ((new - mean) @ vt[:4].T) * signs, atol=1e-3)
    np.testing.assert_allclose(model.decode(model.encode(new)),
                               ((new - mean) @ vt[:4].T) @ vt[:4] + mean, atol=1e-3)


def test_pca_whiten_matches_sklearn():
    x, new = _signed(), _signed(50, seed=1)
    model = fit_batch_method("pca", x, 4, whiten=True)
    ref = PCA(4, whiten=True).fit(x)
    signs = np.sign(np.sum(model.dictionary.numpy() * ref.components_, axis=1))
    np.testing.assert_allclose(model.encode(new), ref.transform(new) * signs, atol=1e-3)
    z = model.encode(new)
    np.testing.assert_allclose(model.decode(z), ref.inverse_transform(z * signs), atol=1e-3)


def test_nnls_codes_match_scipy():
    rng = np.random.default_rng(1)
    for signed in (False, True):   # nmf dictionaries are >= 0, semi_nmf ones are signed
        d = rng.normal(size=(10, 24))
        d = d if signed else np.abs(d)
        x = rng.normal(size=(40, 24)) + 0.5
        z = nnls_codes(torch.tensor(x, dtype=torch.float32), torch.tensor(d, dtype=torch.float32))
        z = z.double().numpy()
        assert (z >= 0).all()
        ours = ((x - z @ d) ** 2).sum(1)
        ref = np.array([nnls(d.T, row)[1] ** 2 for row in x])
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_nmf_recovers_a_nonnegative_low_rank_matrix_and_encodes_new_rows():
    x, new = _low_rank_nonneg(200), _low_rank_nonneg(40, seed=1)
    model = fit_batch_method("nmf", x, 3)
    assert (model.dictionary >= 0).all()
    assert model.meta["metrics"]["relative_error"] < 0.02
    assert _rel_err(model, new) < 0.02
    assert (model.encode(new) >= 0).all()


def test_nmf_refuses_negative_input_and_names_the_fix():
    with pytest.raises(ValueError, match="semi_nmf"):
        fit_batch_method("nmf", _signed(), 3)


def test_semi_nmf_accepts_signed_data_with_nonnegative_codes():
    x = _signed()
    model = fit_batch_method("semi_nmf", x, 4, max_iter=200)
    codes = model.encode(_signed(40, seed=2))
    assert (codes >= 0).all() and (model.dictionary < 0).any()
    assert model.meta["metrics"]["relative_error"] < 1.0


def test_convex_nmf_encodes_new_rows_as_well_as_fitted_ones():
    x, new = _low_rank_nonneg(150), _low_rank_nonneg(50, seed=1)
    model = fit_batch_method("convex_nmf", x, 3, max_iter=150)
    fit_err, new_err = _rel_err(model, x), _rel_err(model, new)
    assert fit_err < 0.5
    assert new_err <= 1.5 * fit_err + 0.05
    assert model.encode(new).shape == (50, 3)


def test_kmeans_top_concept_is_the_nearest_centroid():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 6
    x = (centers[rng.integers(0, 3, 300)] + rng.normal(size=(300, 8))).astype(np.float32)
    model = fit_batch_method("kmeans", x, 3, n_init=2)
    ref = KMeans(3, n_init=2, random_state=0).fit(x)
    np.testing.assert_allclose(model.dictionary.numpy(), ref.cluster_centers_, atol=1e-4)

    new = (centers[rng.integers(0, 3, 60)] + 2 * rng.normal(size=(60, 8))).astype(np.float32)
    codes = model.encode(new)
    dist = ((new[:, None, :] - model.dictionary.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes.argmax(1), dist.argmin(1))
    assert ((codes > 0).sum(1) == 1).all(), "exactly one concept (the assignment) per row"
    scale = float(model.tensors["temperature"])
    np.testing.assert_allclose(codes.max(1), scale / (scale + dist.min(1)), rtol=1e-4)
    # decode gives the assigned centroid, for any positive scaling of the code
    np.testing.assert_allclose(model.decode(codes * 3.0), ref.cluster_centers_[ref.predict(new)],
                               atol=1e-4)
    assert codes.dtype == np.float32 and model.decode(codes).dtype == np.float32


def test_kmeans_concept_ranks_rows_by_closeness_to_its_centroid_and_fires_on_its_cluster():
    from raypipe.interpretation.top_activations import block_topk

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + [3.0, 0.0]])
    model = fit_batch_method("kmeans", x.astype(np.float32), 2, n_init=4)
    centroids = model.dictionary.numpy()
    k = int(np.argmin(centroids[:, 0]))                        # the cluster around (0, 0)
    outlier = centroids[k] + [-4.9, 0.0]                       # far side, still nearest to k
    rows = np.concatenate([x, [outlier], [centroids[k]]]).astype(np.float32)
    at_centroid, outlier_row = len(rows) - 1, len(rows) - 2

    top = block_topk(torch.from_numpy(model.encode(rows)), 0, 5)
    dist = np.linalg.norm(rows - centroids[k], axis=1)
    assigned = np.linalg.norm(rows[:, None] - centroids[None], axis=2).argmin(1) == k
    nearest_five = np.flatnonzero(assigned)[np.argsort(dist[assigned], kind="stable")[:5]]
    assert top.rows[k, 0] == at_centroid
    np.testing.assert_array_equal(top.rows[k], nearest_five)
    assert outlier_row not in top.rows[k] and dist[top.rows[k]].max() < 0.5
    # frequency = the share of rows assigned to the cluster (about half), not 100%
    assert top.fired[k] == assigned.sum() and top.fired[1 - k] == (~assigned).sum()
    assert 0.4 < top.fired[k] / len(rows) < 0.6


def test_ica_matches_sklearn_transform():
    rng = np.random.default_rng(0)
    x = (rng.laplace(size=(400, 4)) @ rng.normal(size=(4, 12))).astype(np.float32)
    new = x[:30] * 0.5 + 1.0
    model = fit_batch_method("ica", x, 4, max_iter=400)
    ref = FastICA(4, random_state=0, max_iter=400).fit(x)
    np.testing.assert_allclose(model.encode(new), ref.transform(new), atol=1e-3)
    z = model.encode(new)
    np.testing.assert_allclose(model.decode(z), ref.inverse_transform(z), atol=1e-3)


def test_svd_sparse_pca_and_dictionary_learning_match_sklearn_transform():
    x, new = _signed(120), _signed(20, seed=3)
    svd = fit_batch_method("svd", x, 4)
    ref = TruncatedSVD(4, random_state=0).fit(x)
    np.testing.assert_allclose(svd.encode(new), ref.transform(new), atol=1e-3)

    spca = fit_batch_method("sparse_pca", x, 4, sparsity=0.5)
    ref = SparsePCA(4, alpha=0.5, method="cd", tol=1e-3, random_state=0).fit(x)
    np.testing.assert_allclose(spca.encode(new), ref.transform(new), atol=1e-3)

    dl = fit_batch_method("dictionary_learning", x, 6, sparsity=0.3, max_iter=50)
    ref = DictionaryLearning(6, alpha=0.3, positive_code=True, fit_algorithm="cd",
                             transform_algorithm="lasso_cd", tol=1e-3, max_iter=50,
                             random_state=0).fit(x)
    np.testing.assert_allclose(dl.dictionary.numpy(), ref.components_, atol=1e-4)
    np.testing.assert_allclose(dl.encode(new), ref.transform(new), atol=1e-3)
    assert (dl.encode(new) >= 0).all()


@pytest.mark.parametrize("params, match", [
    (dict(bogus=1), "bogus"),
    (dict(random_state=3), "seed="),
    (dict(n_components=3), "n_concepts"),
])
def test_parameters_that_would_be_dropped_or_clash_are_errors(params, match):
    with pytest.raises(ValueError, match=match):
        fit_batch_method("pca", _signed(), 2, **params)


def test_sae_methods_and_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="sae_training"):
        fit_batch_method("topk_sae", _signed(), 2)
    with pytest.raises(ValueError, match="'nmf'"):
        fit_batch_method("nfm", _signed(), 2)


def test_seeded_fit_is_reproducible_and_leaves_global_rng_alone():
    x = _signed(100)
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    a = fit_batch_method("semi_nmf", x, 3, seed=1, max_iter=50)
    assert torch.equal(torch.rand(3), expected_next)
    b = fit_batch_method("semi_nmf", x, 3, seed=1, max_iter=50)
    c = fit_batch_method("semi_nmf", x, 3, seed=2, max_iter=50)
    assert torch.equal(a.dictionary, b.dictionary)
    assert not torch.equal(a.dictionary, c.dictionary)


def test_meta_records_the_fit():
    model = fit_batch_method("pca", _signed(), 3, svd_solver="full")
    assert model.meta["n_concepts"] == 3 and model.meta["dim"] == 16
    assert model.meta["fit_rows"] == 300 and model.meta["params"] == {"svd_solver": "full"}
    assert 0 < model.meta["metrics"]["r2"] < 1
