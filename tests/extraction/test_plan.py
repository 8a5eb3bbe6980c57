"""The driver's plan fails fast, before Ray or any write, on settings the actors could not run."""
from __future__ import annotations

import pytest

from raypipe.config import ConfigError, ExtractConfig
from raypipe.extraction.plan import plan_extraction, position_table_size

TEXTS = ["a first document", "a second one"]


def config(model: str, tmp_path, **kw) -> ExtractConfig:
    return ExtractConfig(model=model, corpus=TEXTS, out=str(tmp_path / "s"), split_points=[1], **kw)


def test_plan_resolves_split_points_and_the_models_max_length(minilm_path, tmp_path):
    plan = plan_extraction(config(minilm_path, tmp_path))
    assert plan.split_points == ["encoder.layer.1"] and plan.max_length == 512
    assert plan_extraction(config(minilm_path, tmp_path, max_length=64)).max_length == 64


def test_max_length_beyond_the_position_table_is_refused(minilm_path, tmp_path):
    with pytest.raises(ConfigError, match=r"max_length=600 .*512 positions.*--max-length 512"):
        plan_extraction(config(minilm_path, tmp_path, max_length=600))
    assert not (tmp_path / "s").exists()


def test_left_padding_is_refused_for_encoders_only(minilm_path, tiny_gpt2_path, tmp_path):
    with pytest.raises(ConfigError, match="right padding"):
        plan_extraction(config(minilm_path, tmp_path, padding_side="left"))
    assert plan_extraction(config(tiny_gpt2_path, tmp_path, padding_side="left")).split_points


def test_position_table_size_of_computed_and_offset_positions():
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaModel, RobertaConfig, RobertaModel

    with init_empty_weights():
        llama = LlamaModel(LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                       intermediate_size=32))
        roberta = RobertaModel(RobertaConfig(num_hidden_layers=1, max_position_embeddings=514))
    assert position_table_size(llama) is None   # rotary: no table to overrun
    assert position_table_size(roberta) == 512  # positions start at padding_idx + 1 = 2


def test_max_length_cap_bounds_the_models_maximum_only(minilm_path, tiny_bert_path, tmp_path):
    assert plan_extraction(config(minilm_path, tmp_path, max_length_cap=256)).max_length == 256
    assert plan_extraction(config(tiny_bert_path, tmp_path, max_length_cap=256)).max_length == 128
    # an explicit --max-length is taken as asked (and checked), the cap does not apply to it
    assert plan_extraction(config(minilm_path, tmp_path, max_length=300,
                                  max_length_cap=256)).max_length == 300


def test_corpus_split_picks_the_split_of_a_saved_dataset_dict(minilm_path, tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": TEXTS + ["third"]})}
                         ).save_to_disk(tmp_path / "dd")
    base = dict(model=minilm_path, corpus=str(tmp_path / "dd"), out=str(tmp_path / "s"))
    with pytest.raises(Exception, match=r"no split 'train'.*'test'.*--corpus-split"):
        plan_extraction(ExtractConfig(**base))
    plan = plan_extraction(ExtractConfig(**base, corpus_split="test"))
    assert plan.n_docs == 3 and plan.corpus.describe()["split"] == "test"


def test_default_shard_size_follows_the_documents_length(minilm_path, tmp_path):
    """Without --docs-per-shard, long documents get fewer per shard than short ones (the bytes
    bound at token granularity), and the plan's shards cover the corpus once."""
    short = ["a short sentence"] * 4000
    long = [" ".join(["word"] * 500)] * 4000
    base = dict(model=minilm_path, out=str(tmp_path / "s"), split_points=[1, -1])
    a = plan_extraction(ExtractConfig(corpus=short, **base))
    b = plan_extraction(ExtractConfig(corpus=long, **base))
    assert a.docs_per_shard == 1000                  # 4 shards for the one actor
    row = 2 * 384 * 4                                # two split points of 384 floats
    # 502 tokens a document ([CLS] and [SEP] included), 500 rows at token granularity
    assert b.docs_per_shard == (256 << 20) // (500 * row) == 174
    assert plan_extraction(ExtractConfig(corpus=long, granularity="sample", **base)
                           ).docs_per_shard == (1 << 18) // 502   # tokens bound, one row each
    assert plan_extraction(ExtractConfig(corpus=short, docs_per_shard=7, **base)).docs_per_shard == 7
    covered = [d for _, start, stop in b.shards for d in range(start, stop)]
    assert covered == list(range(4000))


def test_a_stores_recorded_shard_size_is_kept_on_resume(minilm_path, tmp_path):
    import json

    out = tmp_path / "s"
    out.mkdir()
    config = ExtractConfig(model=minilm_path, corpus=["one text"] * 100, out=str(out))
    assert plan_extraction(config).docs_per_shard == 25
    from raypipe.store.manifest import FORMAT
    (out / "manifest.json").write_text(json.dumps({"format": FORMAT, "docs_per_shard": 512}))
    assert plan_extraction(config).docs_per_shard == 512
