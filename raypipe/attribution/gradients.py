"""Gradient attributions of token scores through captum, on the input embeddings.

Token ids are discrete, so a gradient needs a continuous input: the word embeddings
``model.get_input_embeddings()(input_ids)`` ``(n, l, d)`` are the first continuous point of the
model and the last one that belongs to a single token (the model adds position / token-type
embeddings itself). captum attributes the score defined in `raypipe.attribution.scoring`
(the same function perturbation methods score with) to each embedding coordinate; the
``d`` coordinates of a token are then reduced to one signed token score ``(n, l)``.

Methods (captum class in brackets):

- ``saliency`` (Saliency, ``abs=False``): the signed gradient ``df/dx``.
- ``input_x_gradient`` (InputXGradient): ``x * df/dx``, a first-order estimate of what
  removing the embedding (setting it to 0) changes.
- ``integrated_gradients`` (IntegratedGradients, ``n_steps = n_samples``):
  ``(x - b) * mean_alpha df/dx(b + alpha (x - b))``. Its coordinates sum to ``f(x) - f(b)``
  (completeness), so with ``reduction="sum"`` the token scores do too.
- ``smooth_grad`` (NoiseTunnel(Saliency), ``nt_type="smoothgrad"``): the saliency averaged
  over ``n_samples`` copies of ``x`` with Gaussian noise (stdev: `noise_stdev`).
- ``gradient_shap`` (GradientShap): ``n_samples`` draws of a baseline ``b + noise`` and of a point
  between it and ``x``; the expected ``(x - b') * df/dx``.

The baseline ``b`` replaces the embedding of every non-special, non-padding token with that of
the baseline token (``"pad"`` by default) and keeps special tokens (CLS, SEP, BOS, ...) and
padding as they are: the explanation is about the content tokens, and the model still sees a
well-formed sequence.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from raypipe.attribution.scoring import (
    continuation_rows,
    check_class_indices,
    check_mode,
    class_scores_from_embeddings,
    continuation_scores_from_embeddings,
    model_device,
)

GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smooth_grad", "gradient_shap")
#: How the ``d`` coordinates of a token's attribution become one token score.
REDUCTIONS = ("sum", "l2", "abs_sum")
#: What a task explains: a class of a sequence classifier, or the tokens of a continuation.
KINDS = ("classification", "generation")
#: Named baseline tokens (an int is a token id); "zero" is the all-zero embedding.
BASELINE_TOKENS = ("pad", "mask", "unk", "zero")
#: The methods that integrate from a baseline; the others never build one.
BASELINE_METHODS = ("integrated_gradients", "gradient_shap")

#: Noise of smooth_grad and gradient_shap, in units of the standard deviation of the entries of
#: the model's embedding table: the noise vector's norm is then ~10% of a typical token
#: embedding's, so noisy inputs stay near their token. (SmoothGrad's rule of 10-20% of the
#: input *range* is measured here in standard deviations, which outlier dimensions of large
#: models do not inflate; 10-20% of a range is several times larger.)
NOISE_STDEV_FRACTION = 0.1
#: Most rows (documents x integration steps) one integrated-gradients forward pass holds.
IG_ROWS_PER_PASS = 64

_TABLE_STD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def gradient_attributions(
    method: str,
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target: int | torch.Tensor | None,
    *,
    kind: str = "classification",
    mode: str = "logits",
    n_samples: int = 16,
    seed: int = 0,
    baseline: str | int = "pad",
    reduction: str = "sum",
    tokenizer: Any = None,
    target_ids: torch.Tensor | None = None,
    batch_tokens: int | None = None,
) -> torch.Tensor:
    """Signed token scores of ``method`` for one document ``(1, l)`` or a batch ``(n, l)``.

    Args:
        target: classification: the class to explain, an int for every row or ``(n,)``.
            Generation: the continuation token ids ``(T,)`` / ``(n, T)`` (an int is a one-token
            continuation) when ``target_ids`` is not given.
        kind: "classification" (sequence classifier) or "generation" (causal LM).
        mode: the score differentiated, see `raypipe.attribution.scoring.MODES`.
        n_samples: integration steps (integrated_gradients) or noisy samples (smooth_grad,
            gradient_shap); unused by saliency and input_x_gradient.
        seed: seeds the noise of smooth_grad / gradient_shap. Each row is computed on its own
            with this seed, so a row's scores do not depend on the rest of its batch.
        baseline: baseline token of integrated_gradients / gradient_shap: "pad", "mask", "unk",
            a token id, or "zero" (zero embedding).
        reduction: "sum" over the embedding dimension (keeps the sign, and keeps IG's
            completeness: token scores sum to f(x) - f(b)), "l2" (norm) or "abs_sum".
            Note: a model that reads its embeddings only through LayerNorm (BERT, GPT-2)
            ignores a shift of all d coordinates, so its plain gradient sums to ~0 over d:
            for saliency / smooth_grad on such models use "l2" or "abs_sum". Methods that
            multiply by the input (input_x_gradient, IG, gradient_shap) are not affected.
        tokenizer: gives the special-token ids kept in the baseline and the baseline token ids;
            without it they come from ``model.config`` (pad / bos / eos / sep / cls ids).
        target_ids: generation continuation ``(T,)`` or ``(n, T)`` (e.g. from generate_target).
        batch_tokens: padded tokens one integrated-gradients pass may hold (forward and
            backward): its ``n x n_samples`` interpolated rows are cut into passes of at most
            ``max(n, batch_tokens // l)`` rows; None: `IG_ROWS_PER_PASS` rows.

    Returns:
        ``(n, l)`` for classification, ``(n, T, l)`` for generation (one gradient per
        continuation token), float32, 0 at padding positions, on ``input_ids``' device.

    Raises:
        ValueError: unknown method / kind / mode / reduction / baseline, or targets that do
            not fit the inputs.
    """
    _check_choice("method", method, GRADIENT_METHODS)
    _check_choice("kind", kind, KINDS)
    _check_choice("reduction", reduction, REDUCTIONS)
    check_mode(mode)
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    out_device = input_ids.device
    device = model_device(model)
    # inference_mode(False): a Ray actor may call this inside inference_mode, where no graph
    # can be built (and tensors made there cannot enter one: hence the clones below)
    with torch.inference_mode(False), torch.enable_grad():
        ids = _as_batch(input_ids, "input_ids").to(device).clone()  # (n, l)
        mask = _as_batch(attention_mask, "attention_mask").to(device).clone()  # (n, l)
        if ids.shape != mask.shape:
            raise ValueError(
                f"input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} differ in "
                "shape; pass the mask the tokenizer returned with these ids"
            )
        n = ids.shape[0]
        with torch.no_grad():
            embeds = model.get_input_embeddings()(ids).detach().clone()  # (n, l, d)
        # only the path methods read a baseline: saliency must not fail for want of a pad token
        base = (_baseline_embeddings(model, ids, mask, embeds, baseline, tokenizer)  # (n, l, d)
                if method in BASELINE_METHODS else None)
        noise = noise_stdev(model)

        if kind == "classification":
            classes = _class_targets(target, n).to(device)  # (n,)
            check_class_indices(classes, model)

            def forward(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # (B, C)
                return class_scores_from_embeddings(model, x, m, mode)

            attr = _run_method(
                method, forward, embeds, base, (mask,), classes, n_samples, seed, noise,
                batch_tokens,
            )  # (n, l, d)
            return (_reduce(attr, reduction) * mask).detach().to(out_device)

        continuation = _continuation(target, target_ids, n).to(device).clone()  # (n, T)

        def forward(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (B, T)
            return continuation_scores_from_embeddings(model, x, m, t, mode)

        per_token = [
            _reduce(
                _run_method(
                    method, forward, embeds, base, (mask, continuation), j, n_samples, seed, noise,
                    batch_tokens,
                ),
                reduction,
            )
            * mask
            for j in range(continuation.shape[1])
        ]
        return torch.stack(per_token, dim=1).detach().to(out_device)  # (n, T, l)


def noise_stdev(model: torch.nn.Module) -> float:
    """The Gaussian noise stdev smooth_grad and gradient_shap add to embeddings of ``model``."""
    return NOISE_STDEV_FRACTION * _embedding_table_std(model)


def baseline_embeddings(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    baseline: str | int = "pad",
    tokenizer: Any = None,
) -> torch.Tensor:
    """The baseline ``b`` ``(n, l, d)`` of ids ``(n, l)``: content tokens -> baseline token.

    Exposed so callers (and tests) can score ``f(b)`` and check completeness.
    """
    device = model_device(model)
    ids = _as_batch(input_ids, "input_ids").to(device)
    mask = _as_batch(attention_mask, "attention_mask").to(device)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return _baseline_embeddings(model, ids, mask, embeds, baseline, tokenizer)


# --- captum -------------------------------------------------------------------------------


def _run_method(
    method: str,
    forward: Callable[..., torch.Tensor],
    embeds: torch.Tensor,
    base: torch.Tensor | None,
    extra_args: tuple[torch.Tensor, ...],
    target: torch.Tensor | int,
    n_samples: int,
    seed: int,
    noise: float,
    batch_tokens: int | None = None,
) -> torch.Tensor:
    """Attribution ``(n, l, d)`` of ``forward(embeds, *extra_args)[:, target]`` under ``method``.

    ``extra_args[0]`` is the attention mask ``(n, l)``; further ones (the continuation) are
    per-row tensors passed through.
    """
    from captum.attr import (
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Saliency,
    )

    inputs = embeds.clone().requires_grad_(True)
    if method == "saliency":
        return Saliency(forward).attribute(
            inputs, target=_captum_target(target), abs=False, additional_forward_args=extra_args
        )
    if method == "input_x_gradient":
        return InputXGradient(forward).attribute(
            inputs, target=_captum_target(target), additional_forward_args=extra_args
        )
    if method == "integrated_gradients":
        n, length = embeds.shape[:2]
        per_pass = IG_ROWS_PER_PASS if batch_tokens is None else batch_tokens // max(length, 1)
        return IntegratedGradients(forward).attribute(
            inputs,
            baselines=base,
            target=_captum_target(target),
            additional_forward_args=extra_args,
            n_steps=n_samples,
            internal_batch_size=max(n, per_pass),  # captum takes no fewer rows than n
        )
    # stochastic methods: one row at a time, cut to its real tokens, each with the same seed, so
    # a row draws the same noise whatever its batch and padding
    rows = torch.zeros_like(embeds)
    for i in range(embeds.shape[0]):
        real = torch.nonzero(extra_args[0][i]).flatten()
        lo, hi = int(real.min()), int(real.max()) + 1
        row_input = inputs[i : i + 1, lo:hi]
        row_args = (extra_args[0][i : i + 1, lo:hi], *(a[i : i + 1] for a in extra_args[1:]))
        row_target = _captum_target(target if isinstance(target, int) else target[i : i + 1])
        with _seeded(seed, embeds.device):
            if method == "smooth_grad":
                row = NoiseTunnel(Saliency(forward)).attribute(
                    row_input,
                    nt_type="smoothgrad",
                    nt_samples=n_samples,
                    stdevs=float(noise),
                    target=row_target,
                    abs=False,
                    additional_forward_args=row_args,
                )
            else:
                row_base = base[i : i + 1, lo:hi]
                draws = row_base + noise * torch.randn(
                    (n_samples, *row_base.shape[1:]), device=base.device, dtype=base.dtype
                )  # (n_samples, hi - lo, d)
                row = GradientShap(forward).attribute(
                    row_input,
                    baselines=draws,
                    n_samples=n_samples,
                    stdevs=0.0,
                    target=row_target,
                    additional_forward_args=row_args,
                )
        rows[i, lo:hi] = row[0].detach()
    return rows


def _captum_target(target: torch.Tensor | int) -> int | list[int]:
    """captum reads an int as "this column for every row" and a list as one column per row."""
    return target if isinstance(target, int) else [int(t) for t in target.tolist()]


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (captum's noise) and numpy (captum's GradientShap draws), restoring both after."""
    devices = [device] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)


