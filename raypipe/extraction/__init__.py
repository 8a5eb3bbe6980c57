"""The extraction job: corpus shards → tokenize (CPU tasks) → model actors → ActivationStore."""
from raypipe.extraction.pipeline import ExtractResult, extract_activations

__all__ = ["ExtractResult", "extract_activations"]
