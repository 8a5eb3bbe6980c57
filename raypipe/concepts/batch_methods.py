"""Fit batch (optimisation) concept dictionaries, and encode/decode with what the fit left.

Batch methods need all their rows at once: they are fitted with overcomplete 0.3.0 on a
reservoir sample of the store (see ``reservoir``). What a fit keeps is a handful of tensors,
not the sklearn/overcomplete object: a ``ConceptModel`` then encodes new rows with pure tensor
math, survives save/load without pickling, and runs on any device. Per method:

============  =======================================  ==========================================
method        tensors kept (``dictionary`` is (K, d))  encode (n, d) -> (n, K)
============  =======================================  ==========================================
pca           dictionary = components, mean, scale     ``(x - mean) @ D.T / scale`` (sklearn's
              (sqrt(explained variance) if whiten,     transform); decode ``(z * scale) @ D + mean``
              else ones)
svd           dictionary = components                  ``x @ D.T``; decode ``z @ D`` (no centring,
                                                       as TruncatedSVD)
ica           dictionary = mixing.T, unmixing, mean    ``(x - mean) @ unmixing.T``; decode
                                                       ``z @ D + mean``. The dictionary is the
                                                       mixing matrix, what one unit of a concept
                                                       adds to x (overcomplete returns the
                                                       unmixing rows instead)
kmeans        dictionary = centroids, temperature      hard assignment times a similarity: row i
              (the similarity scale s)                 gets ``s / (s + ||x_i - c_k||^2)`` for its
                                                       nearest centroid k and 0 elsewhere, so a
                                                       concept fires on exactly the rows assigned
                                                       to it (frequency = cluster share) and its
                                                       top inputs are the rows nearest its
                                                       centroid. decode normalises the codes:
                                                       ``(z / sum z) @ D``, the assigned centroid.
                                                       s defaults to the fit's mean squared
                                                       distance to the nearest centroid (param
                                                       ``temperature``). Distances (interpreto)
                                                       would rank the farthest inputs first, and
                                                       a softmax over clusters ranks the rows far
                                                       from the *other* centroids (outliers) first
nmf           dictionary (>= 0)                        non-negative least squares (NNLS) against D
semi_nmf      dictionary (signed)                      NNLS: Semi-NMF (Ding et al. 2010) keeps the
                                                       codes >= 0 and lets D take any sign; plain
                                                       least squares would give negative codes it
                                                       never fits
convex_nmf    dictionary = W @ A                       NNLS against D (overcomplete's own encode
                                                       fails on rows it was not fitted on). W
                                                       (K, n_fit) is dropped: decode needs only D
sparse_pca    dictionary = components, mean            ridge regression on the components with
                                                       sklearn's ``ridge_alpha`` (its transform);
                                                       decode ``z @ D + mean``
dictionary_   dictionary = atoms                       sklearn ``sparse_encode`` with the fit's
learning                                               transform algorithm/alpha, positive codes
============  =======================================  ==========================================

``nmf`` needs non-negative rows. ``convex_nmf`` does not (Convex-NMF is defined for signed data,
and overcomplete's solvers handle it), nor does ``semi_nmf``.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raypipe.concepts.methods import BATCH_METHODS, SAE_METHODS, check_method

if TYPE_CHECKING:  # concept_model imports this module for the codecs; import it lazily here
    from raypipe.concepts.concept_model import ConceptModel

# Methods whose encode runs outside torch (sklearn's ``sparse_encode`` for dictionary_learning):
# no gradient can flow from their codes back to x, so ConceptModel.encode refuses an x that
# asks for one instead of returning codes that silently cut the graph.
NON_DIFFERENTIABLE_ENCODE = ("dictionary_learning",)
NNLS_MAX_ITER = 1000
NNLS_TOL = 1e-6          # stop when the step is this small relative to the codes (Frobenius)
METRIC_ROWS = 4096       # rows of the fit sample used for the reconstruction metrics


@dataclass(frozen=True)
class _MethodSpec:
    """How one batch method maps onto overcomplete (and sklearn, for the Sk* wrappers)."""
    overcomplete_class: str
    sklearn_class: str | None = None          # "module:Class" whose params the wrapper forwards
    fixed: dict[str, str] = field(default_factory=dict)   # param -> why it cannot be set
    extra: tuple[str, ...] = ()               # params raypipe handles itself


_ALWAYS_FIXED = {
    "n_components": "use n_concepts=",
    "n_clusters": "use n_concepts=",
    "nb_concepts": "use n_concepts=",
    "random_state": "use seed=",
    "device": "the fit runs where x is (pass a CUDA tensor to fit on GPU)",
}
_TORCH_FIT = ("max_iter",)
_SPECS = {
    "nmf": _MethodSpec("NMF", extra=_TORCH_FIT),
    "semi_nmf": _MethodSpec("SemiNMF", extra=_TORCH_FIT),
    "convex_nmf": _MethodSpec("ConvexNMF", extra=_TORCH_FIT),
    "pca": _MethodSpec("SkPCA", "sklearn.decomposition:PCA"),
    "ica": _MethodSpec("SkICA", "sklearn.decomposition:FastICA"),
    "kmeans": _MethodSpec("SkKMeans", "sklearn.cluster:KMeans", extra=("temperature",)),
    "svd": _MethodSpec("SkSVD", "sklearn.decomposition:TruncatedSVD"),
    "sparse_pca": _MethodSpec("SkSparsePCA", "sklearn.decomposition:SparsePCA", fixed={
        "alpha": "use sparsity=", "tol": "use tolerance=", "method": "use fit_method="}),
    "dictionary_learning": _MethodSpec(
        "SkDictionaryLearning", "sklearn.decomposition:DictionaryLearning", fixed={
            "alpha": "use sparsity=", "tol": "use tolerance=",
            "positive_code": "overcomplete fixes it to True",
            "split_sign": "not supported: it doubles the number of codes"}),
}


def fit_batch_method(method: str, x: np.ndarray | torch.Tensor, n_concepts: int, *,
                     seed: int = 0, **params: Any) -> "ConceptModel":
    """Fit ``method`` with ``n_concepts`` concepts on rows ``x`` (n, d) and return the model.

    ``params`` go to the overcomplete class (and through it to sklearn); unknown names are an
    error. ``seed`` seeds sklearn's ``random_state`` and torch's RNG (the global RNG is left as
    it was). The model's ``meta`` holds n_concepts, dim, seed, params, fit_rows and ``metrics``
    (reconstruction of up to 4096 fit rows through encode/decode).
    """
    from raypipe.concepts.concept_model import ConceptModel

    check_method(method)
    if method in SAE_METHODS:
        raise ValueError(f"{method!r} is a sparse autoencoder, trained by streaming over the store "
                         "(raypipe.concepts.sae_training), not by fit_batch_method; batch methods "
                         f"are: {', '.join(BATCH_METHODS)}")
    if isinstance(n_concepts, bool) or not isinstance(n_concepts, (int, np.integer)) or n_concepts < 1:
        raise ValueError(f"n_concepts must be a positive int, got {n_concepts!r}")
    x = _check_rows(x)
    _check_params(method, params)
    fit = _fit_torch if method in ("nmf", "semi_nmf", "convex_nmf") else _fit_sklearn
    tensors, codec = fit(method, x, int(n_concepts), seed, dict(params))
    meta = {"n_concepts": int(n_concepts), "dim": int(x.shape[1]), "seed": seed,
            "params": dict(params), "fit_rows": int(x.shape[0])}
    if codec:
        meta["codec"] = codec
    model = ConceptModel(method, tensors, meta)
    model.meta["metrics"] = reconstruction_metrics(model, _metric_rows(x, seed))
    return model


def required_tensors(method: str) -> tuple[str, ...]:
    """Names of the tensors a batch-method ``ConceptModel`` must hold."""
    return {
        "pca": ("dictionary", "mean", "scale"),
        "ica": ("dictionary", "mean", "unmixing"),
        "kmeans": ("dictionary", "temperature"),
        "sparse_pca": ("dictionary", "mean"),
    }.get(method, ("dictionary",))


def encode_codes(method: str, tensors: dict[str, torch.Tensor], codec: dict,
                 x: torch.Tensor) -> torch.Tensor:
    """Codes (n, K) of rows ``x`` (n, d) float32; ``tensors`` are on x's device."""
    d = tensors["dictionary"]
    if method == "pca":
        return (x - tensors["mean"]) @ d.T / tensors["scale"]
    if method == "svd":
        return x @ d.T
    if method == "ica":
        return (x - tensors["mean"]) @ tensors["unmixing"].T
    if method == "kmeans":
        return kmeans_codes(x, d, tensors["temperature"])
    if method in ("nmf", "semi_nmf", "convex_nmf"):
        return nnls_codes(x, d)
    if method == "sparse_pca":
        centred = x - tensors["mean"]
        ridge = d @ d.T + codec["ridge_alpha"] * torch.eye(d.shape[0], dtype=d.dtype, device=d.device)
        return torch.linalg.solve(ridge, d @ centred.T).T
    if method == "dictionary_learning":
        from sklearn.decomposition import sparse_encode

        codes = sparse_encode(x.detach().cpu().numpy(), d.cpu().numpy(), **codec)
        return torch.from_numpy(np.asarray(codes, dtype=np.float32)).to(x.device)
    raise ValueError(f"no batch codec for method {method!r}; batch methods: {', '.join(BATCH_METHODS)}")


