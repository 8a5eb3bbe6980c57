"""The in-process API equals a plain forward, and its rows equal the job's rows."""
from __future__ import annotations

import numpy as np
import pytest

from raypipe import SplitModel, get_activations
from tests.extraction.helpers import hooked_outputs, load_plain

TEXTS = ["A short text.", "A somewhat longer text with more words in it, to pad the other one."]


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_path):
    return SplitModel(tiny_gpt2_path, [0, -1])


def test_all_is_padded_tensor_equal_to_plain_forward(gpt2, tiny_gpt2_path):
    out = get_activations(gpt2, TEXTS, granularity="all", batch_tokens=16)
    model, tok = load_plain(tiny_gpt2_path)
    lengths = out.attention_mask.sum(1).tolist()
    for p in gpt2.split_points:
        assert out.activations[p].shape[:2] == out.input_ids.shape
        for i, text in enumerate(TEXTS):
            ref, enc = hooked_outputs(model, tok, text, [p], 1024)
            assert lengths[i] == len(enc["input_ids"])
            np.testing.assert_allclose(out.activations[p][i, :lengths[i]].numpy(), ref[p].numpy(),
                                       atol=1e-5)
            assert out.activations[p][i, lengths[i]:].abs().sum() == 0


def test_word_rows_carry_text_and_spans(gpt2):
    out = get_activations(gpt2, TEXTS, granularity="word")
    rows = out.units.to_pylist()
    for i, text in enumerate(TEXTS):
        words = {w for w in gpt2.tokenizer(text).word_ids() if w is not None}
        mine = [r for r in rows if r["doc_id"] == i]
        assert [r["unit"] for r in mine] == list(range(len(words)))
        assert all(text[r["char_start"]:r["char_end"]] == r["text"] for r in mine)
    for p, a in out.activations.items():
        assert a.shape == (len(rows), gpt2.hidden_sizes[p])


@pytest.mark.parametrize("granularity", ["token", "all"])
def test_truncation_is_counted_and_warned_never_silent(gpt2, granularity):
    fits = len(gpt2.tokenizer(TEXTS[0])["input_ids"])  # the short text fits, the long one not
    assert len(gpt2.tokenizer(TEXTS[1])["input_ids"]) > fits
    with pytest.warns(UserWarning, match=rf"1 of 2 texts were longer than max_length={fits} "):
        out = get_activations(gpt2, TEXTS, granularity=granularity, max_length=fits)
    assert out.truncated == 1
    windowed = get_activations(gpt2, TEXTS, granularity="token", max_length=fits,
                               overflow="window")
    assert windowed.truncated == 0
    assert len(windowed.units) > (len(out.units) if granularity == "token" else 0)
