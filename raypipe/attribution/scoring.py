"""Score batches of (perturbed) inputs for chosen targets: the model side of every attribution.

Perturbation estimators (occlusion, Shapley, LIME, Sobol) only need one number per input row
and target: ``classification_scores`` gives it for a sequence classifier (a class logit or
probability), ``generation_scores`` for a causal LM (the score of each token of a fixed
continuation). Gradient methods (`raypipe.attribution.gradients`) differentiate the same scores,
so both go through the ``*_from_embeddings`` functions here: one definition of "the score".

Shapes: ``n`` rows, ``l`` prompt tokens, ``T`` targets, ``C`` classes, ``V`` vocabulary, ``d``
embedding width.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

#: How logits become scores. "logits" keeps raw logits (additive, unbounded: good for
#: completeness checks); "softmax" gives probabilities; "log_softmax" log-probabilities (the
#: natural score of a generated continuation).
MODES = ("logits", "softmax", "log_softmax")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of `MODES`, else raise ValueError naming the valid ones."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    return mode


def apply_mode(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Turn logits ``(..., K)`` into scores ``(..., K)`` under ``mode`` (normalised over the last dim).

    Computed in float32 so half-precision models do not lose the small differences between
    perturbed inputs that attributions are made of.
    """
    check_mode(mode)
    logits = logits.float()
    if mode == "softmax":
        return torch.softmax(logits, dim=-1)
    if mode == "log_softmax":
        return torch.log_softmax(logits, dim=-1)
    return logits


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the input embeddings live: inputs must go there (also with a sharded device_map)."""
    return model.get_input_embeddings().weight.device


# --- classification -----------------------------------------------------------------------


def pools_last_token(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a decoder classifier: it scores the last token of the sequence.

    transformers' decoder classifiers (GPT-2, Llama, Mistral, Qwen, ... ``ForSequenceClassification``)
    apply a head named ``score`` at every position and keep the last one; encoder classifiers
    (BERT, RoBERTa, ...) pool [CLS] through ``classifier``.
    """
    return (type(model).__name__.endswith("ForSequenceClassification")
            and isinstance(getattr(model, "score", None), torch.nn.Module))


