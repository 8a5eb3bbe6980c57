"""Concept-to-output gradients: the splice is exact, the gradients are the dictionary's pull-back
of the hidden-state gradient (checked by independent autograd and finite differences), padding
and batching change nothing, and the Ray job writes the pure function's numbers."""
from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raypipe.concepts.concept_model import ConceptModel
from raypipe.config import ConfigError
from raypipe.interpretation.concept_gradient_job import (CONCEPT_GRADIENTS_FORMAT,
                                                         ConceptGradientConfig,
                                                         concept_gradients_job)
from raypipe.interpretation.concept_gradients import (ConceptSplice, concept_output_gradients,
                                                      module_path)
from raypipe.models.split_model import select_hidden_states

SPLIT = "encoder.layer.1"          # as a store extracted from the bare encoder names it
TEXTS = ["The cat sat on the mat.", "Rain again today", "A dog barked at the mailman all night long.",
         "ok", "Stocks fell sharply after the report.", "She reads books by the window."]
K = 6


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory) -> str:
    """2-layer hidden-32 BERT classifier, init std 0.3 so logits react to the input."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tests.models.tiny_models import minilm_path

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, vocab_size=30522,
                        num_labels=2, initializer_range=0.3)
    directory = tmp_path_factory.mktemp("cg") / "bert-classifier"
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return str(directory)


def _load(path: str, auto_class: str):
    from raypipe.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(path, auto_class=auto_class, device_map="cpu")


@pytest.fixture(scope="module")
def classifier(classifier_path):
    return _load(classifier_path, "AutoModelForSequenceClassification")


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_path):
    return _load(tiny_gpt2_path, "AutoModelForCausalLM")


def pca_model(dim: int, split: str, seed: int = 0, scale: bool = True) -> ConceptModel:
    """A PCA-shaped linear dictionary: K orthonormal directions, a mean, a per-concept scale."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.linalg.qr(torch.randn(dim, K, generator=g))[0].T          # (K, d)
    tensors = {"dictionary": directions, "mean": 0.1 * torch.randn(dim, generator=g),
               "scale": (0.5 + torch.rand(K, generator=g)) if scale else torch.ones(K)}
    return ConceptModel.from_tensors("pca", tensors, {"split_point": split})


def batch(tokenizer, texts):
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def hidden_gradient(model, path, ids, mask, score_fn):
    """Independent reference: d score / d h at ``path`` ``(n, l, d)``, h made a leaf by a hook."""
    leaf = {}

    def hook(module, args, output):
        h = select_hidden_states(output, 0, path).detach().requires_grad_(True)
        leaf["h"] = h
        return h if isinstance(output, torch.Tensor) else (h, *output[1:])

    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        score = score_fn(model(input_ids=ids, attention_mask=mask).logits)
        (grad,) = torch.autograd.grad(score.sum(), leaf["h"])
    finally:
        handle.remove()
    return grad


def test_splice_leaves_outputs_unchanged(classifier, gpt2):
    for (model, tokenizer), split in ((classifier, "bert.encoder.layer.0"), (gpt2, "transformer.h.1")):
        ids, mask = batch(tokenizer, TEXTS[:3])
        concepts = pca_model(model.config.hidden_size, split)
        with torch.no_grad():
            plain = model(input_ids=ids, attention_mask=mask).logits
        handle = model.get_submodule(split).register_forward_hook(ConceptSplice(concepts, split))
        try:
            spliced = model(input_ids=ids, attention_mask=mask).logits
        finally:
            handle.remove()
        torch.testing.assert_close(spliced, plain, atol=1e-5, rtol=1e-5)
        assert spliced.requires_grad          # the dictionary is in the graph


