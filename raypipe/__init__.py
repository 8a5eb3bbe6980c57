"""raypipe: interpretability at corpus scale on Ray.

The public surface; heavy modules (torch, transformers, ray) load on first use, so
``import raypipe`` stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ActivationStore": "raypipe.store",
    "AttributionStore": "raypipe.store",
    "AttributeConfig": "raypipe.attribution.config",
    "attribute": "raypipe.attribution.pipeline",
    "ExtractConfig": "raypipe.config",
    "ExtractResult": "raypipe.extraction",
    "extract_activations": "raypipe.extraction",
    "get_activations": "raypipe.extraction.in_memory",
    "ConceptModel": "raypipe.concepts.concept_model",
    "FitConfig": "raypipe.concepts.fit_config",
    "fit_concepts": "raypipe.concepts.trainer",
    "SplitModel": "raypipe.models",
    "SplitPointError": "raypipe.models",
    "Granularity": "raypipe.granularity",
    "Aggregation": "raypipe.granularity",
    "open_corpus": "raypipe.corpus",
    "stdlib_docstrings": "raypipe.corpus",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")