# --- baselines, targets, reduction --------------------------------------------------------


def _baseline_embeddings(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    embeds: torch.Tensor,
    baseline: str | int,
    tokenizer: Any,
) -> torch.Tensor:
    special = torch.tensor(_special_ids(model, tokenizer), dtype=ids.dtype, device=ids.device)
    keep = (mask == 0) | torch.isin(ids, special)  # (n, l) positions the baseline leaves alone
    if baseline == "zero":
        fill = torch.zeros_like(embeds)
    else:
        token = _baseline_token_id(model, tokenizer, baseline)
        with torch.no_grad():
            fill = model.get_input_embeddings()(torch.full_like(ids, token)).to(embeds.dtype)
    return torch.where(keep[..., None], embeds, fill).detach()


def _baseline_token_id(model: torch.nn.Module, tokenizer: Any, baseline: str | int) -> int:
    if isinstance(baseline, bool) or not isinstance(baseline, (str, int)):
        raise ValueError(f"baseline={baseline!r}; use one of {BASELINE_TOKENS} or a token id (int)")
    if isinstance(baseline, int):
        vocab = model.get_input_embeddings().weight.shape[0]
        if not 0 <= baseline < vocab:
            raise ValueError(f"baseline token id {baseline} is outside the vocabulary [0, {vocab})")
        return baseline
    _check_choice("baseline", baseline, BASELINE_TOKENS)
    attribute = f"{baseline}_token_id"
    token = getattr(tokenizer, attribute, None) if tokenizer is not None else None
    if token is None:
        token = getattr(getattr(model, "config", None), attribute, None)
    if token is None:
        raise ValueError(
            f"baseline={baseline!r} but neither the tokenizer nor model.config defines {attribute}; "
            "pass tokenizer=, a token id as baseline=, or baseline='zero'"
        )
    return int(token)


