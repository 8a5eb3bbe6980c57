"""How much each concept moves a model's output: gradients of one output w.r.t. concept codes.

This is interpreto's ``concept_output_gradient``: the concept dictionary is spliced into the
model at its split point, and the gradient of a chosen output (a class score, or the score of
the next token) is taken with respect to the concept activations instead of the hidden states.

The splice. At the split point the hidden states ``h`` ``(n, l, d)`` become

    c  = encode(h)                          # (n, l, K), detached and made a leaf
    h' = decode(c) + (h - decode(c)).detach()

``h'`` equals ``h`` in value (the reconstruction error is added back as a constant), so the
model's output is exactly that of a plain forward, whatever the dictionary's quality; but the
only path from ``c`` to the output runs through ``decode``, so ``d output / d c`` is the
gradient w.r.t. ``h`` pulled back through the dictionary: for a linear decoder
``decode(c) = (c * scale) @ D + mean``, ``d out / d c = ((d out / d h) @ D.T) * scale``.

Rows are independent (no batch statistics in eval mode), so one backward of the summed
per-row scores gives every row's own gradient. Shapes: ``n`` rows, ``l`` padded tokens,
``d`` hidden width, ``K`` concepts, ``C`` classes, ``V`` vocabulary.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from raypipe.attribution.scoring import (apply_mode, check_mode, class_logits, model_device,
                                         pools_last_token)
from raypipe.concepts.concept_model import ConceptModel
from raypipe.models.loading import is_causal_model
from raypipe.models.split_model import select_hidden_states
from raypipe.models.split_points import SplitPointError, resolve_split_points

PREDICTED = "predicted"


def concept_output_gradients(model: torch.nn.Module, concepts: ConceptModel, split_point: str | int,
                             input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                             target: int | str | Sequence[int] | torch.Tensor = PREDICTED,
                             mode: str = "logits", output_index: int = 0) -> dict[str, torch.Tensor]:
    """Gradients of one output per row w.r.t. the concept activations at ``split_point``.

    Args:
        model: a sequence classifier (logits ``(n, C)``) or a causal LM (logits ``(n, l, V)``),
            in eval mode.
        concepts: a dictionary over the split point's hidden states (``concepts.dim == d``).
        split_point: module path whose output is spliced (``encoder.layer.2``; a path of the
            bare model, as extraction stores it, is also found under the head model's
            ``base_model_prefix``), or a block index.
        input_ids, attention_mask: ``(n, l)``; padding may be on either side.
        target: the explained output per row. Classifier: a class index; causal LM: a token
            id, scored at the last real position. ``"predicted"`` takes the argmax there; a
            sequence / tensor of ``n`` ints gives one target per row.
        mode: ``"logits"``, ``"softmax"`` or ``"log_softmax"`` (normalised over classes /
            vocabulary before the target is taken).
        output_index: which element of a tuple-valued module output is the hidden state.

    Returns:
        float32 CPU tensors: ``token_gradients`` ``(n, l, K)`` (0 at padding), ``gradients``
        ``(n, K)`` (their sum over real tokens), ``concepts`` ``(n, l, K)`` the activations
        ``c`` (0 at padding), ``scores`` ``(n,)`` the explained output, and ``targets``
        ``(n,)`` int64.
    """
    check_mode(mode)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must both be (n, l)")
    path = module_path(model, split_point)
    device = model_device(model)
    splice = ConceptSplice(concepts, path, output_index)
    handle = model.get_submodule(path).register_forward_hook(splice)
    try:   # also when called under inference_mode (whose tensors cannot enter a backward)
        with torch.inference_mode(False), torch.enable_grad():
            ids, mask = input_ids.to(device).clone(), attention_mask.to(device).clone()
            if pools_last_token(model):  # a decoder classifier: each row's own last token
                logits = class_logits(model, mask, input_ids=ids)
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits = _explained_logits(model, logits, mask)                  # (n, C) or (n, V)
            targets = _targets(target, logits)
            scores = apply_mode(logits, mode).gather(1, targets[:, None])[:, 0]   # (n,)
            if splice.codes is None:
                raise SplitPointError(f"module {path!r} did not run in the forward pass; choose a "
                                      "split point before the model's head")
            (grad,) = torch.autograd.grad(scores.sum(), splice.codes)         # (n, l, K)
    finally:
        handle.remove()
    real = attention_mask.to(torch.float32)[:, :, None]                       # (n, l, 1)
    token_gradients = grad.detach().float().cpu() * real
    return {"token_gradients": token_gradients,
            "gradients": token_gradients.sum(1),
            "concepts": splice.codes.detach().float().cpu() * real,
            "scores": scores.detach().float().cpu(),
            "targets": targets.detach().cpu()}


class ConceptSplice:
    """Forward hook that swaps a module's hidden states for ``decode(c) + constant`` (see module doc).

    After the forward, ``codes`` holds the leaf ``c`` ``(n, l, K)`` that gradients are taken for.
    """

    def __init__(self, concepts: ConceptModel, path: str, output_index: int = 0) -> None:
        self.concepts = concepts
        self.path = path
        self.output_index = output_index
        self.codes: torch.Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = select_hidden_states(output, self.output_index, self.path)   # (n, l, d)
        if hidden.ndim != 3 or hidden.shape[-1] != self.concepts.dim:
            raise ValueError(f"split point {self.path!r} outputs {tuple(hidden.shape)}, but the "
                             f"concept model expects (n, l, {self.concepts.dim}): use the split "
                             "point the dictionary was fitted on")
        n, l, d = hidden.shape
        h = hidden.float()
        with torch.no_grad():
            codes = self.concepts.encode(h.detach().reshape(n * l, d)).reshape(n, l, -1)
        codes.requires_grad_(True)
        self.codes = codes
        decoded = self.concepts.decode(codes.reshape(n * l, -1)).reshape(n, l, d)
        spliced = (decoded + (h - decoded).detach()).to(hidden.dtype)
        return _replace_hidden(output, self.output_index, spliced)


def module_path(model: torch.nn.Module, split_point: str | int) -> str:
    """The module path of ``split_point`` in ``model``.

    A concept model fitted on a store extracted from the bare encoder names ``encoder.layer.2``,
    while the classifier holds it at ``bert.encoder.layer.2``: both spellings are accepted.
    """
    names = {name for name, _ in model.named_modules() if name}
    if isinstance(split_point, str) and split_point not in names:
        prefix = getattr(model, "base_model_prefix", "")
        if prefix and f"{prefix}.{split_point}" in names:
            return f"{prefix}.{split_point}"
        if prefix and split_point.startswith(prefix + ".") and split_point[len(prefix) + 1:] in names:
            return split_point[len(prefix) + 1:]
    return resolve_split_points(model, [split_point])[0]


def _replace_hidden(output: Any, index: int, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor (itself, or element ``index``) replaced."""
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple) and not hasattr(output, "to_tuple"):
        return output[:index] + (hidden,) + output[index + 1:]
    if isinstance(output, list):
        return output[:index] + [hidden] + output[index + 1:]
    raise SplitPointError(f"cannot splice into a {type(output).__name__} output; choose a module "
                          "that returns a tensor or a tuple (a transformer block)")