def decode_codes(method: str, tensors: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Rows (n, d) rebuilt from codes (n, K): ``(codes * scale) @ dictionary + mean``; kmeans
    codes are normalised to sum to 1 first (an all-zero row decodes to 0)."""
    if method == "kmeans":
        total = codes.sum(1, keepdim=True)
        codes = codes / torch.where(total != 0, total, torch.ones_like(total))
    if "scale" in tensors:
        codes = codes * tensors["scale"]
    out = codes @ tensors["dictionary"]
    if "mean" in tensors:
        out = out + tensors["mean"]
    return out


def kmeans_codes(x: torch.Tensor, centroids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KMeans codes (n, K) of rows x (n, d): one non-zero per row, at its nearest centroid.

    The value ``scale / (scale + ||x - c||^2)`` is 1 at the centroid and falls with the distance
    (1/2 at ``sqrt(scale)``; a Cauchy kernel rather than ``exp`` so that a far row keeps a
    positive code and still counts as firing). Per concept, rows then rank by closeness to its
    centroid, which is what "top inputs of a cluster" should mean.
    """
    sq_dist = (x * x).sum(1, keepdim=True) - 2 * x @ centroids.T + (centroids * centroids).sum(1)
    nearest = sq_dist.argmin(1, keepdim=True)                            # (n, 1)
    # the assigned distance directly: the expanded form above loses digits near the centroid
    own = (x - centroids[nearest[:, 0]]).square().sum(1, keepdim=True)  # (n, 1)
    similarity = scale / (scale + own)
    return torch.zeros_like(sq_dist).scatter(1, nearest, similarity)


def nnls_codes(x: torch.Tensor, dictionary: torch.Tensor, max_iter: int = NNLS_MAX_ITER,
               tol: float = NNLS_TOL) -> torch.Tensor:
    """``argmin_{z >= 0} ||x - z @ dictionary||^2`` for every row: x (n, d), dictionary (K, d).

    Accelerated projected gradient (FISTA) on the (K, K) Gram matrix, with per-row adaptive
    restart, started from the clipped least-squares solution. All rows advance together, so it
    is a few (n, K) x (K, K) matmuls per step on any device, unlike a per-row scipy loop.
    """
    gram = dictionary @ dictionary.T                                  # (K, K)
    target = x @ dictionary.T                                         # (n, K)
    lipschitz = torch.linalg.eigvalsh(gram)[-1].clamp_min(1e-12)
    z = (target @ torch.linalg.pinv(gram, hermitian=True)).clamp_min(0)
    y = z
    t = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    for _ in range(max_iter):
        z_next = (y - (y @ gram - target) / lipschitz).clamp_min(0)
        step = z_next - z
        restart = ((y - z_next) * step).sum(1, keepdim=True) > 0     # momentum points uphill
        t_next = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        beta = torch.where(restart, torch.zeros_like(t), (t - 1) / t_next)
        t = torch.where(restart, torch.ones_like(t), t_next)
        y = z_next + beta * step
        z = z_next
        if float(step.norm()) <= tol * max(float(z.norm()), 1e-12):
            break
    return z


def reconstruction_metrics(model: "ConceptModel", x: np.ndarray | torch.Tensor) -> dict[str, float]:
    """How well ``model`` rebuilds rows x (n, d): relative error, R^2, mean non-zero codes."""
    x = torch.as_tensor(x, dtype=torch.float32)
    codes = model.encode(x)
    err = float((x - model.decode(codes)).square().sum())
    total = float(x.square().sum())
    spread = float((x - x.mean(0)).square().sum())
    return {"relative_error": math.sqrt(err / total) if total > 0 else 0.0,
            "r2": 1.0 - err / spread if spread > 0 else 0.0,
            "mean_active_concepts": float((codes.abs() > 1e-8).float().sum(1).mean()),
            "rows": int(x.shape[0])}


def _fit_torch(method: str, x: torch.Tensor, n_concepts: int, seed: int,
               params: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """nmf / semi_nmf / convex_nmf with overcomplete's torch solvers, on x's device."""
    if method == "nmf" and bool((x < 0).any()):
        n_neg = int((x < 0).sum())
        raise ValueError(
            f"nmf needs non-negative activations, but x has {n_neg} negative values (min "
            f"{float(x.min()):.4g}): use a split point after a ReLU/GELU-like non-negative "
            "output, clip with x.clamp(min=0), or use method='semi_nmf' or 'convex_nmf', "
            "which accept signed data")
    opt = _optimization()
    max_iter = params.pop("max_iter", 500)
    with _seeded_torch(seed, x.device):
        model = getattr(opt, _SPECS[method].overcomplete_class)(n_concepts, device=x.device, **params)
        model.fit(x, max_iter=max_iter)
    dictionary = model.get_dictionary().detach()
    if not bool(torch.isfinite(dictionary).all()):
        raise FloatingPointError(f"{method} diverged (non-finite dictionary); lower the learning "
                                 "rate/solver settings, scale the activations, or try solver='mu'")
    return {"dictionary": dictionary}, {}


def _fit_sklearn(method: str, x: torch.Tensor, n_concepts: int, seed: int,
                 params: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The Sk* wrappers: fit, then keep the fitted sklearn model's arrays as tensors."""
    temperature = params.pop("temperature", None)
    wrapper = getattr(_optimization(), _SPECS[method].overcomplete_class)(
        n_concepts, random_state=seed, **params)
    x_np = x.detach().cpu().numpy()
    wrapper.fit(x_np)
    sk = wrapper.model
    d = x_np.shape[1]
    codec: dict = {}
    if method == "pca":
        scale = np.sqrt(sk.explained_variance_) if sk.whiten else np.ones(n_concepts)
        arrays = {"dictionary": sk.components_, "mean": sk.mean_, "scale": scale}
    elif method == "svd":
        arrays = {"dictionary": sk.components_}
    elif method == "ica":
        mean = sk.mean_ if sk.whiten else np.zeros(d)
        arrays = {"dictionary": sk.mixing_.T, "unmixing": sk.components_, "mean": mean}
    elif method == "kmeans":
        if temperature is None:   # the similarity scale: mean squared distance to the nearest
            # centroid (a typical member scores 1/2), floored
            temperature = max(sk.inertia_ / len(x_np), 1e-6 * float(np.mean(x_np ** 2)), 1e-12)
        elif not temperature > 0:
            raise ValueError(f"kmeans temperature must be > 0, got {temperature!r}")
        arrays = {"dictionary": sk.cluster_centers_, "temperature": np.float32(temperature)}
    elif method == "sparse_pca":
        arrays = {"dictionary": sk.components_, "mean": sk.mean_}
        codec = {"ridge_alpha": float(sk.ridge_alpha)}
    else:  # dictionary_learning: encode exactly as sklearn's transform does
        arrays = {"dictionary": sk.components_}
        codec = {"algorithm": sk.transform_algorithm,
                 "alpha": float(sk.alpha if sk.transform_alpha is None else sk.transform_alpha),
                 "n_nonzero_coefs": sk.transform_n_nonzero_coefs,
                 "max_iter": int(sk.transform_max_iter), "positive": bool(sk.positive_code)}
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)).contiguous()
               for k, v in arrays.items()}
    return tensors, codec