def _special_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    if tokenizer is not None and getattr(tokenizer, "all_special_ids", None) is not None:
        return sorted({int(i) for i in tokenizer.all_special_ids})
    config = getattr(model, "config", None)
    names = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
    found: set[int] = set()
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return sorted(found)


def _embedding_table_std(model: torch.nn.Module) -> float:
    """Std of the embedding table's entries, cached per embedding module (one pass over V x d)."""
    embedding = model.get_input_embeddings()
    if embedding not in _TABLE_STD:
        with torch.no_grad():
            _TABLE_STD[embedding] = float(embedding.weight.float().std())
    return _TABLE_STD[embedding]


def _class_targets(target: int | torch.Tensor | None, n: int) -> torch.Tensor:
    if target is None:
        raise ValueError("target=None for kind='classification'; pass a class index (int) or (n,) "
                         "tensor, e.g. predicted_classes(model, input_ids, attention_mask)")
    classes = torch.as_tensor(target).long()
    if classes.ndim == 0:
        classes = classes.expand(n)
    if classes.ndim != 1 or classes.shape[0] != n:
        raise ValueError(
            f"target has shape {tuple(classes.shape)}; classification takes an int or one class per "
            f"row, shape ({n},)"
        )
    return classes


def _continuation(
    target: int | torch.Tensor | None, target_ids: torch.Tensor | None, n: int
) -> torch.Tensor:
    """The ``(n, T)`` continuation: ``target_ids`` if given, else ``target`` read as token ids."""
    if target_ids is None and target is None:
        raise ValueError("kind='generation' needs the continuation: pass target_ids=(T,) token ids, "
                         "e.g. from generate_target(model, tokenizer, input_ids[0], max_new_tokens)")
    if target_ids is None:
        return continuation_rows(_token_ids(target), n)
    continuation = continuation_rows(_token_ids(target_ids), n)
    if target is not None:
        given = continuation_rows(_token_ids(target), n)
        if given.shape != continuation.shape or not torch.equal(given, continuation):
            raise ValueError("kind='generation' got both target and target_ids and they differ; "
                             "pass the continuation once, as target_ids")
    return continuation


def _token_ids(ids: int | torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(ids).long()
    return ids.reshape(1) if ids.ndim == 0 else ids


def _reduce(attr: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(..., l, d)`` -> ``(..., l)`` float32."""
    attr = attr.float()
    if reduction == "sum":
        return attr.sum(dim=-1)
    if reduction == "l2":
        return attr.norm(dim=-1)
    return attr.abs().sum(dim=-1)


def _as_batch(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.ndim == 1:
        return tensor[None, :]
    if tensor.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected (l,) or (n, l)")
    return tensor


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; use one of {valid}")