def test_gradients_are_the_hidden_gradient_through_the_dictionary(classifier):
    model, tokenizer = classifier
    ids, mask = batch(tokenizer, TEXTS[:3])
    concepts = pca_model(32, SPLIT)
    out = concept_output_gradients(model, concepts, SPLIT, ids, mask, target=1, mode="log_softmax")
    path = module_path(model, SPLIT)
    assert path == "bert.encoder.layer.1"
    grad_h = hidden_gradient(model, path, ids, mask, lambda lg: torch.log_softmax(lg, -1)[:, 1])
    expected = (grad_h @ concepts.dictionary.T) * concepts.tensors["scale"] * mask[..., None]
    assert expected.abs().max() > 1e-3                                  # not vacuous
    torch.testing.assert_close(out["token_gradients"], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["gradients"], expected.sum(1), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out["scores"], torch.log_softmax(logits, -1)[:, 1], atol=1e-5, rtol=1e-5)
    assert out["targets"].tolist() == [1, 1, 1]
    assert out["concepts"].shape == (3, ids.shape[1], K)


def test_gradient_matches_finite_differences(classifier):
    model, tokenizer = classifier
    model = copy.deepcopy(model).double()
    ids, mask = batch(tokenizer, TEXTS[2:3])
    concepts = pca_model(32, SPLIT, seed=1)
    out = concept_output_gradients(model, concepts, SPLIT, ids, mask, target="predicted")
    target = int(out["targets"][0])
    path = module_path(model, SPLIT)

    def score_with_shift(token: int, k: int, eps: float) -> float:
        """Logit when concept k of one token moves by eps (decode is linear: h += eps*scale_k*D_k)."""
        shift = eps * concepts.tensors["scale"][k] * concepts.dictionary[k].double()

        def hook(module, args, output):
            h = select_hidden_states(output, 0, path).clone()
            h[0, token] += shift
            return h if isinstance(output, torch.Tensor) else (h, *output[1:])

        handle = model.get_submodule(path).register_forward_hook(hook)
        try:
            with torch.no_grad():
                return float(model(input_ids=ids, attention_mask=mask).logits[0, target])
        finally:
            handle.remove()

    eps = 1e-4
    for token, k in ((0, 0), (3, 2), (int(mask.sum()) - 1, 5)):
        fd = (score_with_shift(token, k, eps) - score_with_shift(token, k, -eps)) / (2 * eps)
        assert out["token_gradients"][0, token, k].item() == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_padding_is_zero_and_batch_equals_single_rows(classifier):
    model, tokenizer = classifier
    concepts = pca_model(32, SPLIT)
    ids, mask = batch(tokenizer, TEXTS[:4])
    out = concept_output_gradients(model, concepts, SPLIT, ids, mask)
    assert (out["token_gradients"][mask == 0] == 0).all()
    assert (out["concepts"][mask == 0] == 0).all()
    for row, text in enumerate(TEXTS[:4]):
        one_ids, one_mask = batch(tokenizer, [text])
        one = concept_output_gradients(model, concepts, SPLIT, one_ids, one_mask)
        n = one_ids.shape[1]
        assert one["targets"][0] == out["targets"][row]
        torch.testing.assert_close(out["token_gradients"][row, :n], one["token_gradients"][0],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["gradients"][row], one["gradients"][0], atol=1e-5, rtol=1e-4)


