"""Apply unit masks to a document's token ids: one perturbed copy of the document per mask row.

A removed unit is either *replaced* (every token of the unit becomes one baseline token:
[MASK], the pad/eos token, [UNK] or any id) or *removed* (the tokens stay but get attention
mask 0, so the model cannot attend to them while positions — and thus batch shapes — stay
put). Special tokens are units only at ``all_tokens`` granularity (their text is the token
string, their span (0, 0)); at every other granularity they are never touched. The output has one row per
mask row, ready to be packed into token-budget batches with other documents' rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

BASELINES = ("mask", "pad", "unk", "remove")
"""The named baselines; an int token id is accepted too."""


def _special_id(source: Any, name: str) -> int | None:
    """``{name}_token_id`` of a tokenizer, or of a dict keyed ``"mask_token_id"`` or ``"mask"``."""
    if isinstance(source, Mapping):
        value = source.get(f"{name}_token_id", source.get(name))
    else:
        value = getattr(source, f"{name}_token_id", None)
    return None if value is None else int(value)


def _describe(source: Any) -> str:
    if isinstance(source, Mapping):
        return f"special_ids {dict(source)!r}"
    return f"tokenizer {getattr(source, 'name_or_path', '') or type(source).__name__!r}"


def resolve_baseline(baseline: str | int, tokenizer: Any) -> int | None:
    """The token id that replaces removed units, or None for ``"remove"`` (attention mask 0).

    ``tokenizer`` is a HuggingFace tokenizer or a dict of special ids (``{"mask_token_id": 103,
    ...}`` or ``{"mask": 103, ...}``), so actors can resolve without shipping a tokenizer.
    ``"pad"`` falls back to eos because decoder tokenizers (GPT-2, Llama) have no pad token.

    Raises:
        ValueError: an unknown baseline name, a negative id, or a tokenizer without the token
            asked for (e.g. ``"unk"`` on a tokenizer without one), naming it and suggesting an
            alternative. ``"mask"`` on a tokenizer without a mask token (GPT-2) is mapped to
            ``"pad"`` before this, by ``perturb_stage.effective_baseline``.
    """
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        if int(baseline) < 0:
            raise ValueError(f"baseline token id must be >= 0, got {baseline}")
        return int(baseline)
    if baseline == "remove":
        return None
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; use one of {BASELINES} or an int token id")
    if tokenizer is None:
        raise ValueError(f"baseline {baseline!r} needs a tokenizer or special_ids to look the id up; "
                         "pass one, or give the token id as an int, or use 'remove'")
    token_id = _special_id(tokenizer, baseline)
    if token_id is None and baseline == "pad":
        token_id = _special_id(tokenizer, "eos")
    if token_id is None:
        what = "neither a pad nor an eos token" if baseline == "pad" else f"no {baseline} token"
        raise ValueError(f"{_describe(tokenizer)} has {what}, so baseline {baseline!r} cannot be "
                         "used; use 'pad', 'remove' or an int token id instead")
    return token_id


def _unit_of_position(members: list[np.ndarray], length: int) -> np.ndarray:
    """(l,) int64: the unit each token position belongs to, -1 for positions in no unit."""
    unit_of = np.full(length, -1, dtype=np.int64)
    for j, positions in enumerate(members):
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= length):
            raise ValueError(f"unit {j} has token positions {positions.tolist()} outside the "
                             f"document's {length} tokens; build members from the same input_ids")
        if np.any(unit_of[positions] >= 0):
            clash = positions[unit_of[positions] >= 0]
            raise ValueError(f"unit {j} shares token positions {clash.tolist()} with unit "
                             f"{int(unit_of[clash[0]])}; units must be disjoint")
        unit_of[positions] = j
    return unit_of


def perturbed_inputs(input_ids: np.ndarray, members: list[np.ndarray], masks: np.ndarray, *,
                     baseline: str | int, tokenizer: Any = None,
                     special_ids: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One perturbed copy of the document per mask row.

    Args:
        input_ids: (l,) int64 token ids of one document (no padding).
        members: g arrays of token positions, unit j = ``members[j]``; disjoint, special tokens
            never included.
        masks: (m, g) bool, True = unit kept (``MaskPlan.masks``).
        baseline: ``"mask"``, ``"pad"``, ``"unk"``, an int id, or ``"remove"``.
        tokenizer / special_ids: where named baselines are looked up (``special_ids`` wins).

    Returns:
        ids (m, l) int64 and attention_mask (m, l) int64. With ``"remove"`` the ids are the
        original ones and removed positions have attention 0; otherwise removed positions hold
        the baseline id and attention is all ones.
    """
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != len(members):
        raise ValueError(f"masks must be (m, g={len(members)}) for {len(members)} units, got shape "
                         f"{masks.shape}; pass the MaskPlan made for this document's units")
    replacement = resolve_baseline(baseline, special_ids if special_ids is not None else tokenizer)
    unit_of = _unit_of_position(members, ids.shape[0])
    in_unit = unit_of >= 0
    removed = np.zeros((masks.shape[0], ids.shape[0]), dtype=bool)  # (m, l)
    removed[:, in_unit] = ~masks[:, unit_of[in_unit]]
    if replacement is None:
        return np.broadcast_to(ids, removed.shape).copy(), (~removed).astype(np.int64)
    out = np.where(removed, np.int64(replacement), ids[None, :])
    return out, np.ones(removed.shape, dtype=np.int64)


def start_token_id(tokenizer: Any) -> int:
    """The token a causal model's empty input is made of: BOS, else EOS (GPT-2's
    ``<|endoftext|>`` is both), else pad, else 0."""
    for name in ("bos", "eos", "pad"):
        token_id = _special_id(tokenizer, name)
        if token_id is not None:
            return int(token_id)
    return 0


def delete_removed(ids: np.ndarray, attention: np.ndarray, start_id: int) -> np.ndarray:
    """A causal model's row perturbed with ``remove``: the removed tokens deleted, not masked.

    An encoder reads a masked-out position nowhere (others do not attend to it, [CLS] is
    pooled), but a decoder reads its last position, whose own token embedding stays in the
    residual stream even when the attention mask hides it. Deleting removed tokens is what
    "without these units" means for a left-to-right model (the continuation of a generation
    then follows the last kept token, see ``scoring.ContinuationLayout``). With nothing kept
    (KernelSHAP's empty coalition, a one-unit prompt) the row is ``start_id`` alone, the
    empty prompt of a model whose tokenizer adds no BOS (GPT-2).
    """
    kept = np.asarray(ids)[np.asarray(attention).astype(bool)]
    return kept if len(kept) else np.asarray([start_id], dtype=np.int64)