def _check_rows(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """x as a float32 (n, d) tensor (on its own device), finite, with at least 2 rows."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
    t = t.detach().to(torch.float32)
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 1:
        raise ValueError(f"x must be (rows, dim) with at least 2 rows, got shape {tuple(t.shape)}")
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ValueError(f"x has {bad} non-finite values (NaN/inf); drop or fix those rows first")
    return t.contiguous()


def _check_params(method: str, params: dict) -> None:
    """Reject parameters overcomplete/sklearn would drop silently or that raypipe sets itself."""
    spec = _SPECS[method]
    fixed = {**_ALWAYS_FIXED, **spec.fixed}
    for name in params:
        if name in fixed:
            raise ValueError(f"parameter {name!r} cannot be set for {method!r}: {fixed[name]}")
    wrapper = getattr(_optimization(), spec.overcomplete_class)
    allowed = set(inspect.signature(wrapper.__init__).parameters) | set(spec.extra)
    if spec.sklearn_class:
        module, name = spec.sklearn_class.split(":")
        allowed |= set(getattr(importlib.import_module(module), name)._get_param_names())
    allowed -= {"self", "kwargs", *fixed}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for method {method!r}; "
                         f"accepted: {', '.join(sorted(allowed))}")


def _metric_rows(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded subset of at most METRIC_ROWS rows (all rows when fewer)."""
    if x.shape[0] <= METRIC_ROWS:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], METRIC_ROWS, replace=False))
    return x[torch.from_numpy(idx).to(x.device)]


def _optimization():
    from raypipe.concepts.overcomplete_import import import_overcomplete

    return import_overcomplete("optimization")


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for a fit without changing the caller's global RNG state."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
