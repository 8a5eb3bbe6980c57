"""Decoder models with a GPT-2-style tokenizer: no special tokens added, no pad, no mask token.

The classifier of the other attribution tests uses the MiniLM tokenizer, which wraps every input
in [CLS] ... [SEP] and has a mask token (their causal LMs have GPT-2- and Llama-style tokenizers,
tests/models/tiny_models.py), so they never meet the two cases checked here:
- a decoder classifier (``GPT2ForSequenceClassification``, no ``pad_token_id`` in its config)
  scores the last token of each row; in a padded batch the model must still read each row's
  own last token, for perturbations (ids) and gradients (embeddings) alike;
- removing every unit (``--baseline remove``: KernelSHAP's empty coalition) leaves no token at
  all; the row is then the start token alone (GPT-2's ``<|endoftext|>``), as a plain forward of
  the empty prompt would be run.
Every number is checked against a plain transformers forward of one unpadded row.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.forward_stage import ScoreShard
from raypipe.attribution.perturb_stage import prepare_shard
from raypipe.batching.backend import backend_spec
from raypipe.corpus import open_corpus

WORDS = "the film was a delight dull and tired story ok good bad very long plot acting".split()
TEXTS = ["the film was a delight", "a dull and tired story , very long", "ok"]
EOS = "<|endoftext|>"


def _gpt2_style_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(WORDS + [","])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS,
                                   unk_token="[UNK]")


@pytest.fixture(scope="module")
def decoder_paths(tmp_path_factory) -> dict[str, str]:
    """A GPT-2 classifier and a GPT-2 LM (2 blocks, hidden 32) with the tokenizer above."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    tokenizer = _gpt2_style_tokenizer()
    paths = {}
    for name, cls in (("classifier", GPT2ForSequenceClassification), ("lm", GPT2LMHeadModel)):
        torch.manual_seed(0)
        config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, num_labels=2,
                            vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0,
                            initializer_range=0.3)
        assert config.pad_token_id is None  # as GPT-2's own config
        directory = tmp_path_factory.mktemp(f"gpt2-{name}")
        cls(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        paths[name] = str(directory)
    return paths


def score(path: str, method: str, *, batch_tokens: int, baseline: str = "mask",
          n_samples: int = 8, continuations: list[str] | None = None, mode: str = "logits",
          tmp_path) -> list:
    """Run stage 1 and the model stage in-process; the documents' DocWork with results."""
    from transformers import AutoTokenizer

    config = AttributeConfig(model=path, corpus=TEXTS, method=method, granularity="word",
                             out=str(tmp_path / "store"), progress=False, n_samples=n_samples,
                             baseline=baseline, batch_tokens=batch_tokens, seed=3, mode=mode)
    batch = prepare_shard({"shard_id": np.array([0]), "doc_start": np.array([0]),
                           "doc_end": np.array([len(TEXTS)])}, corpus=open_corpus(TEXTS),
                          targets=None if continuations is None else open_corpus(continuations),
                          tokenizer=backend_spec(AutoTokenizer.from_pretrained(path)),
                          max_length=64, granularity="word", method=method, n_samples=n_samples,
                          seed=3, baseline=baseline, gradient=config.is_gradient)
    out = ScoreShard(config.to_dict() | {"corpus": "-"})(batch)
    return pickle.loads(out["payload"][0])["work"]


def plain_logits(model, ids) -> torch.Tensor:
    """One unpadded row through the model as a user would run it."""
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids)[None]).logits[0].float()


def mask_row_ids(w, m: int, start_id: int = 0) -> list[int]:
    """The tokens a causal model sees for mask row ``m``: removed ones deleted, the start token
    alone when nothing is left (``w.index`` maps mask rows to [original, distinct rows...])."""
    source = m + 1 if w.index is None else int(w.index[m])
    if source == 0:
        return [int(t) for t in w.doc.windows[0]]
    kept = [int(t) for t, a in zip(w.ids[source - 1], w.attention[source - 1]) if a]
    return kept or [start_id]


