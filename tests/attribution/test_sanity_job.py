"""Sanity through the whole job: a classifier where one word decides the class.

Every method, run as a distributed job on a saved model with a real fast tokenizer, must rank
that word first for the class it decides.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from raypipe import AttributionStore
from raypipe.attribution.config import METHODS, AttributeConfig
from raypipe.attribution.pipeline import attribute

pytestmark = pytest.mark.ray

WORDS = ["[PAD]", "[CLS]", "[SEP]", "marker", "[UNK]", "[MASK]"] + [f"w{i}" for i in range(6, 16)]


@pytest.fixture(scope="module")
def presence_model_dir(presence_task, tmp_path_factory):
    """The trained presence classifier saved with a word-level fast tokenizer over its vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]")
    out = tmp_path_factory.mktemp("presence")
    presence_task.model.save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_ranks_the_deciding_word_first(ray_local, presence_model_dir, method, tmp_path):
    rng = np.random.default_rng(1)
    texts = []
    for _ in range(4):
        words = [f"w{i}" for i in rng.integers(6, 16, size=5)]
        words.insert(int(rng.integers(0, 6)), "marker")
        texts.append(" ".join(words))
    attribute(AttributeConfig(model=presence_model_dir, corpus=texts, out=str(tmp_path / method),
                              method=method, target="1", granularity="word", n_samples=64,
                              baseline="pad", progress=False))
    rows = AttributionStore(str(tmp_path / method)).table().to_pylist()
    assert len(rows) == 4
    for row in rows:
        assert row["units"][int(np.argmax(row["scores"]))] == "marker", (method, json.dumps(row))
