"""A shard's documents packed into columns come back equal, for every granularity, tokenizer
family, windowed and truncated documents, documents without units, and string ids."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from raypipe.batching import tokenize_documents
from raypipe.batching.packed_docs import pack_documents, unpack_documents
from raypipe.corpus import Document
from raypipe.granularity import Granularity
from raypipe.models.loading import load_tokenizer

TEXTS = [
    "The cat sat on the mat. It was happy! Then it slept.",
    "   ",                                     # skipped (empty)
    "\u200b",                                  # only special tokens: no units
    "naïve café — déjà vu, 12,345.67 and emoji 🙂 too",
    "word " * 90 + "antidisestablishmentarianism " * 10,  # several windows at max_length 64
]


def _plain(docs):
    """Everything a document holds, as plain Python values."""
    return [(d.doc_id, d.position, d.text, d.truncated, [w.tolist() for w in d.windows],
             [m.tolist() for m in d.units.members], list(d.units.text),
             d.units.char_start.tolist(), d.units.char_end.tolist()) for d in docs]


@pytest.mark.parametrize("granularity", ["all_tokens", "token", "cls_token", "sample", "word",
                                         "sentence"])
@pytest.mark.parametrize("overflow", ["window", "truncate"])
def test_round_trip_through_pickle(minilm_path, granularity, overflow):
    tokenizer = load_tokenizer(minilm_path)
    documents = [Document(f"id-{i}" if i % 2 else i, t, i) for i, t in enumerate(TEXTS)]
    docs, _ = tokenize_documents(documents, tokenizer, max_length=64, overflow=overflow,
                                 granularity=Granularity.parse(granularity))
    assert len(docs) == 4 and any(len(d.windows) > 1 or d.truncated for d in docs)
    back = unpack_documents(pickle.loads(pickle.dumps(pack_documents(docs))))
    assert _plain(back) == _plain(docs)
    for doc in back:  # what the model side reads: int64 ids and packed members
        assert all(w.dtype == np.int64 for w in doc.windows)
        flat, sizes = doc.units.packed()
        assert flat.dtype == np.int64 and sizes.sum() == flat.size == sum(
            len(m) for m in doc.units.members)


@pytest.mark.parametrize("model_fixture", ["tiny_gpt2_path", "tiny_llama_path"])
def test_round_trip_other_tokenizer_families(model_fixture, request):
    tokenizer = load_tokenizer(request.getfixturevalue(model_fixture), causal=True)
    documents = [Document(i, t, i) for i, t in enumerate(TEXTS)]
    docs, _ = tokenize_documents(documents, tokenizer, max_length=64, overflow="window",
                                 granularity=Granularity.WORD)
    assert _plain(unpack_documents(pack_documents(docs))) == _plain(docs)


def test_no_documents():
    assert unpack_documents(pickle.loads(pickle.dumps(pack_documents([])))) == []