def test_tokenizer_is_gpt2_style(decoder_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(decoder_paths["classifier"])
    assert tok.pad_token_id is None and tok.mask_token_id is None
    assert tok("the film")["input_ids"] == [2, 3]  # no special token added


@pytest.mark.parametrize("baseline", ["mask", "remove"])
def test_decoder_classifier_occlusion_reads_each_rows_last_token(decoder_paths, tmp_path, baseline):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(decoder_paths["classifier"]).eval()
    packed = score(decoder_paths["classifier"], "occlusion", batch_tokens=4096,
                   baseline=baseline, tmp_path=tmp_path)
    alone = score(decoder_paths["classifier"], "occlusion", batch_tokens=1,
                  baseline=baseline, tmp_path=tmp_path)
    for w, w1 in zip(packed, alone):
        np.testing.assert_allclose(w.results["scores"], w1.results["scores"], atol=1e-5)
        original = plain_logits(model, w.doc.windows[0])
        target = w.results["targets"][0]
        assert target == int(original.argmax())
        np.testing.assert_allclose(w.results["original"], original[w.results["targets"]], atol=1e-5)
        assert len(w.results["scores"]) == len(w.plan.masks) >= len(w.doc.units)
        for m in range(len(w.results["scores"])):
            expected = plain_logits(model, mask_row_ids(w, m))[target]
            assert w.results["scores"][m][0] == pytest.approx(float(expected), abs=1e-5)


def test_decoder_classifier_gradients_do_not_depend_on_the_batch(decoder_paths, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(decoder_paths["classifier"]).eval()
    packed = score(decoder_paths["classifier"], "saliency", batch_tokens=4096, tmp_path=tmp_path)
    alone = score(decoder_paths["classifier"], "saliency", batch_tokens=1, tmp_path=tmp_path)
    for w, w1 in zip(packed, alone):
        np.testing.assert_allclose(w.results["unit_scores"], w1.results["unit_scores"], atol=1e-5)
        # the independent check: the gradient of the last token's logit of one unpadded row
        ids = torch.as_tensor(w.doc.windows[0])[None]
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        target = w.results["targets"][0]
        model(inputs_embeds=embeds).logits[0, target].backward()
        expected = embeds.grad[0].norm(dim=-1).numpy()  # saliency's default reduction: L2
        members = w.doc.units.members                   # default aggregation: sum
        per_unit = [expected[np.asarray(members[i])].sum() for i in range(len(members))]
        np.testing.assert_allclose(w.results["unit_scores"][0], per_unit, rtol=1e-4, atol=1e-6)


def test_empty_coalition_on_a_causal_lm_is_the_start_token_alone(decoder_paths, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(decoder_paths["lm"]).eval()
    continuations = ["good plot", "bad acting , very long plot", "very"]  # T = 2, 5, 1: packed together
    work = score(decoder_paths["lm"], "kernel_shap", batch_tokens=4096, baseline="remove",
                 continuations=continuations, n_samples=16, mode="log_softmax",
                 tmp_path=tmp_path)
    alone = score(decoder_paths["lm"], "kernel_shap", batch_tokens=1, baseline="remove",
                  continuations=continuations, n_samples=16, mode="log_softmax", tmp_path=tmp_path)
    for w, w1 in zip(work, alone):  # packed with other documents' rows, or one row a batch
        np.testing.assert_allclose(w.results["scores"], w1.results["scores"], atol=1e-5)
    for w in work:
        target = list(w.results["target_ids"])
        scores = np.asarray(w.results["scores"])
        assert np.isfinite(scores).all()
        empty = [m for m in range(len(scores)) if not w.plan.masks[m].any()]
        assert empty, "KernelSHAP enforces the empty coalition"
        for m in empty + list(range(min(3, len(scores)))):
            prompt = mask_row_ids(w, m)
            assert (prompt == [0]) == (m in empty)
            logp = torch.log_softmax(plain_logits(model, prompt + target), -1)
            expected = [float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target)]
            np.testing.assert_allclose(scores[m], expected, atol=1e-5)
