"""The Rust backend alone tokenizes exactly as the transformers tokenizer it was shipped from.

The tokenize tasks use ``BackendTokenizer`` (no transformers, no torch); the in-memory API and
the model side use the transformers tokenizer. Every id, window, offset and unit must agree, for
every tokenizer family the tests build (WordPiece BERT, byte-level BPE GPT-2, SentencePiece-style
Llama) and for documents that need windows.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from raypipe.batching import tokenize_documents
from raypipe.batching.backend import BackendTokenizer, backend_spec
from raypipe.corpus import Document
from raypipe.granularity import Granularity
from raypipe.models.loading import load_tokenizer

TEXTS = [
    "The cat sat on the mat. It was happy!",
    "   ",
    "Tokenization splits unbelievably long words; does it? Yes. Mr. Smith agrees.",
    "naïve café — déjà vu, 12,345.67 and emoji 🙂 too",
    " leading space and trailing space ",
    "word " * 150 + "antidisestablishmentarianism " * 20,  # several windows at max_length 64
]
MODELS = ["tiny_gpt2_path", "tiny_llama_path", "tiny_bert_path", "minilm_path"]


def _docs():
    return [Document(i, t, i) for i, t in enumerate(TEXTS)]


def _as_plain(docs):
    return [(d.doc_id, [w.tolist() for w in d.windows], d.truncated, d.units.text,
             d.units.char_start.tolist(), d.units.char_end.tolist(), d.units.packed()[0].tolist())
            for d in docs]


@pytest.mark.parametrize("model_fixture", MODELS)
@pytest.mark.parametrize("overflow", ["truncate", "window"])
@pytest.mark.parametrize("granularity", ["all_tokens", "token", "word", "sentence"])
def test_backend_gives_the_transformers_windows_and_units(model_fixture, overflow, granularity,
                                                          request):
    path = request.getfixturevalue(model_fixture)
    hf = load_tokenizer(path, causal=model_fixture in ("tiny_gpt2_path", "tiny_llama_path"))
    backend = BackendTokenizer.from_spec(backend_spec(hf))
    gran = Granularity.parse(granularity)
    want, want_stats = tokenize_documents(_docs(), hf, max_length=64, overflow=overflow,
                                          granularity=gran)
    got, got_stats = tokenize_documents(_docs(), backend, max_length=64, overflow=overflow,
                                        granularity=gran)
    assert _as_plain(got) == _as_plain(want)
    assert got_stats.as_dict() == want_stats.as_dict()
    assert want_stats.skipped_empty == 1
    # the long document really was cut: a test that never windows would prove little
    long_doc = [d for d in want if d.doc_id == len(TEXTS) - 1][0]
    assert (len(long_doc.windows) > 1) == (overflow == "window") and long_doc.truncated == (overflow == "truncate")


def test_spec_is_json_and_loads_are_cached(minilm_path):
    spec = backend_spec(load_tokenizer(minilm_path))
    assert json.loads(json.dumps(spec)) == spec
    assert BackendTokenizer.from_spec(spec) is BackendTokenizer.from_spec(dict(spec))


def test_truncation_side_left_keeps_the_end(tiny_gpt2_path):
    hf = load_tokenizer(tiny_gpt2_path, causal=True)
    hf.truncation_side = "left"
    backend = BackendTokenizer.from_spec(backend_spec(hf))
    text = " ".join(f"w{i}" for i in range(200))
    want = tokenize_documents([Document(0, text, 0)], hf, max_length=16, overflow="truncate",
                              granularity=Granularity.TOKEN)[0][0]
    got = tokenize_documents([Document(0, text, 0)], backend, max_length=16, overflow="truncate",
                             granularity=Granularity.TOKEN)[0][0]
    assert np.array_equal(got.windows[0], want.windows[0])
    assert got.units.char_end.tolist() == want.units.char_end.tolist()
    assert want.units.char_end[-1] == len(text) and want.units.char_start[0] > len(text) // 2


def test_a_slow_tokenizer_is_refused():
    class Slow:
        pass

    with pytest.raises(ValueError, match="not a fast"):
        backend_spec(Slow())


def test_tokenize_task_imports_neither_torch_nor_transformers(minilm_path, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(backend_spec(load_tokenizer(minilm_path))))
    code = f"""
import json, pickle, sys
import numpy as np
from raypipe.corpus import open_corpus
from raypipe.extraction.tokenize_stage import tokenize_shard
corpus = open_corpus({TEXTS[:3]!r})
out = tokenize_shard({{"shard_id": np.array([0]), "doc_start": np.array([0]), "doc_end": np.array([3])}},
                     corpus=corpus, tokenizer=json.load(open({str(spec_file)!r})), max_length=64,
                     overflow="truncate", granularity="word")
shard = pickle.loads(out["payload"][0])
print(len(shard["docs"]["doc_id"]), shard["stats"]["skipped_empty"], "torch" in sys.modules, "transformers" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == ["2", "1", "False", "False"]


@pytest.mark.parametrize("model_fixture", MODELS)
def test_special_ids_and_plain_ids_match_transformers(model_fixture, request):
    """What the attribution CPU tasks read from the backend: baselines' token ids, and a
    continuation's ids with no special tokens and no truncation, even right after a
    truncating ``encode_windows``."""
    from raypipe.attribution.perturb import resolve_baseline
    from raypipe.attribution.perturb_stage import effective_baseline
    from raypipe.batching.backend import encode_ids

    path = request.getfixturevalue(model_fixture)
    hf = load_tokenizer(path, causal=model_fixture in ("tiny_gpt2_path", "tiny_llama_path"))
    backend = BackendTokenizer.from_spec(backend_spec(hf))
    for name in ("mask", "pad", "unk", "eos", "bos"):
        assert getattr(backend, f"{name}_token_id") == getattr(hf, f"{name}_token_id")
    for baseline in ("mask", "pad", "unk"):
        try:
            want = resolve_baseline(effective_baseline(baseline, hf), hf)
        except ValueError:
            with pytest.raises(ValueError):
                resolve_baseline(effective_baseline(baseline, backend), backend)
            continue
        assert resolve_baseline(effective_baseline(baseline, backend), backend) == want
    backend.encode_windows(TEXTS, max_length=8)
    text = TEXTS[-1]
    assert encode_ids(backend, text) == encode_ids(hf, text)
    assert len(encode_ids(backend, text)) > 8


def test_documents_of_special_tokens_only_are_counted(minilm_path):
    """Zero-width spaces, control characters: not empty to str.strip(), but BERT's normalizer
    drops them, leaving [CLS] [SEP]: no unit, so the document is counted, never silent."""
    minilm_tokenizer = load_tokenizer(minilm_path)
    docs = [Document(0, "\u200b\u200b", 0), Document(1, "\x00\x01", 1), Document(2, "fine", 2)]
    out, stats = tokenize_documents(docs, minilm_tokenizer, max_length=32, overflow="truncate",
                                    granularity=Granularity.WORD)
    assert [len(d.units.members) for d in out] == [0, 0, 1]
    assert stats.as_dict()["no_units"] == 2 and stats.docs == 3
