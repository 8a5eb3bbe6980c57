"""The names of the concept-extraction methods raypipe knows, and the check that a name is one.

Two families, because they are fitted differently: sparse autoencoders are trained by streaming
over the whole ActivationStore (``sae_training``), batch (optimisation) methods need all their
rows at once and are fitted on a reservoir sample (``batch_methods``). Both are saved and used
through ``ConceptModel``.
"""
from __future__ import annotations

import difflib

SAE_METHODS = ("relu_sae", "topk_sae", "batchtopk_sae", "jumprelu_sae", "mp_sae")
BATCH_METHODS = ("nmf", "semi_nmf", "convex_nmf", "pca", "ica", "kmeans", "svd", "sparse_pca",
                 "dictionary_learning")
ALL_METHODS = SAE_METHODS + BATCH_METHODS

# overcomplete.sae class that implements each SAE method (trainer builds it, ConceptModel rebuilds it)
SAE_CLASS_NAMES = {
    "relu_sae": "SAE",
    "topk_sae": "TopKSAE",
    "batchtopk_sae": "BatchTopKSAE",
    "jumprelu_sae": "JumpSAE",
    "mp_sae": "MpSAE",
}


def check_method(name: str) -> str:
    """Return ``name`` if it is a known method; otherwise raise ValueError with the choices."""
    if isinstance(name, str) and name in ALL_METHODS:
        return name
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name.lower().replace("-", "_"), ALL_METHODS, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    raise ValueError(f"unknown concept method {name!r}{hint}; choose one of: "
                     f"{', '.join(ALL_METHODS)}")