def _explained_logits(model: torch.nn.Module, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Classifier logits ``(n, C)`` as they are; LM logits ``(n, l, V)`` at each row's last real token."""
    if logits.ndim == 2:
        return logits
    if logits.ndim == 3 and is_causal_model(model):
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        last = (mask.long() * positions).argmax(1)                           # (n,)
        return logits[torch.arange(len(logits), device=logits.device), last]
    raise ValueError(f"{type(model).__name__} gives logits of shape {tuple(logits.shape)}; concept "
                     "gradients explain a sequence classifier (n, C) or a causal LM (n, l, V)")


def _targets(target: int | str | Sequence[int] | torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Target index per row ``(n,)`` int64 on logits' device; checked against ``logits`` ``(n, C)``."""
    n, width = logits.shape
    if isinstance(target, str):
        if target != PREDICTED:
            raise ValueError(f"target must be an int, a sequence of ints or {PREDICTED!r}, got {target!r}")
        return logits.detach().argmax(1)
    if isinstance(target, bool):
        raise ValueError(f"target must be an int, got the bool {target!r}")
    targets = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    if targets.ndim == 0:
        targets = targets.expand(n)
    if targets.shape != (n,):
        raise ValueError(f"target needs one index per row ({n}), got shape {tuple(targets.shape)}")
    bad = targets[(targets < 0) | (targets >= width)]
    if len(bad):
        raise ValueError(f"target {bad.tolist()} out of range: the model scores {width} "
                         "classes / tokens")
    return targets