def class_logits(model: torch.nn.Module, attention_mask: torch.Tensor, *,
                 input_ids: torch.Tensor | None = None,
                 inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Class logits ``(n, C)`` of a batch of right-padded rows (ids or embeddings ``(n, l, d)``).

    A decoder classifier is read at each row's last attended position, here rather than by
    transformers: given embeddings it cannot see the padding and reads position ``l - 1`` of
    every row (a pad for the shorter ones), and without ``pad_token_id`` in its config (GPT-2)
    it refuses batches of more than one row. A padded batch then scores each row exactly as
    the row alone, for perturbations (ids) and gradients (embeddings) alike.
    """
    inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if not pools_last_token(model):
        return model(attention_mask=attention_mask, **inputs).logits
    hidden = model.base_model(attention_mask=attention_mask, **inputs).last_hidden_state  # (n, l, h)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.bool()).argmax(dim=1).to(hidden.device)  # (n,)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (n, h)
    return model.score(pooled)


def class_scores_from_embeddings(
    model: torch.nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, mode: str
) -> torch.Tensor:
    """Scores of every class ``(n, C)`` from word embeddings ``(n, l, d)`` and mask ``(n, l)``.

    Takes embeddings rather than ids so gradients can flow to the input (ids are discrete);
    the model adds its own position / token-type embeddings on top, as with ids.
    """
    return apply_mode(class_logits(model, attention_mask, inputs_embeds=inputs_embeds), mode)


def predicted_classes(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The class the model predicts for each row ``(n,)``: the default target to explain."""
    device = model_device(model)
    with torch.inference_mode():
        logits = class_logits(model, attention_mask.to(device), input_ids=input_ids.to(device))
    return logits.argmax(dim=-1).to(input_ids.device)


def classification_scores(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    mode: str = "logits",
) -> torch.Tensor:
    """Scores ``(n, T)`` of the classes ``targets`` ``(n, T)`` for ids / mask ``(n, l)``.

    Softmax and log-softmax are taken over all class logits before the targets are gathered,
    so a probability means the same thing whichever targets are asked for. A 1-D ``targets``
    ``(n,)`` is read as one target per row and gives ``(n, 1)``.
    """
    check_mode(mode)
    device = model_device(model)
    targets = _as_row_targets(targets, input_ids.shape[0], name="targets").to(device)
    check_class_indices(targets, model)
    with torch.inference_mode():
        logits = class_logits(model, attention_mask.to(device), input_ids=input_ids.to(device))
        scores = apply_mode(logits, mode).gather(1, targets)
    return scores.to(input_ids.device)


# --- generation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuationLayout:
    """Where each row's prompt and continuation sit in the joined sequence ``(n, l + T)``.

    The real prompt tokens are packed to the left in their order, the continuation follows
    right after the last real token, padding fills the rest: each row is then exactly its
    unpadded sequence (default positions 0, 1, ... are right), whatever padding the prompt had.
    """

    source_index: torch.Tensor
    """(n, l + T) index into ``cat([prompt, continuation], dim=1)`` for each joined position."""
    attention_mask: torch.Tensor
    """(n, l + T) 1 on prompt and continuation tokens, 0 on padding."""
    predict_positions: torch.Tensor
    """(n, T) the joined position whose logits predict continuation token j."""


def continuation_layout(attention_mask: torch.Tensor, n_targets: int) -> ContinuationLayout:
    """Build the `ContinuationLayout` of prompts with mask ``(n, l)`` and ``n_targets`` tokens.

    Raises:
        ValueError: a row has no real token (nothing would predict the first target).
    """
    mask = attention_mask.bool()
    n, length = mask.shape
    lengths = mask.sum(dim=1)  # (n,)
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(
            f"rows {empty} of attention_mask have no real token; a continuation needs at least "
            "one prompt token (e.g. BOS) before it: drop those rows or prepend a token"
        )
    # real tokens first, in their order (stable sort of "is padding")
    real_first = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (n, l)
    positions = torch.arange(length + n_targets, device=mask.device).expand(n, -1)  # (n, L)
    lengths_ = lengths[:, None]
    in_prompt = positions < lengths_
    in_continuation = (positions >= lengths_) & (positions < lengths_ + n_targets)
    prompt_source = real_first.gather(1, positions.clamp(max=length - 1))
    continuation_source = length + (positions - lengths_).clamp(0, max(n_targets - 1, 0))
    pad_source = torch.zeros_like(positions)  # any index: masked out
    source = torch.where(in_prompt, prompt_source, torch.where(in_continuation, continuation_source, pad_source))
    predict = lengths_ - 1 + torch.arange(n_targets, device=mask.device)[None, :]
    return ContinuationLayout(
        source_index=source,
        attention_mask=(in_prompt | in_continuation).to(attention_mask.dtype),
        predict_positions=predict,
    )


def continuation_scores_from_embeddings(
    model: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    target_ids: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Scores ``(n, T)`` of continuation ``target_ids`` ``(n, T)`` after prompts ``(n, l, d)``.

    Differentiable in ``prompt_embeds``: the joined sequence is gathered from the prompt and
    the continuation's embeddings. Only the logits at the ``T`` predicting positions are
    projected onto the vocabulary when the model takes ``logits_to_keep`` (an ``(n, L, V)``
    logit tensor is the memory peak of a long prompt on a large vocabulary).
    """
    check_mode(mode)
    n, _, width = prompt_embeds.shape
    n_targets = target_ids.shape[1]
    layout = continuation_layout(attention_mask, n_targets)
    target_embeds = model.get_input_embeddings()(target_ids).to(prompt_embeds.dtype)  # (n, T, d)
    joined = torch.cat([prompt_embeds, target_embeds], dim=1)  # (n, l + T, d)
    joined = joined.gather(1, layout.source_index[..., None].expand(-1, -1, width))
    kwargs: dict[str, Any] = {}
    positions = layout.predict_positions
    if _takes_logits_to_keep(model):
        first, last = int(positions.min()), int(positions.max())
        kwargs["logits_to_keep"] = torch.arange(first, last + 1, device=joined.device)
        positions = positions - first
    logits = model(inputs_embeds=joined, attention_mask=layout.attention_mask, **kwargs).logits
    picked = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))  # (n, T, V)
    return apply_mode(picked, mode).gather(2, target_ids[..., None]).squeeze(-1)


def generation_scores(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_ids: torch.Tensor,
    mode: str = "log_softmax",
) -> torch.Tensor:
    """Score ``(n, T)`` of each continuation token after each prompt row ``(n, l)``.

    ``target_ids`` is ``(T,)`` (the same continuation for every row: rows are perturbations of
    one document) or ``(n, T)``. Entry ``[i, j]`` is the ``mode`` score of token ``t_j`` at the
    position that predicts it, given the prompt of row ``i`` and ``t_0 .. t_{j-1}`` (teacher
    forcing). Exact under any padding of the prompts: see `ContinuationLayout`.
    """
    check_mode(mode)
    device = model_device(model)
    target_ids = continuation_rows(target_ids, input_ids.shape[0]).to(device)
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(input_ids.to(device))
        scores = continuation_scores_from_embeddings(
            model, embeds, attention_mask.to(device), target_ids, mode
        )
    return scores.to(input_ids.device)


def generate_target(
    model: torch.nn.Module, tokenizer: Any, input_ids: torch.Tensor, max_new_tokens: int
) -> torch.Tensor:
    """The model's greedy continuation ``(T,)`` of one prompt ``(l,)`` (T <= max_new_tokens).

    What a generation attribution explains by default: the text the model itself would write.
    Stops early at the end-of-sequence token.
    """
    if input_ids.ndim != 1:
        raise ValueError(
            f"generate_target takes one prompt of shape (l,), got shape {tuple(input_ids.shape)}; "
            "pass input_ids[i] with its padding removed"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    device = model_device(model)
    prompt = input_ids.to(device)[None, :]
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None)
    with torch.inference_mode():
        output = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
        )
    return output[0, prompt.shape[1]:].to(input_ids.device)


def check_class_indices(targets: torch.Tensor, model: torch.nn.Module) -> None:
    """Raise ValueError if a class index is outside ``[0, num_labels)`` of the model's config."""
    n_classes = getattr(getattr(model, "config", None), "num_labels", None)
    if n_classes is None or targets.numel() == 0:
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"class targets range over [{low}, {high}] but the model has {n_classes} classes; "
            f"use indices in [0, {n_classes - 1}] (e.g. from predicted_classes)"
        )


# --- helpers ------------------------------------------------------------------------------


def _as_row_targets(targets: torch.Tensor, n_rows: int, *, name: str) -> torch.Tensor:
    """``(n, T)`` long targets from ``(n, T)`` or ``(n,)``."""
    targets = torch.as_tensor(targets).long()
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n_rows:
        raise ValueError(
            f"{name} has shape {tuple(targets.shape)}; expected ({n_rows}, T) class indices, one row "
            "of targets per input row"
        )
    return targets


def continuation_rows(target_ids: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``(n, T)`` long continuation ids from ``(T,)`` (shared by all rows) or ``(n, T)``."""
    target_ids = torch.as_tensor(target_ids).long()
    if target_ids.ndim == 1:
        target_ids = target_ids[None, :].expand(n_rows, -1)
    if target_ids.ndim != 2 or target_ids.shape[0] != n_rows or target_ids.shape[1] == 0:
        raise ValueError(
            f"target_ids has shape {tuple(target_ids.shape)}; expected (T,) or ({n_rows}, T) "
            "token ids with T >= 1 (e.g. from generate_target)"
        )
    return target_ids


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
