"""Gradient attributions against plain autograd, completeness, seeding, padding, a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.attribution.gradients import (
    GRADIENT_METHODS,
    baseline_embeddings,
    gradient_attributions,
)
from raypipe.attribution.scoring import classification_scores, generation_scores

TEXTS = ["the cat sat on the mat", "a dog runs"]
PROMPTS = ["the cat sat on", "once upon"]
CONTINUATION = torch.tensor([100, 101, 102])  # (T,) ids every tiny vocabulary has


def _manual_class_gradient(model, ids, mask, target: int) -> torch.Tensor:
    """Reference: d logit[target] / d word embeddings ``(n, l, d)`` by plain autograd."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    (grad,) = torch.autograd.grad(logits[:, target].sum(), embeds)
    return grad, embeds.detach()


def test_saliency_and_input_x_gradient_equal_plain_autograd(bert_classifier, encode):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    grad, embeds = _manual_class_gradient(model, ids, mask, target=1)
    l2 = gradient_attributions("saliency", model, ids, mask, 1, reduction="l2")
    assert l2.shape == ids.shape
    torch.testing.assert_close(l2, grad.norm(dim=-1) * mask, rtol=1e-4, atol=1e-6)
    assert l2[mask == 1].min() > 1e-3, "degenerate test: gradients vanish"
    abs_sum = gradient_attributions("saliency", model, ids, mask, 1, reduction="abs_sum")
    torch.testing.assert_close(abs_sum, grad.abs().sum(-1) * mask, rtol=1e-4, atol=1e-6)
    ixg = gradient_attributions("input_x_gradient", model, ids, mask, 1, tokenizer=tokenizer)
    torch.testing.assert_close(ixg, (grad * embeds).sum(-1) * mask, rtol=1e-4, atol=1e-6)
    assert ixg[mask == 1].abs().min() > 1e-4
    # BERT layer-normalises the embeddings first, and LayerNorm ignores a shift of all d
    # coordinates: the gradient sums to 0 over d, so signed saliency with "sum" is ~0 here
    signed = gradient_attributions("saliency", model, ids, mask, 1, tokenizer=tokenizer)
    torch.testing.assert_close(signed, grad.sum(-1) * mask, rtol=1e-4, atol=1e-6)
    assert signed.abs().max() < 1e-4 * l2.max()


