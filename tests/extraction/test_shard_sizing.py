"""The default shard size: bounded by tokens, by activation bytes and by the pool's size."""
from __future__ import annotations

import pytest

from raypipe.extraction.shard_sizing import (SHARD_BYTES, SHARD_TOKENS, docs_per_shard,
                                             module_width, sample_ranges)


def test_each_bound_decides_where_it_is_the_tightest():
    # short sentences, a small model: the pool's size decides (at least 4 shards per actor)
    assert docs_per_shard(10_000, 27, 27, 384 * 4, actors=1) == 2_500
    assert docs_per_shard(10_000, 27, 27, 384 * 4, actors=2) == 1_250
    # a huge corpus of such sentences: tokens decide (payload and redo cost)
    n = docs_per_shard(10_000_000, 27, 1, 384 * 4, actors=1)
    assert n == SHARD_TOKENS // 27
    # long documents at token granularity of a wide model: the table's bytes decide
    row = 3 * 4096 * 2                      # three split points of 4,096 in float16
    n = docs_per_shard(1_000_000, 4096, 4096, row, actors=1)
    assert n == SHARD_BYTES // (4096 * row) == 2
    assert n * 4096 * row <= SHARD_BYTES
    # never below one document, even when one document is over every bound
    assert docs_per_shard(100, 10 ** 7, 10 ** 7, 10 ** 6, actors=1) == 1
    # a corpus of empty documents (no tokens, no rows): only the pool bound is left
    assert docs_per_shard(40, 0, 0, 1536, actors=1) == 10


def test_sample_ranges_spread_over_the_corpus_and_stay_inside_it():
    assert sample_ranges(0) == []
    assert sample_ranges(100) == [(0, 100)]           # small corpora are read whole
    ranges = sample_ranges(10_000)
    assert len(ranges) == 8 and ranges[0] == (0, 32) and ranges[-1] == (10_000 - 32, 10_000)
    assert all(b - a == 32 for a, b in ranges)
    assert all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


@pytest.mark.parametrize("path, width", [
    ("h.1", 48), ("h.1.mlp", 48), ("h.1.mlp.c_fc", 192), ("h.1.attn.c_attn", 144)])
def test_module_width_of_gpt2_modules(path, width):
    from accelerate import init_empty_weights
    from transformers import GPT2Config, GPT2Model

    with init_empty_weights():
        model = GPT2Model(GPT2Config(n_layer=2, n_embd=48, n_head=2))
    assert module_width(model.get_submodule(path), 1) == width


@pytest.mark.parametrize("path, width", [
    ("layers.0", 32), ("layers.0.mlp", 32), ("layers.0.mlp.up_proj", 80),
    ("layers.0.self_attn.k_proj", 16)])
def test_module_width_of_llama_modules(path, width):
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaModel

    with init_empty_weights():
        model = LlamaModel(LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=80))
    assert module_width(model.get_submodule(path), 1) == width
