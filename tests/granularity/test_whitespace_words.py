"""WORD units for tokenizers whose word ids do not split words (Llama/Mistral-style Metaspace
with ``split=False``), and unit spans without the space byte-level tokens carry."""
import re

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from raypipe.batching import tokenize_documents
from raypipe.batching.backend import BackendTokenizer, backend_spec
from raypipe.corpus import Document
from raypipe.granularity import Granularity
from raypipe.granularity.units import splits_words_at_whitespace, whitespace_word_ids

TRAIN = ["The movie was quite good.", "And surprisingly funny!", "a b c d e f g h i j k l m",
         "quite-good 12 movies, twelve funny ones"] * 20
TEXT = "The movie was 12 quite-good.  And  funny! "


def _bpe(pre_tokenizer, decoder) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")


@pytest.fixture(scope="module")
def metaspace():
    """As transformers 5 builds LlamaTokenizer: one Metaspace piece per text, all word id 0."""
    return _bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False))


@pytest.fixture(scope="module")
def byte_level():
    return _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel())


def _words(tokenizer, text, max_length=64):
    docs, _ = tokenize_documents([Document(0, text, 0)], tokenizer, max_length=max_length,
                                 overflow="window", granularity=Granularity.WORD)
    return docs[0]


def test_metaspace_word_ids_are_degenerate_so_words_come_from_whitespace(metaspace, minilm_tokenizer):
    enc = metaspace(TEXT, add_special_tokens=False)
    assert {w for w in enc.word_ids() if w is not None} == {0}  # the tokenizer's own ids: useless
    assert not splits_words_at_whitespace(metaspace)
    assert splits_words_at_whitespace(minilm_tokenizer)
    for tok in (metaspace, BackendTokenizer.from_spec(backend_spec(metaspace))):
        doc = _words(tok, TEXT)
        assert doc.units.text == TEXT.split()
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", TEXT)]
        assert list(zip(doc.units.char_start.tolist(), doc.units.char_end.tolist())) == spans


def test_metaspace_words_survive_windows(metaspace):
    text = " ".join([TEXT.strip()] * 6)
    doc = _words(metaspace, text, max_length=12)
    assert len(doc.windows) > 1
    assert doc.units.text == text.split()
    members = np.concatenate(doc.units.members)
    assert np.array_equal(np.sort(members), np.unique(members))  # every token in one word


def test_whitespace_word_ids_by_hand():
    text = "ab  c\td "
    offsets = np.array([[0, 0], [0, 1], [1, 2], [2, 4], [4, 5], [5, 6], [6, 7], [7, 8]])
    special = np.array([True] + [False] * 7)
    # tokens "a", "b" | "  " (whitespace only: joins the next word), "c" | "\t" (likewise), "d",
    # " " (trailing: the last word)
    assert whitespace_word_ids(text, offsets, special).tolist() == [-1, 0, 0, 1, 1, 2, 2, 2]


def test_byte_level_units_do_not_carry_the_leading_space(byte_level):
    doc = _words(byte_level, TEXT)
    enc = byte_level(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    assert any(TEXT[a:b].startswith(" ") for a, b in enc["offset_mapping"])  # the raw offsets do
    texts = doc.units.text
    assert "movie" in texts and " movie" not in texts
    for t, a, b in zip(texts, doc.units.char_start.tolist(), doc.units.char_end.tolist()):
        assert t == TEXT[a:b]
        assert t.isspace() or t == t.strip()


def test_truncated_sentence_stub_of_whitespace_tokens_keeps_an_ordered_span(byte_level):
    """A truncated document whose last kept token is whitespace ("\\n\\n" before the next
    sentence): that token joins the next sentence, which must not end before it starts."""
    text = "First one. Second one.\n\nThird sentence here."
    enc = byte_level(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    stub = next(i for i, (a, b) in enumerate(spans) if text[a:b].isspace() and a > 20)
    docs, _ = tokenize_documents([Document(0, text, 0)], byte_level, max_length=stub + 1,
                                 overflow="truncate", granularity=Granularity.SENTENCE)
    units = docs[0].units
    assert docs[0].truncated and units.text[:2] == ["First one.", "Second one."]
    for t, a, b in zip(units.text, units.char_start.tolist(), units.char_end.tolist()):
        assert a <= b and t == text[a:b]
    assert units.char_end[-1] == spans[stub][1]  # nothing the model did not see
