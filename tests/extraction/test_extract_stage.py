"""The model stage without Ray: stored rows equal a plain transformers forward (hooks)."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from raypipe.config import ExtractConfig
from raypipe.extraction.extract_stage import ExtractShard
from raypipe.extraction.plan import plan_extraction
from raypipe.extraction.tokenize_stage import tokenize_shard
from raypipe.granularity import split_sentences
from raypipe.store import decode_activations
from tests.extraction.helpers import (anchor, group_mean, hooked_outputs, load_plain, visible,
                                      word_groups)

TEXTS = [
    "The cat sat on the mat. It was happy!",
    "",
    "Interpretability at scale needs streaming, sharding and resuming.",
    "Short one",
    "Tokenization splits unbelievably long words; does it? Yes. Mr. Smith agrees.",
]
MODELS = ["tiny_gpt2_path", "tiny_llama_path", "tiny_bert_path", "minilm_path"]


def run_stage(model_path: str, out, texts=TEXTS, **overrides):
    config = ExtractConfig(model=model_path, corpus=list(texts), out=str(out), progress=False,
                           **overrides)
    plan = plan_extraction(config)
    batch = {"shard_id": np.array([0]), "doc_start": np.array([0]), "doc_end": np.array([len(texts)])}
    tokenized = tokenize_shard(batch, corpus=plan.corpus, tokenizer=plan.tokenizer_spec,
                               max_length=plan.max_length,
                               overflow=config.overflow, granularity=config.granularity)
    stage = ExtractShard(config.to_dict() | {"corpus": "-"}, str(out))
    stage(tokenized)
    table = pq.read_table(out / "shards" / "shard-000000.parquet")
    acts = {p: decode_activations(table.column(p), config.store_dtype,
                                  int(table.schema.field(p).metadata[b"raypipe.dim"]))
            for p in plan.split_points}
    return plan, table, acts


@pytest.mark.parametrize("model_fixture", MODELS)
@pytest.mark.parametrize("granularity", ["token", "all_tokens"])
def test_token_rows_equal_plain_forward(model_fixture, granularity, request, tmp_path):
    path = request.getfixturevalue(model_fixture)
    plan, table, acts = run_stage(path, tmp_path, split_points=[0, -1], granularity=granularity,
                                  batch_tokens=40)
    model, tok = load_plain(path)
    doc_ids = table.column("doc_id").to_numpy()
    assert 1 not in doc_ids, "the empty document is skipped"
    for doc_id, text in enumerate(TEXTS):
        if not text:
            continue
        ref, enc = hooked_outputs(model, tok, text, plan.split_points, plan.max_length)
        keep = np.ones(len(enc["input_ids"]), bool) if granularity == "all_tokens" else \
            ~np.asarray(enc["special_tokens_mask"], bool)
        rows = doc_ids == doc_id
        assert rows.sum() == keep.sum()
        for p in plan.split_points:
            np.testing.assert_allclose(acts[p][rows], ref[p].numpy()[keep], atol=1e-5, rtol=1e-5)
        if granularity == "token":
            spans = np.asarray(enc["offset_mapping"])[keep]
            texts = table.column("text").to_pylist()
            got = [t for t, r in zip(texts, rows) if r]
            assert got == [visible(text, s, e) for s, e in spans]


@pytest.mark.parametrize("model_fixture,aggregation", [
    (m, a) for m in MODELS for a in ("mean", "max", "min", "signed_max", "sum")
    if a == "mean" or m in ("tiny_gpt2_path", "minilm_path")])
def test_word_sentence_sample_equal_independent_grouping(model_fixture, aggregation, request, tmp_path):
    path = request.getfixturevalue(model_fixture)
    model, tok = load_plain(path)
    for granularity in ("word", "sentence", "sample", "cls_token"):
        out = tmp_path / granularity
        plan, table, acts = run_stage(path, out, split_points=[-1], granularity=granularity,
                                      aggregation=aggregation)
        p = plan.split_points[0]
        doc_ids = table.column("doc_id").to_numpy()
        for doc_id, text in enumerate(TEXTS):
            if not text:
                continue
            ref, enc = hooked_outputs(model, tok, text, [p], plan.max_length)
            special = np.asarray(enc["special_tokens_mask"], bool)
            positions = [i for i in range(len(special)) if not special[i]]
            if granularity == "word":
                groups = word_groups(tok, text, enc)
            elif granularity == "sentence":
                spans = split_sentences(text)
                offsets = enc["offset_mapping"]
                groups = []
                for s, e in spans:
                    members = [i for i in positions if s <= anchor(text, *offsets[i], spans) < e]
                    if members:
                        groups.append(members)
            elif granularity == "cls_token":  # the first position: [CLS], BOS, or a token
                groups = [[0]]
            else:
                groups = [positions]
            expected = group_mean(ref[p].numpy(), groups, aggregation)
            np.testing.assert_allclose(acts[p][doc_ids == doc_id], expected, atol=1e-5, rtol=1e-5)


def test_windows_cover_every_token_and_truncation_is_counted(minilm_path, tmp_path):
    long_text = " ".join(f"word{i}" for i in range(60))
    _, table, _ = run_stage(minilm_path, tmp_path / "w", texts=[long_text], granularity="word",
                            max_length=16, overflow="window")
    assert table.num_rows == 60
    assert table.column("text").to_pylist() == long_text.split()
    _, table_t, _ = run_stage(minilm_path, tmp_path / "t", texts=[long_text], granularity="word",
                              max_length=16, overflow="truncate")
    assert 0 < table_t.num_rows < 60


def test_concurrent_calls_write_the_same_shards_as_one_at_a_time(minilm_path, tmp_path,
                                                                 torch_op_threads):
    """Two shards in progress on one actor (as Ray Data runs it) change no byte of either, and
    every torch op of the actor, model load included, runs on its lane threads (see
    raypipe.torch_thread.TorchLanes), neither the constructor's nor a call's."""
    import json
    import threading
    import time

    texts = TEXTS * 6
    config = ExtractConfig(model=minilm_path, corpus=list(texts), out=str(tmp_path / "a"),
                           progress=False, granularity="word")
    plan = plan_extraction(config)
    shards = [tokenize_shard({"shard_id": np.array([i]), "doc_start": np.array([i * 10]),
                              "doc_end": np.array([i * 10 + 10])}, corpus=plan.corpus,
                             tokenizer=plan.tokenizer_spec, max_length=plan.max_length,
                             overflow="truncate", granularity="word")
              for i in range(3)]
    checksums = {}
    torch_op_threads.clear()  # the plan's meta model ran no forward, but start clean
    for out, concurrent in (("a", False), ("b", True)):
        stage = ExtractShard(config.to_dict() | {"corpus": "-", "out": str(tmp_path / out)},
                             str(tmp_path / out))
        records = []
        if concurrent:
            threads = [threading.Thread(target=lambda s=s: records.append(stage(s))) for s in shards]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            # forwards run one at a time and each counts only its own forward, not the wait
            forwards = sum(json.loads(r["record"][0])["stats"]["forward_seconds"] for r in records)
            assert forwards <= wall
        else:
            records = [stage(s) for s in shards]
        checksums[out] = sorted(json.loads(r["record"][0])["checksum"] for r in records)
        assert all(json.loads(r["record"][0])["stats"]["seconds"] > 0 for r in records)
        assert torch_op_threads == stage._lanes.idents
        assert threading.get_ident() not in torch_op_threads
        torch_op_threads.clear()
    assert checksums["a"] == checksums["b"] and len(checksums["a"]) == 3