@pytest.mark.parametrize(("lm", "reduction"), [("llama_lm", "sum"), ("gpt2_lm", "l2")])
def test_generation_saliency_equals_autograd_on_unpadded_rows(request, encode, lm, reduction):
    """One gradient per continuation token; a padded row equals its unpadded computation.

    GPT-2 reads its embeddings only through LayerNorms (gradient sums to ~0 over d, see
    above), so it is checked with "l2"; Llama's RMSNorm does not centre, so "sum" is checked.
    """
    model, tokenizer = request.getfixturevalue(lm)
    reduce = {"sum": lambda g: g.sum(-1), "l2": lambda g: g.norm(dim=-1)}[reduction]
    batch = encode(tokenizer, PROMPTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    scores = gradient_attributions("saliency", model, ids, mask, None, kind="generation",
                                   mode="log_softmax", target_ids=CONTINUATION, reduction=reduction)
    assert scores.shape == (2, len(CONTINUATION), ids.shape[1])
    embedding = model.get_input_embeddings()
    for i in range(2):
        real = ids[i][mask[i].bool()]
        prompt = embedding(real).detach().requires_grad_(True)  # (l_i, d)
        sequence = torch.cat([prompt, embedding(CONTINUATION).detach()])[None]
        log_probs = torch.log_softmax(model(inputs_embeds=sequence).logits[0], dim=-1)
        for j, token in enumerate(CONTINUATION):
            (grad,) = torch.autograd.grad(log_probs[len(real) - 1 + j, token], prompt, retain_graph=True)
            expected = reduce(grad)
            assert expected.abs().max() > 1e-2, "degenerate test: gradients vanish"
            torch.testing.assert_close(scores[i, j, : len(real)], expected, rtol=1e-4, atol=1e-6)
        assert torch.all(scores[i, :, len(real):] == 0)


def test_integrated_gradients_completeness_classification(bert_classifier, encode):
    """Token scores (reduction="sum") add up to f(x) - f(baseline).

    f(baseline) is scored independently, from ids where every content token is [PAD]. With 64
    Gauss-Legendre steps on this tiny model the measured gap is ~1e-7 for a change of ~0.2-1;
    the test allows 0.1% of |f(x) - f(b)| + 1e-4.
    """
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    target = torch.tensor([0, 1])
    scores = gradient_attributions("integrated_gradients", model, ids, mask, target,
                                   n_samples=64, tokenizer=tokenizer)
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (mask == 0)
    baseline_ids = torch.where(special, ids, tokenizer.pad_token_id)
    f_x = classification_scores(model, ids, mask, target[:, None])[:, 0]
    f_b = classification_scores(model, baseline_ids, mask, target[:, None])[:, 0]
    change = f_x - f_b
    assert change.abs().min() > 1e-2, "degenerate test: baseline scores like the input"
    torch.testing.assert_close(scores.sum(1), change, rtol=1e-3, atol=1e-4)
    # special tokens are kept in the baseline: they get nothing
    assert torch.all(scores[special] == 0)
    # the exposed baseline is what the ids-based reference fed the model
    embedded = model.get_input_embeddings()(baseline_ids)
    torch.testing.assert_close(baseline_embeddings(model, ids, mask, tokenizer=tokenizer), embedded)


def test_integrated_gradients_completeness_generation(llama_lm, encode):
    """Same check for each continuation token of a causal LM (log-probabilities).

    Measured gap with 64 steps: ~1e-6 (5e-5 with 32, 4e-3 with 16) for changes of 0.03-1;
    the test allows 0.1% + 1e-4.
    """
    model, tokenizer = llama_lm
    batch = encode(tokenizer, PROMPTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    scores = gradient_attributions("integrated_gradients", model, ids, mask, CONTINUATION,
                                   kind="generation", mode="log_softmax", n_samples=64,
                                   tokenizer=tokenizer)
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (mask == 0)
    baseline_ids = torch.where(special, ids, tokenizer.pad_token_id)
    change = (generation_scores(model, ids, mask, CONTINUATION)
              - generation_scores(model, baseline_ids, mask, CONTINUATION))  # (n, T)
    assert change.abs().min() > 1e-2, "degenerate test: baseline scores like the input"
    torch.testing.assert_close(scores.sum(-1), change, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["smooth_grad", "gradient_shap"])
def test_stochastic_methods_are_seeded(bert_classifier, encode, method):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS[:1])
    args = (method, model, batch["input_ids"], batch["attention_mask"], 1)
    # "l2" for smooth_grad: its signed sum is ~0 on BERT (LayerNorm, see the saliency test)
    options = {"tokenizer": tokenizer, "reduction": "l2" if method == "smooth_grad" else "sum"}
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = gradient_attributions(*args, n_samples=8, seed=3, **options)
    again = gradient_attributions(*args, n_samples=8, seed=3, **options)
    other = gradient_attributions(*args, n_samples=8, seed=4, **options)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 0.05 * first.abs().max()
    # the caller's random streams are left as they were
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == numpy_state).all()
    # more samples, less seed-to-seed spread (both are Monte Carlo averages)
    many = [gradient_attributions(*args, n_samples=64, seed=s, **options) for s in (3, 4)]
    assert (many[0] - many[1]).abs().max() < (first - other).abs().max()


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_batch_equals_rows_and_padding_is_zero(bert_classifier, encode, method):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    reduction = "l2" if method in ("saliency", "smooth_grad") else "sum"  # see the saliency test
    options = {"n_samples": 8, "tokenizer": tokenizer, "reduction": reduction}
    together = gradient_attributions(method, model, ids, mask, torch.tensor([1, 0]), **options)
    assert together.shape == ids.shape and together.dtype == torch.float32
    assert torch.all(together[mask == 0] == 0)
    assert not together.requires_grad
    content = (mask == 1) & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert together[content].abs().min() > 1e-4
    for i, target in enumerate([1, 0]):
        length = int(mask[i].sum())
        alone = gradient_attributions(method, model, ids[i, :length], mask[i, :length], target, **options)
        torch.testing.assert_close(together[i, :length], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_the_deciding_token_ranks_first(presence_task, method):
    """Class 1 <=> marker present: the marker must carry the largest attribution of class 1."""
    task = presence_task
    generator = torch.Generator().manual_seed(1)
    ids = task.sample(6, 8, generator, torch.ones(6, dtype=torch.bool))
    mask = torch.ones_like(ids)
    reduction = "l2" if method == "saliency" else "sum"  # a gradient's size, IG's signed share
    scores = gradient_attributions(method, task.model, ids, mask, 1, n_samples=32, reduction=reduction)
    top = scores.argmax(dim=1)
    assert torch.equal(ids[torch.arange(6), top], torch.full((6,), task.marker)), (scores, ids)


def test_works_when_called_under_inference_mode(bert_classifier, gpt2_lm, encode):
    """A Ray actor may wrap its whole call in inference_mode; the gradients must still flow."""
    for (model, tokenizer), kind, target in [(bert_classifier, "classification", 1),
                                              (gpt2_lm, "generation", CONTINUATION[:2])]:
        batch = encode(tokenizer, TEXTS)
        options = {"kind": kind, "mode": "log_softmax", "reduction": "l2", "tokenizer": tokenizer}
        expected = gradient_attributions("saliency", model, batch["input_ids"],
                                         batch["attention_mask"], target, **options)
        with torch.inference_mode():
            ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
            inferred = gradient_attributions("saliency", model, ids, mask, target.clone()
                                             if torch.is_tensor(target) else target, **options)
        torch.testing.assert_close(inferred, expected)


def test_invalid_arguments_name_the_valid_choices(bert_classifier, encode):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    args = (model, batch["input_ids"], batch["attention_mask"], 1)
    with pytest.raises(ValueError, match="integrated_gradients"):
        gradient_attributions("deeplift", *args)
    with pytest.raises(ValueError, match="log_softmax"):
        gradient_attributions("saliency", *args, mode="probs")
    with pytest.raises(ValueError, match="abs_sum"):
        gradient_attributions("saliency", *args, reduction="max")
    with pytest.raises(ValueError, match="generation"):
        gradient_attributions("saliency", *args, kind="regression")
    with pytest.raises(ValueError, match="'zero'"):
        gradient_attributions("integrated_gradients", *args, baseline="blank")
    with pytest.raises(ValueError, match=r"\(2,\)"):
        gradient_attributions("saliency", *args[:3], torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="target_ids"):
        gradient_attributions("saliency", *args[:3], None, kind="generation")


def test_integrated_gradients_passes_hold_the_token_budget(bert_classifier, encode):
    """n x n_samples interpolated rows are cut into passes of max(n, batch_tokens // l) rows
    (a GPU holds forward *and* backward activations of each pass); the scores do not change."""
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n, length = ids.shape
    rows_per_pass = []
    handle = model.register_forward_pre_hook(
        lambda _m, args, kwargs: rows_per_pass.append(kwargs["inputs_embeds"].shape[0]),
        with_kwargs=True)
    try:
        default = gradient_attributions("integrated_gradients", model, ids, mask, 1,
                                        n_samples=16, tokenizer=tokenizer)
        assert max(rows_per_pass) == n * 16        # 32 rows: within the default 64 a pass
        rows_per_pass.clear()
        small = gradient_attributions("integrated_gradients", model, ids, mask, 1, n_samples=16,
                                      tokenizer=tokenizer, batch_tokens=4 * length)
    finally:
        handle.remove()
    assert max(rows_per_pass) <= 4 and sum(rows_per_pass) == n * 16
    torch.testing.assert_close(small, default, rtol=1e-4, atol=1e-6)


def test_half_precision_model_gives_float32_scores_close_to_float32(bert_classifier, encode):
    """A bfloat16 model (``--dtype bfloat16``): captum runs in the model's dtype, the scores come
    back float32 and finite, within a few percent of the float32 model's."""
    import copy

    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    full = gradient_attributions("integrated_gradients", model, ids, mask, 1, n_samples=32,
                                 tokenizer=tokenizer)
    half = gradient_attributions("integrated_gradients", copy.deepcopy(model).to(torch.bfloat16),
                                 ids, mask, 1, n_samples=32, tokenizer=tokenizer)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(half.sum(1), full.sum(1), rtol=0.1, atol=0.02)
    assert torch.corrcoef(torch.stack([half[mask == 1], full[mask == 1]]))[0, 1] > 0.95
