"""Group the tokens of one document into units: tokens, words, sentences, the whole document.

The model actor tokenizes a document (possibly into several windows, each with its own special
tokens), concatenates the windows' token activations into one ``(t, d)`` tensor, and asks this
module which token positions form each unit; ``aggregate`` then reduces each unit to a vector.
Everything here is numpy over one document and knows nothing of models or Ray.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raypipe.granularity.kinds import Granularity
from raypipe.granularity.sentences import split_sentences


@dataclass(frozen=True)
class DocTokens:
    """The tokens of one document, all windows concatenated, in order.

    Arrays are coerced to the dtypes below when built, so lists are accepted too.
    """

    text: str
    """The document text that ``offsets`` index into."""
    offsets: np.ndarray
    """(t, 2) int64 character spans into ``text``; special tokens have (0, 0)."""
    special: np.ndarray
    """(t,) bool, True for special tokens ([CLS], [SEP], <s>); padding is never present."""
    word_ids: np.ndarray
    """(t,) int64 document-level word index, -1 for special tokens."""
    tokens: list[str] | None = None
    """Token strings, used as the unit text of special tokens."""

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets, dtype=np.int64).reshape(-1, 2)
        special = np.asarray(self.special, dtype=bool).reshape(-1)
        word_ids = np.asarray(self.word_ids, dtype=np.int64).reshape(-1)
        t = offsets.shape[0]
        if special.shape[0] != t or word_ids.shape[0] != t:
            raise ValueError(
                f"DocTokens arrays disagree on the number of tokens: offsets has {t}, special "
                f"{special.shape[0]}, word_ids {word_ids.shape[0]}; build them from the same encodings"
            )
        if self.tokens is not None and len(self.tokens) != t:
            raise ValueError(
                f"DocTokens.tokens has {len(self.tokens)} strings for {t} tokens; pass one per token or None"
            )
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "special", special)
        object.__setattr__(self, "word_ids", word_ids)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])


@dataclass(frozen=True)
class Units:
    """The units of one document: which token positions form each, and its text span."""

    members: list[np.ndarray]
    """Per unit, the int64 token positions (into the document's t tokens) that form it."""
    text: list[str]
    """Unit text: ``doc.text[char_start:char_end]``, or the token string for special tokens."""
    char_start: np.ndarray
    """(u,) int64."""
    char_end: np.ndarray
    """(u,) int64."""

    def __post_init__(self) -> None:
        self._check(len(self.members))

    def _check(self, u: int) -> None:
        """``u`` units: the other fields must agree; the spans become (u,) int64 arrays."""
        starts = np.asarray(self.char_start, dtype=np.int64).reshape(-1)
        ends = np.asarray(self.char_end, dtype=np.int64).reshape(-1)
        if len(self.text) != u or starts.shape[0] != u or ends.shape[0] != u:
            raise ValueError(
                f"Units fields disagree on the number of units: members {u}, text {len(self.text)}, "
                f"char_start {starts.shape[0]}, char_end {ends.shape[0]}"
            )
        object.__setattr__(self, "char_start", starts)
        object.__setattr__(self, "char_end", ends)

    def __len__(self) -> int:
        return len(self.text)

    def __getattr__(self, name: str):
        # Only reached when ``members`` was never set: Units made by ``from_packed`` split their
        # flat array into one view per unit on first use (most users only need ``packed``).
        if name == "members" and "_packed" in self.__dict__:
            flat, sizes = self.__dict__["_packed"]
            members = np.split(flat, np.cumsum(sizes)[:-1]) if len(sizes) else []
            object.__setattr__(self, "members", members)
            return members
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        """Every unit's members in one int64 array, and each unit's member count: ``(m,)``, ``(u,)``.

        The form that aggregation, shard concatenation and pickling use: a shard of token units
        has ~15k one-element member arrays, and handling them one by one (pickling them to
        the model actors, offsetting them per document) cost ~0.1 s per shard, a tenth of the
        forward of a small model at an early split. Computed once, then kept.
        """
        cached = self.__dict__.get("_packed")
        if cached is None:
            sizes = np.fromiter((np.size(m) for m in self.members), dtype=np.int64,
                                count=len(self.members))
            flat = (np.concatenate([np.asarray(m, dtype=np.int64).reshape(-1) for m in self.members])
                    if self.members else np.zeros(0, dtype=np.int64))
            cached = _set_packed(self, flat, sizes)
        return cached

    @classmethod
    def from_packed(cls, flat: np.ndarray, sizes: np.ndarray, text: list[str],
                    char_start: np.ndarray, char_end: np.ndarray) -> "Units":
        """Units whose members are consecutive runs of ``flat``, ``sizes[i]`` long for unit i.

        ``members`` is made from ``flat`` on first use only: the model actors rebuild every
        document's units from a shard's columns (``raypipe.batching.packed_docs``) and never
        need one array per unit (15k-67k of them per shard, ~0.05 s).
        """
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if int(sizes.sum()) != flat.size:
            raise ValueError(f"packed units: sizes add up to {int(sizes.sum())} members but "
                             f"flat holds {flat.size}")
        units = object.__new__(cls)
        object.__setattr__(units, "text", text)
        object.__setattr__(units, "char_start", char_start)
        object.__setattr__(units, "char_end", char_end)
        _set_packed(units, flat, sizes)
        units._check(len(sizes))
        return units

    def __reduce__(self):
        # Pickled packed: two arrays instead of one small array per unit (see ``packed``).
        return (Units.from_packed, (*self.packed(), self.text, self.char_start, self.char_end))


def _set_packed(units: Units, flat: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    object.__setattr__(units, "_packed", (flat, sizes))
    return flat, sizes


def concatenate_units(parts: Sequence[Units], token_offsets: Sequence[int]) -> Units:
    """The units of several documents as one ``Units`` over their concatenated tokens.

    ``token_offsets[i]`` is where document i's tokens start in the concatenation; its members
    are shifted by it. Lets a whole shard be reduced in one ``aggregate`` call.
    """
    if len(parts) != len(token_offsets):
        raise ValueError(f"{len(parts)} Units but {len(token_offsets)} token offsets")
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Units.from_packed(empty, empty, [], empty, empty)
    packed = [u.packed() for u in parts]
    flat = np.concatenate([f + int(o) for (f, _), o in zip(packed, token_offsets)])
    sizes = np.concatenate([s for _, s in packed])
    text = [t for u in parts for t in u.text]
    return Units.from_packed(flat, sizes, text, np.concatenate([u.char_start for u in parts]),
                             np.concatenate([u.char_end for u in parts]))


def group_units(doc: DocTokens, granularity: Granularity) -> Units:
    """Group ``doc``'s tokens into the units of ``granularity``.

    A document without tokens has no units. ``Granularity.ALL`` (a padded batch tensor) has
    no units and raises ValueError.
    """
    granularity = Granularity.parse(granularity)
    if granularity is Granularity.ALL:
        raise ValueError(
            "granularity 'all' keeps the padded (n, l, d) tensor and has no units; use "
            "'all_tokens' for one unit per token"
        )
    if len(doc) == 0:
        return _units(doc, [])
    if granularity is Granularity.ALL_TOKENS:
        return _units(doc, _singletons(np.arange(len(doc), dtype=np.int64)))
    if granularity is Granularity.TOKEN:
        return _units(doc, _singletons(np.flatnonzero(~doc.special)))
    if granularity is Granularity.CLS_TOKEN:
        return _units(doc, [np.array([0], dtype=np.int64)])
    if granularity is Granularity.SAMPLE:
        content = np.flatnonzero(~doc.special)
        if content.size == 0:
            content = np.arange(len(doc), dtype=np.int64)
        return _units(doc, [content.astype(np.int64)])
    if granularity is Granularity.WORD:
        return _units(doc, _word_members(doc.word_ids))
    if granularity is Granularity.SENTENCE:
        return _sentence_units(doc)
    raise AssertionError(f"unhandled granularity {granularity!r}")


def _singletons(positions: np.ndarray) -> list[np.ndarray]:
    """One single-token member array per position (row views of one array: cheap to make)."""
    return list(positions.astype(np.int64).reshape(-1, 1))


def _units(doc: DocTokens, members: list[np.ndarray]) -> Units:
    """Units whose span is min start .. max end of their tokens (as given by the offsets),
    without the whitespace at either end (GPT-2's and Llama's tokens include the space before
    them: the word is "movie", not " movie"); a unit that is only whitespace keeps it.

    Vectorised over units (``reduceat``): tokenization runs on the CPU tasks of every job, and a
    per-unit numpy call made it cost as much as the forward pass of a small model at split 1.
    """
    if not members:
        empty = np.zeros(0, dtype=np.int64)
        return Units(members=[], text=[], char_start=empty, char_end=empty)
    sizes = np.fromiter((m.size for m in members), dtype=np.int64, count=len(members))
    if (sizes == 0).any():
        raise ValueError("a unit without tokens: every unit needs at least one token position")
    flat = np.concatenate(members)
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    starts = np.minimum.reduceat(doc.offsets[flat, 0], first).astype(np.int64)
    ends = np.maximum.reduceat(doc.offsets[flat, 1], first).astype(np.int64)
    text = doc.text
    texts = [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    for u, t in enumerate(texts):  # byte-level / Metaspace tokens carry the space before them
        if t and (t[0].isspace() or t[-1].isspace()) and not t.isspace():
            lead, trail = len(t) - len(t.lstrip()), len(t) - len(t.rstrip())
            starts[u] += lead
            ends[u] -= trail
            texts[u] = t[lead:len(t) - trail]
    special = np.flatnonzero((sizes == 1) & doc.special[flat[first]])
    for u in special.tolist():  # a special token has no span: its token string is its text
        texts[u] = doc.tokens[int(flat[first[u]])] if doc.tokens is not None else ""
    units = Units(members=members, text=texts, char_start=starts, char_end=ends)
    _set_packed(units, flat.astype(np.int64, copy=False), sizes)
    return units


def _word_members(word_ids: np.ndarray) -> list[np.ndarray]:
    """Token positions per distinct non-negative word id, words in order of first appearance."""
    positions = np.flatnonzero(word_ids >= 0)
    if positions.size == 0:
        return []
    _, first, inverse = np.unique(word_ids[positions], return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")[inverse]  # word order
    order = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(rank[order])) + 1
    return [positions[idx].astype(np.int64) for idx in np.split(order, bounds)]


def _sentence_units(doc: DocTokens) -> Units:
    """Non-special tokens grouped by the sentence containing their first character.

    A token starting in the whitespace between two sentences joins the next one (or the last
    sentence at the end of the text); sentences that get no token are dropped. A unit's span
    is its sentence's span, except where its tokens end before the sentence does (the last
    sentence of a truncated document): then it runs from the earlier of the sentence's start
    and its first token's to its last token's end, so it claims only characters the model saw
    and never ends before it starts (a stub of whitespace tokens, such as GPT-2's "\n\n",
    keeps the whitespace it covers).
    """
    content = np.flatnonzero(~doc.special)
    sentences = np.array(split_sentences(doc.text), dtype=np.int64).reshape(-1, 2)  # (s, 2)
    if content.size == 0:
        return _units(doc, [])
    if sentences.shape[0] == 0:  # tokens but no sentence: whitespace-only text
        return _units(doc, [content.astype(np.int64)])
    # First sentence whose end lies after the token's start: the one containing it, or the next.
    which = np.searchsorted(sentences[:, 1], doc.offsets[content, 0], side="right")
    which = np.minimum(which, sentences.shape[0] - 1)
    order = np.argsort(which, kind="stable")
    kept, first = np.unique(which[order], return_index=True)
    members = [content[idx].astype(np.int64) for idx in np.split(order, first[1:])]
    starts, ends = sentences[kept, 0], sentences[kept, 1]
    sorted_tokens = content[order]  # grouped by unit, in unit order
    token_end = np.maximum.reduceat(doc.offsets[sorted_tokens, 1], first)
    token_start = np.minimum.reduceat(doc.offsets[sorted_tokens, 0], first)
    cut = token_end < ends
    starts = np.where(cut, np.minimum(starts, token_start), starts)
    ends = np.where(cut, token_end, ends)
    texts = [doc.text[s:e] for s, e in zip(starts, ends)]
    return Units(members=members, text=texts, char_start=starts, char_end=ends)


def doc_tokens_from_encodings(text: str, encodings: Sequence[Any], tokenizer: Any) -> DocTokens:
    """Build a document's DocTokens from its ``tokenizers.Encoding`` windows, in order.

    ``encodings`` are a fast tokenizer's ``BatchEncoding.encodings[i]`` for one document, or the
    overflowing windows of one document (``return_overflowing_tokens=True``), with offsets into
    ``text``. Padding positions (attention mask 0) are dropped, so the activations paired with
    the result must drop them too.

    The tokenizers library (0.23) gives overflowing windows document-level word ids, and
    those are used as they are. If the ids restart in each window instead, they are renumbered
    to the document: a token repeated by a window's stride keeps its word, and a word cut by a
    window boundary stays one word when ``tokenizer`` reads the joined text as one word.
    """
    offsets, special, raw_ids, tokens = [], [], [], []
    for enc in encodings:
        keep = np.asarray(enc.attention_mask, dtype=bool) if enc.attention_mask else None
        win_offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        win_special = np.asarray(enc.special_tokens_mask, dtype=bool)
        win_ids = np.array([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
        win_ids[win_special] = -1
        win_tokens = list(enc.tokens)
        if keep is not None and not keep.all():
            win_offsets, win_special, win_ids = win_offsets[keep], win_special[keep], win_ids[keep]
            win_tokens = [tok for tok, k in zip(win_tokens, keep) if k]
        offsets.append(win_offsets)
        special.append(win_special)
        raw_ids.append(win_ids)
        tokens.extend(win_tokens)
    if not offsets:
        raise ValueError(f"no encodings given for document {text[:40]!r}; pass at least one window")
    all_offsets, all_special = np.concatenate(offsets), np.concatenate(special)
    if tokenizer is not None and not splits_words_at_whitespace(tokenizer):
        word_ids = whitespace_word_ids(text, all_offsets, all_special)
    elif _ids_are_document_level(offsets, raw_ids):
        word_ids = np.concatenate(raw_ids)
    else:
        word_ids = _renumber_window_ids(text, offsets, raw_ids, tokenizer)
    return DocTokens(
        text=text,
        offsets=all_offsets,
        special=all_special,
        word_ids=word_ids,
        tokens=tokens,
    )


@functools.lru_cache(maxsize=16)
def splits_words_at_whitespace(tokenizer: Any) -> bool:
    """Whether the tokenizer's word ids tell words apart: "a b" must give two word ids.

    Most fast tokenizers pre-split on whitespace (BERT, GPT-2's byte level) and number the
    pieces. Llama/Mistral-style SentencePiece tokenizers in transformers 5 use ``Metaspace``
    with ``split=False``: one piece per text, every token word 0, so WORD units would silently
    be whole documents. For those, words come from the text instead (``whitespace_word_ids``).
    """
    if hasattr(tokenizer, "backend_tokenizer"):  # transformers fast tokenizer
        word_ids = tokenizer("a b", add_special_tokens=False, truncation=False).word_ids()
    else:  # a tokenizers.Tokenizer (whatever truncation it holds keeps 2 tokens)
        word_ids = tokenizer.encode("a b", add_special_tokens=False).word_ids
    return len({w for w in word_ids if w is not None}) > 1


_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def whitespace_word_ids(text: str, offsets: np.ndarray, special: np.ndarray) -> np.ndarray:
    """Word ids from the text: a word is a maximal run of non-whitespace characters, and a
    token belongs to the word of its first non-whitespace character (a token that is only
    whitespace, such as a lone "▁", joins the word after it; at the end of the text, the last
    word). Special tokens get -1. Vectorised over characters and tokens."""
    ids = np.full(offsets.shape[0], -1, dtype=np.int64)
    content = np.flatnonzero(~special)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    solid = ~np.isin(codes, _WHITESPACE)
    if content.size == 0 or not solid.any():
        ids[content] = 0
        return ids
    word_of_char = np.cumsum(solid & ~np.concatenate(([False], solid[:-1]))) - 1  # (n_chars,)
    n = codes.shape[0]
    # next_solid[p]: the first non-whitespace character at or after p (n if none)
    positions = np.where(solid, np.arange(n), n)
    next_solid = np.minimum.accumulate(positions[::-1])[::-1]
    starts = np.minimum(offsets[content, 0], n - 1)
    anchor = next_solid[starts]
    last_solid = int(np.flatnonzero(solid)[-1])
    ids[content] = word_of_char[np.where(anchor < n, anchor, last_solid)]
    return ids


def _ids_are_document_level(offsets: list[np.ndarray], raw_ids: list[np.ndarray]) -> bool:
    """True if word ids never go back across windows, and stride-repeated tokens keep their id.

    Window-local ids restart at 0, which shows as a decrease, or as a repeated token whose id
    changed, as soon as an earlier window held more than one word.
    """
    seen: dict[tuple[int, int], int] = {}
    last = -1
    for win_offsets, win_ids in zip(offsets, raw_ids):
        for (start, end), word in zip(win_offsets.tolist(), win_ids.tolist()):
            if word < 0:
                continue
            if (start, end) in seen:  # repeated by the stride
                if seen[(start, end)] != word:
                    return False
                continue
            if word < last:
                return False
            seen[(start, end)] = last = word
    return True


def _renumber_window_ids(
    text: str, offsets: list[np.ndarray], raw_ids: list[np.ndarray], tokenizer: Any
) -> np.ndarray:
    """Document-level word ids from window-local ones (see doc_tokens_from_encodings)."""
    span_word: dict[tuple[int, int], int] = {}  # token span -> document word
    word_span: dict[int, list[int]] = {}  # document word -> [min start, max end]
    out: list[np.ndarray] = []
    next_word = 0
    prev_last_word: int | None = None  # document word of the previous window's last token
    for win_offsets, win_ids in zip(offsets, raw_ids):
        local_to_doc: dict[int, int] = {}
        # Repeated tokens (stride) pin their local word to the document word they already have.
        for (start, end), word in zip(win_offsets.tolist(), win_ids.tolist()):
            if word >= 0 and word not in local_to_doc and (start, end) in span_word:
                local_to_doc[word] = span_word[(start, end)]
        first_new = True
        doc_ids = np.full(win_ids.shape, -1, dtype=np.int64)
        for i, ((start, end), word) in enumerate(zip(win_offsets.tolist(), win_ids.tolist())):
            if word < 0:
                continue
            if word not in local_to_doc:
                local_span = _local_word_span(win_offsets, win_ids, word)
                if (
                    first_new
                    and prev_last_word is not None
                    and _continues_word(text, word_span[prev_last_word], local_span, tokenizer)
                ):
                    local_to_doc[word] = prev_last_word
                else:
                    local_to_doc[word] = next_word
                    next_word += 1
                first_new = False
            doc_word = local_to_doc[word]
            doc_ids[i] = doc_word
            span_word.setdefault((start, end), doc_word)
            span = word_span.setdefault(doc_word, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        content = np.flatnonzero(doc_ids >= 0)
        if content.size:
            prev_last_word = int(doc_ids[content[-1]])
        out.append(doc_ids)
    return np.concatenate(out)


def _local_word_span(win_offsets: np.ndarray, win_ids: np.ndarray, word: int) -> tuple[int, int]:
    rows = win_offsets[win_ids == word]
    return int(rows[:, 0].min()), int(rows[:, 1].max())


def _continues_word(text: str, prev: list[int], cur: tuple[int, int], tokenizer: Any) -> bool:
    """Whether the word at ``cur`` is the rest of the word at ``prev``, cut by a window boundary."""
    if cur[0] != prev[1]:
        return False  # a gap (whitespace) or a step back: a different word
    if tokenizer is None:
        raise ValueError(
            "the encodings have window-local word ids, and deciding whether a word continues "
            "across windows needs the tokenizer; pass the fast tokenizer that made them"
        )
    joined = text[prev[0] : cur[1]]
    if hasattr(tokenizer, "backend_tokenizer"):  # transformers fast tokenizer
        word_ids = tokenizer(joined, add_special_tokens=False, truncation=False).word_ids()
    else:  # a tokenizers.Tokenizer
        word_ids = tokenizer.encode(joined, add_special_tokens=False).word_ids
    return len({w for w in word_ids if w is not None}) == 1
