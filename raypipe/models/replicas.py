"""Copies of a model that share its weights: one per forward lane of a CPU actor.

A copy is a second module tree (its own modules, so hooks or nnsight wrappers on one never
fire in the other) over the very same parameter and buffer tensors, so N lanes cost one
model's memory plus N small module trees. Inference only: nothing may write to the shared
tensors while lanes run.
"""
from __future__ import annotations

import copy
from itertools import chain

import torch


def can_share_weights(model: torch.nn.Module) -> bool:
    """False for a model that accelerate dispatched over devices (its hooks route each
    module's forward through the original module tree) or that nnsight already wrapped."""
    if getattr(model, "hf_device_map", None):
        return False
    return not any(hasattr(m, "_hf_hook") or "__nnsight__" in vars(m) for m in model.modules())


def shared_weight_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are ``model``'s own tensors."""
    if not can_share_weights(model):
        raise ValueError(f"{type(model).__name__} is dispatched over devices or already wrapped "
                         "by nnsight; copy it before wrapping, and run one lane when it is sharded")
    memo = {id(t): t for t in chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)
