import pickle
import re
from types import SimpleNamespace

import numpy as np
import pytest

from raypipe.granularity import DocTokens, Granularity, Units, concatenate_units, group_units
from raypipe.granularity.units import doc_tokens_from_encodings

TEXT = (
    "Antidisestablishmentarianism is unbelievably long. Mr. Smith's counterrevolutionaries "
    "arrived at 3.14 p.m. yesterday!\n\nThe incomprehensibilities, e.g. photosynthesizing "
    "microorganisms, were uncharacteristically unpronounceable. Done."
)


def toy_doc():
    #        [CLS] Hi  ,    there ##s  .   Bye  .   [SEP]
    text = "Hi, theres.  Bye."
    offsets = [(0, 0), (0, 2), (2, 3), (4, 9), (9, 10), (10, 11), (13, 16), (16, 17), (0, 0)]
    special = [1, 0, 0, 0, 0, 0, 0, 0, 1]
    word_ids = [-1, 0, 1, 2, 2, 3, 4, 5, -1]
    tokens = ["[CLS]", "hi", ",", "there", "##s", ".", "bye", ".", "[SEP]"]
    return DocTokens(text, offsets, special, word_ids, tokens)


def as_lists(units):
    return [m.tolist() for m in units.members]


def test_toy_doc_all_granularities():
    doc = toy_doc()
    units = group_units(doc, Granularity.ALL_TOKENS)
    assert as_lists(units) == [[i] for i in range(9)]
    assert units.text[0] == "[CLS]" and units.text[3] == "there" and units.text[8] == "[SEP]"

    units = group_units(doc, Granularity.TOKEN)
    assert as_lists(units) == [[i] for i in range(1, 8)]
    assert units.text == ["Hi", ",", "there", "s", ".", "Bye", "."]

    units = group_units(doc, "cls_token")
    assert as_lists(units) == [[0]] and units.text == ["[CLS]"]

    units = group_units(doc, Granularity.SAMPLE)
    assert as_lists(units) == [list(range(1, 8))]
    assert units.text == ["Hi, theres.  Bye."]
    assert units.char_start.tolist() == [0] and units.char_end.tolist() == [17]

    units = group_units(doc, Granularity.WORD)
    assert as_lists(units) == [[1], [2], [3, 4], [5], [6], [7]]
    assert units.text == ["Hi", ",", "theres", ".", "Bye", "."]

    units = group_units(doc, Granularity.SENTENCE)
    assert as_lists(units) == [[1, 2, 3, 4, 5], [6, 7]]
    assert units.text == ["Hi, theres.", "Bye."]
    assert units.char_start.dtype == np.int64 and all(m.dtype == np.int64 for m in units.members)


def test_cls_token_without_token_strings_has_empty_text():
    doc = toy_doc()
    doc = DocTokens(doc.text, doc.offsets, doc.special, doc.word_ids)
    assert group_units(doc, Granularity.CLS_TOKEN).text == [""]
    assert group_units(doc, Granularity.ALL_TOKENS).text[-1] == ""


def test_all_is_rejected():
    with pytest.raises(ValueError, match="all_tokens"):
        group_units(toy_doc(), Granularity.ALL)


def test_sample_of_a_doc_with_only_special_tokens_takes_them_all():
    doc = DocTokens("", [(0, 0), (0, 0)], [True, True], [-1, -1], ["[CLS]", "[SEP]"])
    units = group_units(doc, Granularity.SAMPLE)
    assert as_lists(units) == [[0, 1]]
    assert group_units(doc, Granularity.WORD).members == []
    assert len(group_units(doc, Granularity.SENTENCE)) == 0


