"""Scores of (perturbed) inputs against plain transformers forwards, row by row and unpadded."""

from __future__ import annotations

import pytest
import torch

from raypipe.attribution.scoring import (
    MODES,
    classification_scores,
    continuation_layout,
    generate_target,
    generation_scores,
    predicted_classes,
)

TEXTS = ["the cat sat on the mat", "a much longer sentence about a dog that runs in the park", "hi"]
PROMPTS = ["the cat sat", "once upon a time in a land far away", "yes"]
REFERENCE = {"logits": lambda x: x, "softmax": torch.softmax, "log_softmax": torch.log_softmax}


def _transform(logits: torch.Tensor, mode: str) -> torch.Tensor:
    return logits if mode == "logits" else REFERENCE[mode](logits, dim=-1)


@pytest.mark.parametrize("mode", MODES)
def test_classification_scores_match_plain_forward(bert_classifier, encode, mode):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    targets = torch.tensor([[0, 1], [1, 1], [1, 0]])  # (n, T)
    with torch.no_grad():
        expected = _transform(model(**batch).logits, mode).gather(1, targets)
    scores = classification_scores(model, batch["input_ids"], batch["attention_mask"], targets, mode)
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    if mode == "softmax":  # the two classes of a row are a distribution
        both = classification_scores(model, batch["input_ids"], batch["attention_mask"],
                                     torch.tensor([[0, 1]] * 3), mode)
        torch.testing.assert_close(both.sum(1), torch.ones(3))


def test_predicted_classes_are_the_argmax_and_one_d_targets_work(bert_classifier, encode):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    with torch.no_grad():
        logits = model(**batch).logits
    predicted = predicted_classes(model, batch["input_ids"], batch["attention_mask"])
    assert torch.equal(predicted, logits.argmax(-1))
    scores = classification_scores(model, batch["input_ids"], batch["attention_mask"], predicted)
    torch.testing.assert_close(scores[:, 0], logits.max(-1).values)


def test_classification_rejects_bad_mode_and_class(bert_classifier, encode):
    model, tokenizer = bert_classifier
    batch = encode(tokenizer, TEXTS)
    with pytest.raises(ValueError, match="log_softmax"):
        classification_scores(model, batch["input_ids"], batch["attention_mask"],
                              torch.zeros(3, 1, dtype=torch.long), mode="probability")
    with pytest.raises(ValueError, match=r"2 classes"):
        classification_scores(model, batch["input_ids"], batch["attention_mask"],
                              torch.full((3, 1), 2))


def _unpadded_scores(model, ids: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """Reference: one row, no padding, prompt + continuation, plain ``model(input_ids=...)``."""
    sequence = torch.cat([ids, target])[None, :]
    with torch.no_grad():
        logits = model(input_ids=sequence).logits[0]  # (L, V)
    predicting = torch.arange(len(target)) + len(ids) - 1
    return _transform(logits[predicting], mode).gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("lm", ["gpt2_lm", "llama_lm"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_generation_scores_with_padding_equal_unpadded_rows(request, encode, lm, padding_side):
    model, tokenizer = request.getfixturevalue(lm)
    batch = encode(tokenizer, PROMPTS, padding_side)
    assert (batch["attention_mask"] == 0).any(), "the test needs padded rows"
    target = torch.tensor([203, 137, 204, 154])  # (T,)
    for mode in MODES:
        scores = generation_scores(model, batch["input_ids"], batch["attention_mask"], target, mode)
        assert scores.shape == (3, 4)
        for i in range(3):
            real = batch["input_ids"][i][batch["attention_mask"][i].bool()]
            expected = _unpadded_scores(model, real, target, mode)
            torch.testing.assert_close(scores[i], expected, rtol=1e-4, atol=1e-5)


def test_generation_scores_take_one_continuation_per_row(gpt2_lm, encode):
    model, tokenizer = gpt2_lm
    batch = encode(tokenizer, PROMPTS)
    targets = torch.tensor([[203, 137], [204, 154], [196, 203]])  # (n, T)
    scores = generation_scores(model, batch["input_ids"], batch["attention_mask"], targets)
    for i in range(3):
        real = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        torch.testing.assert_close(scores[i], _unpadded_scores(model, real, targets[i], "log_softmax"),
                                   rtol=1e-4, atol=1e-5)


def test_continuation_layout_packs_prompt_then_continuation():
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1]])  # right, left and a hole
    layout = continuation_layout(mask, 2)
    # sources index cat([prompt (3), continuation (2)]): 3 and 4 are the continuation
    assert layout.source_index[0, :4].tolist() == [0, 1, 3, 4]
    assert layout.source_index[1, :4].tolist() == [1, 2, 3, 4]
    assert layout.source_index[2, :4].tolist() == [0, 2, 3, 4]
    assert layout.attention_mask.tolist() == [[1, 1, 1, 1, 0]] * 3
    assert layout.predict_positions.tolist() == [[1, 2]] * 3
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        continuation_layout(torch.tensor([[1, 0], [0, 0]]), 1)


def test_generate_target_is_greedy(gpt2_lm, encode):
    model, tokenizer = gpt2_lm
    prompt = encode(tokenizer, ["the cat sat"])["input_ids"][0]
    generated = generate_target(model, tokenizer, prompt, max_new_tokens=5)
    sequence = prompt.clone()
    with torch.no_grad():
        for _ in range(5):  # reference: argmax of the last position, one token at a time
            sequence = torch.cat([sequence, model(input_ids=sequence[None]).logits[0, -1].argmax()[None]])
    assert torch.equal(generated, sequence[len(prompt):])
    # each greedy token is the best-scored token at its position
    with torch.no_grad():
        logits = model(input_ids=sequence[None]).logits[0, len(prompt) - 1 : -1]
    scores = generation_scores(model, prompt[None], torch.ones_like(prompt)[None], generated, "logits")
    torch.testing.assert_close(scores[0], logits.max(-1).values, rtol=1e-5, atol=1e-5)


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep``: the all-positions path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, inputs_embeds, attention_mask):
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)


def test_generation_scores_without_logits_to_keep(gpt2_lm, encode):
    model, tokenizer = gpt2_lm
    batch = encode(tokenizer, PROMPTS)
    target = torch.tensor([203, 137])
    sliced = generation_scores(model, batch["input_ids"], batch["attention_mask"], target)
    full = generation_scores(_NoLogitsToKeep(model), batch["input_ids"], batch["attention_mask"], target)
    torch.testing.assert_close(full, sliced, rtol=1e-5, atol=1e-6)
