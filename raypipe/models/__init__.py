"""Models: load a HuggingFace model and read its activations at split points."""

from raypipe.models.loading import ModelLoadError, load_model_and_tokenizer
from raypipe.models.split_model import SplitModel
from raypipe.models.split_points import SplitPointError, find_block_list, resolve_split_points

__all__ = [
    "ModelLoadError",
    "SplitModel",
    "SplitPointError",
    "find_block_list",
    "load_model_and_tokenizer",
    "resolve_split_points",
]