def test_empty_doc_has_no_units():
    doc = DocTokens("", np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    for g in Granularity:
        if g is not Granularity.ALL:
            assert len(group_units(doc, g)) == 0


def test_word_ids_out_of_order_follow_first_appearance():
    doc = DocTokens("ab cd", [(3, 5), (0, 2), (3, 5)], [0, 0, 0], [7, 2, 7])
    assert as_lists(group_units(doc, Granularity.WORD)) == [[0, 2], [1]]


def test_sentence_whitespace_tokens_go_to_next_or_last_sentence():
    text = "One two.  Three.  "
    # tokens: "One", "two", ".", " " (in the gap), "Three", ".", " " (trailing whitespace)
    offsets = [(0, 3), (4, 7), (7, 8), (8, 9), (10, 15), (15, 16), (16, 17)]
    doc = DocTokens(text, offsets, [0] * 7, list(range(7)))
    units = group_units(doc, Granularity.SENTENCE)
    assert as_lists(units) == [[0, 1, 2], [3, 4, 5, 6]]
    assert units.text == ["One two.", "Three."]


def test_mismatched_arrays_are_rejected():
    with pytest.raises(ValueError, match="offsets has 2"):
        DocTokens("ab", [(0, 1), (1, 2)], [0], [0, 1])
    with pytest.raises(ValueError, match="members 1, text 2"):
        Units([np.array([0])], ["a", "b"], np.array([0]), np.array([1]))


@pytest.mark.parametrize("granularity", ["all_tokens", "token", "cls_token", "sample", "word",
                                         "sentence"])
def test_pickled_units_are_the_same_units(granularity):
    units = group_units(toy_doc(), granularity)
    back = pickle.loads(pickle.dumps(units))
    assert as_lists(back) == as_lists(units) and back.text == units.text
    assert back.char_start.tolist() == units.char_start.tolist()
    assert back.char_end.tolist() == units.char_end.tolist()
    assert all(m.dtype == np.int64 for m in back.members)
    # the packed form is the members, in order: what aggregate and pickling read
    flat, sizes = back.packed()
    assert sizes.tolist() == [len(m) for m in as_lists(units)]
    assert flat.tolist() == [i for m in as_lists(units) for i in m]


def test_packed_of_hand_built_units_and_its_errors():
    units = Units([np.array([3, 1]), np.array([2], dtype=np.int32)], ["a", "b"], [0, 2], [1, 3])
    flat, sizes = units.packed()
    assert flat.tolist() == [3, 1, 2] and flat.dtype == np.int64 and sizes.tolist() == [2, 1]
    with pytest.raises(ValueError, match="sizes add up to 2 members but flat holds 3"):
        Units.from_packed(np.arange(3), np.array([1, 1]), ["a", "b"], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="members 2, text 1"):
        Units.from_packed(np.arange(3), np.array([2, 1]), ["a"], [0, 0], [1, 1])


def test_units_from_packed_make_their_members_on_first_use():
    units = Units.from_packed(np.array([4, 5, 7]), np.array([2, 1]), ["ab", "c"], [0, 3], [2, 4])
    assert len(units) == 2 and "members" not in units.__dict__  # not made yet
    assert [m.tolist() for m in units.members] == [[4, 5], [7]]
    assert units.members is units.members  # made once, then kept
    empty = Units.from_packed(np.zeros(0), np.zeros(0), [], [], [])
    assert len(empty) == 0 and empty.members == []
    with pytest.raises(AttributeError, match="no attribute 'nembers'"):
        units.nembers  # noqa: B018


def test_concatenate_units_offsets_each_document():
    word = group_units(toy_doc(), Granularity.WORD)      # 6 units over tokens 1..7
    sent = group_units(toy_doc(), Granularity.SENTENCE)  # 2 units
    both = concatenate_units([word, sent], [0, 9])
    assert as_lists(both) == as_lists(word) + [[i + 9 for i in m] for m in as_lists(sent)]
    assert both.text == word.text + sent.text
    assert both.char_end.tolist() == word.char_end.tolist() + sent.char_end.tolist()
    assert len(concatenate_units([], [])) == 0
    with pytest.raises(ValueError, match="2 Units but 1 token offsets"):
        concatenate_units([word, sent], [0])


# --- against the MiniLM tokenizer -------------------------------------------------------------


def plain_doc(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True)
    return doc_tokens_from_encodings(text, enc.encodings, tokenizer), enc


def windowed_doc(tokenizer, text, stride):
    enc = tokenizer(
        text,
        max_length=16,
        truncation=True,
        return_overflowing_tokens=True,
        stride=stride,
        return_offsets_mapping=True,
    )
    assert len(enc.encodings) > 3
    return doc_tokens_from_encodings(text, enc.encodings, tokenizer), enc


def word_spans(units):
    return list(zip(units.char_start.tolist(), units.char_end.tolist()))


def test_word_units_match_word_ids_and_a_regex_split(minilm_tokenizer):
    doc, enc = plain_doc(minilm_tokenizer, TEXT)
    units = group_units(doc, Granularity.WORD)

    # 1) BatchEncoding.word_ids(): group positions by word with a plain loop.
    by_word: dict[int, list[int]] = {}
    for pos, word in enumerate(enc.word_ids()):
        if word is not None:
            by_word.setdefault(word, []).append(pos)
    assert as_lists(units) == [by_word[w] for w in sorted(by_word)]

    # 2) BERT's pre-tokenizer splits on whitespace and punctuation: rebuild words from the text.
    regex_words = [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", TEXT)]
    assert word_spans(units) == regex_words
    assert units.text == [TEXT[a:b] for a, b in regex_words]
    assert "Antidisestablishmentarianism" in units.text
    assert any(len(m) > 3 for m in units.members)  # really multi-token words


def test_sentence_units_follow_split_sentences(minilm_tokenizer):
    doc, enc = plain_doc(minilm_tokenizer, TEXT)
    units = group_units(doc, Granularity.SENTENCE)
    assert units.text == [
        "Antidisestablishmentarianism is unbelievably long.",
        "Mr. Smith's counterrevolutionaries arrived at 3.14 p.m. yesterday!",
        "The incomprehensibilities, e.g. photosynthesizing microorganisms, were "
        "uncharacteristically unpronounceable.",
        "Done.",
    ]
    # Every non-special token lands in exactly one sentence, the one that contains it.
    members = np.concatenate(units.members)
    assert sorted(members.tolist()) == list(range(1, len(doc) - 1))
    for m, start, end in zip(units.members, units.char_start, units.char_end):
        assert (doc.offsets[m, 0] >= start).all() and (doc.offsets[m, 1] <= end).all()


def test_sentence_of_a_truncated_document_claims_only_what_the_model_saw(minilm_tokenizer):
    enc = minilm_tokenizer(TEXT, max_length=24, truncation=True, return_offsets_mapping=True)
    doc = doc_tokens_from_encodings(TEXT, enc.encodings, minilm_tokenizer)
    units = group_units(doc, Granularity.SENTENCE)
    last_end = int(doc.offsets[~doc.special, 1].max())
    assert len(units.text) == 2 and units.text[0] == "Antidisestablishmentarianism is unbelievably long."
    assert units.char_end[-1] == last_end < TEXT.index("yesterday")
    assert units.text[-1] == TEXT[units.char_start[-1]:last_end]
    assert units.text[-1].startswith("Mr. Smith")


def _activations_from_spans(doc, d=8):
    """A vector per token that depends only on its char span: equal across tokenizations."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(doc.text) + 1, len(doc.text) + 1, d))
    return table[doc.offsets[:, 0], doc.offsets[:, 1]]  # (t, d)


def _word_means(doc, units):
    acts = _activations_from_spans(doc)
    out = []
    for m in units.members:
        rows = [acts[i] for i in m]
        out.append(sum(rows) / len(rows))
    return np.array(out)


@pytest.mark.parametrize("stride", [0, 2])
def test_windowed_doc_gives_the_same_words(minilm_tokenizer, stride):
    plain, _ = plain_doc(minilm_tokenizer, TEXT)
    windowed, enc = windowed_doc(minilm_tokenizer, TEXT, stride)
    # The test is only meaningful if some word is cut by a window boundary.
    last_words = {e.word_ids[-2] for e in enc.encodings[:-1]}
    first_words = {e.word_ids[1] for e in enc.encodings[1:]}
    assert last_words & first_words

    expected = group_units(plain, Granularity.WORD)
    units = group_units(windowed, Granularity.WORD)
    assert word_spans(units) == word_spans(expected)
    assert units.text == expected.text
    n_special = int(windowed.special.sum())
    assert n_special == 2 * len(enc.encodings)
    if stride == 0:
        assert [len(m) for m in units.members] == [len(m) for m in expected.members]
        np.testing.assert_allclose(_word_means(windowed, units), _word_means(plain, expected))


def _window_local(encodings):
    """Fake encodings whose word ids restart at 0 in each window."""
    fakes = []
    for e in encodings:
        words = [w for w in e.word_ids if w is not None]
        base = min(words)
        fakes.append(
            SimpleNamespace(
                offsets=e.offsets,
                special_tokens_mask=e.special_tokens_mask,
                word_ids=[None if w is None else w - base for w in e.word_ids],
                tokens=e.tokens,
                attention_mask=e.attention_mask,
            )
        )
    return fakes


@pytest.mark.parametrize("stride", [0, 2])
def test_window_local_word_ids_are_renumbered(minilm_tokenizer, stride):
    plain, _ = plain_doc(minilm_tokenizer, TEXT)
    _, enc = windowed_doc(minilm_tokenizer, TEXT, stride)
    fakes = _window_local(enc.encodings)
    assert fakes[1].word_ids[1] == 0  # the ids really restart
    doc = doc_tokens_from_encodings(TEXT, fakes, minilm_tokenizer)
    units = group_units(doc, Granularity.WORD)
    expected = group_units(plain, Granularity.WORD)
    assert word_spans(units) == word_spans(expected)
    # Same ids as the library's document-level ones, up to a shift.
    real = doc_tokens_from_encodings(TEXT, enc.encodings, minilm_tokenizer).word_ids
    np.testing.assert_array_equal(doc.word_ids, real)


def test_window_local_ids_keep_adjacent_words_apart(minilm_tokenizer):
    # "long" and "." touch, so only the tokenizer can say they are two words.
    text = "long."
    enc = minilm_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).encodings[0]
    assert enc.tokens == ["long", "."]
    windows = [
        SimpleNamespace(offsets=[o], special_tokens_mask=[0], word_ids=[0], tokens=[t], attention_mask=[1])
        for o, t in zip(enc.offsets, enc.tokens)
    ]
    # Window-local and document-level readings differ only when an earlier window held 2+ words,
    # so put a two-word window first.
    first = minilm_tokenizer("a b", add_special_tokens=False, return_offsets_mapping=True).encodings[0]
    text = "a b " + text
    shift = lambda spans: [(s + 4, e + 4) for s, e in spans]  # noqa: E731
    for w in windows:
        w.offsets = shift(w.offsets)
    windows.insert(
        0,
        SimpleNamespace(
            offsets=first.offsets, special_tokens_mask=[0, 0], word_ids=[0, 1], tokens=first.tokens, attention_mask=[1, 1]
        ),
    )
    doc = doc_tokens_from_encodings(text, windows, minilm_tokenizer)
    assert group_units(doc, Granularity.WORD).text == ["a", "b", "long", "."]


def test_padding_is_dropped(minilm_tokenizer):
    texts = ["Short one.", "A somewhat longer sentence here."]
    enc = minilm_tokenizer(texts, padding=True, return_offsets_mapping=True)
    doc = doc_tokens_from_encodings(texts[0], [enc.encodings[0]], minilm_tokenizer)
    assert doc.tokens == ["[CLS]", "short", "one", ".", "[SEP]"]
    assert doc.word_ids.tolist() == [-1, 0, 1, 2, -1]
