"""Perturbation attribution: masks over a document's units, perturbed inputs, estimators.

The flow per document is ``make_masks`` (CPU) → ``perturbed_inputs`` (token ids, packed into
batches on model actors) → model scores → ``estimate`` (CPU). All of it is pure numpy.
"""

from raypipe.attribution.estimators import estimate
from raypipe.attribution.masks import (
    ESTIMATOR_PARAMS,
    PERTURBATION_METHODS,
    MaskPlan,
    doc_seed,
    make_masks,
)
from raypipe.attribution.perturb import BASELINES, perturbed_inputs, resolve_baseline

__all__ = [
    "BASELINES",
    "ESTIMATOR_PARAMS",
    "PERTURBATION_METHODS",
    "MaskPlan",
    "doc_seed",
    "estimate",
    "make_masks",
    "perturbed_inputs",
    "resolve_baseline",
]