def test_causal_lm_explains_the_next_token_at_the_last_real_position(gpt2):
    model, tokenizer = gpt2
    split = "transformer.h.1"
    concepts = pca_model(32, split, seed=2)
    ids, mask = batch(tokenizer, TEXTS[:3])
    out = concept_output_gradients(model, concepts, split, ids, mask, mode="log_softmax")
    last = mask.sum(1) - 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(3), last]
    assert out["targets"].tolist() == logits.argmax(-1).tolist()
    token = 200
    fixed = concept_output_gradients(model, concepts, split, ids, mask, target=token)
    grad_h = hidden_gradient(model, split, ids, mask, lambda lg: lg[torch.arange(3), last, token])
    expected = (grad_h @ concepts.dictionary.T) * concepts.tensors["scale"] * mask[..., None]
    torch.testing.assert_close(fixed["token_gradients"], expected, atol=1e-5, rtol=1e-4)
    one = concept_output_gradients(model, concepts, split, *batch(tokenizer, TEXTS[1:2]), target=token)
    torch.testing.assert_close(fixed["gradients"][1], one["gradients"][0], atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_named(classifier):
    model, tokenizer = classifier
    ids, mask = batch(tokenizer, TEXTS[:2])
    with pytest.raises(ValueError, match="out of range"):
        concept_output_gradients(model, pca_model(32, SPLIT), SPLIT, ids, mask, target=5)
    with pytest.raises(ValueError, match="expects"):
        concept_output_gradients(model, pca_model(16, SPLIT), SPLIT, ids, mask)
    with pytest.raises(ValueError, match="mode"):
        concept_output_gradients(model, pca_model(32, SPLIT), SPLIT, ids, mask, mode="probs")
    with pytest.raises(ConfigError, match="target"):
        ConceptGradientConfig(model="m", corpus=["x"], concepts="c", out="o", target="best")
    assert ConceptGradientConfig(model="m", corpus=["x"], concepts="c", out="o", target="1").target == 1


@pytest.mark.ray
def test_ray_job_writes_the_pure_functions_gradients(ray_local, classifier, classifier_path, tmp_path):
    model, tokenizer = classifier
    concepts = pca_model(32, SPLIT)
    concepts.save(tmp_path / "concepts")
    config = ConceptGradientConfig(model=classifier_path, corpus=TEXTS, concepts=str(tmp_path / "concepts"),
                                   out=str(tmp_path / "out"), docs_per_shard=2, batch_tokens=64,
                                   progress=False)
    summary = concept_gradients_job(config)
    assert summary["rows"] == len(TEXTS) and summary["shards_written"] == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == CONCEPT_GRADIENTS_FORMAT and manifest["status"] == "complete"
    rows = sorted((r for s in manifest["shards"] for r in
                   pq.read_table(tmp_path / "out" / s["name"]).to_pylist()), key=lambda r: r["doc_id"])
    assert [r["doc_id"] for r in rows] == list(range(len(TEXTS)))
    for r, text in zip(rows, TEXTS):
        ref = concept_output_gradients(model, concepts, SPLIT, *batch(tokenizer, [text]))
        assert len(r["gradients"]) == K and r["target"] == int(ref["targets"][0])
        np.testing.assert_allclose(r["gradients"], ref["gradients"][0].numpy(), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(r["mean_concepts"], ref["concepts"][0].mean(0).numpy(),
                                   atol=1e-5, rtol=1e-4)
    again = concept_gradients_job(config)                  # resumed: every shard is skipped
    assert again["shards_skipped"] == 3 and again["shards_written"] == 0 and again["rows"] == len(TEXTS)


def test_decoder_classifier_batch_equals_single_rows(tmp_path):
    """GPT-2's classifier reads each row's last real token (its config has no pad_token_id, so
    transformers itself would refuse a batch)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from tests.models.tiny_models import minilm_path

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=30522,
                        num_labels=2, initializer_range=0.3)
    assert config.pad_token_id is None
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt2-cls")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path / "gpt2-cls")
    model, tokenizer = _load(str(tmp_path / "gpt2-cls"), "AutoModelForSequenceClassification")
    split = "h.1"
    concepts = pca_model(32, split)
    ids, mask = batch(tokenizer, TEXTS[:4])
    out = concept_output_gradients(model, concepts, split, ids, mask)
    for row, text in enumerate(TEXTS[:4]):
        one_ids, one_mask = batch(tokenizer, [text])
        one = concept_output_gradients(model, concepts, split, one_ids, one_mask)
        with torch.no_grad():
            plain = model(input_ids=one_ids).logits[0]          # batch of one: transformers' own
        assert one["targets"][0] == out["targets"][row] == plain.argmax()
        torch.testing.assert_close(out["scores"][row], plain[plain.argmax()], atol=1e-5, rtol=1e-4)
        n = one_ids.shape[1]
        torch.testing.assert_close(out["token_gradients"][row, :n], one["token_gradients"][0],
                                   atol=1e-5, rtol=1e-4)
