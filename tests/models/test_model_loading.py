"""load_model_and_tokenizer: head choice, dtype, pad token, and clear errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from raypipe.models import ModelLoadError, load_model_and_tokenizer
from raypipe.models.loading import AUTO_CLASSES, choose_auto_class

try:
    from tests.models import tiny_models
except ImportError:
    import tiny_models


@pytest.mark.parametrize(
    ("architectures", "expected"),
    [
        (["GPT2LMHeadModel"], "AutoModelForCausalLM"),
        (["LlamaForCausalLM"], "AutoModelForCausalLM"),
        (["BertForSequenceClassification"], "AutoModelForSequenceClassification"),
        (["BertForMaskedLM"], "AutoModel"),
        (["BertModel"], "AutoModel"),
        (None, "AutoModel"),
    ],
)
def test_choose_auto_class_from_architectures(architectures, expected):
    assert choose_auto_class(architectures) is AUTO_CLASSES[expected]


def test_auto_selection_keeps_causal_head_and_bare_encoder(tiny_gpt2_path, tiny_bert_path):
    gpt2, tokenizer = load_model_and_tokenizer(tiny_gpt2_path)
    bert, _ = load_model_and_tokenizer(tiny_bert_path, auto_class="auto")
    assert type(gpt2).__name__ == "GPT2LMHeadModel"
    assert type(bert).__name__ == "BertModel"
    assert not gpt2.training and not bert.training
    assert tokenizer.is_fast
    assert next(gpt2.parameters()).dtype == torch.float32


def test_auto_selection_keeps_sequence_classifier(tmp_path):
    path = tiny_models.build_tiny_bert_classifier(tmp_path / "classifier")
    model, _ = load_model_and_tokenizer(path)
    assert type(model).__name__ == "BertForSequenceClassification"


def test_explicit_auto_class_by_name_and_by_type(tiny_gpt2_path):
    by_name, _ = load_model_and_tokenizer(tiny_gpt2_path, auto_class="AutoModel")
    by_type, _ = load_model_and_tokenizer(tiny_gpt2_path, auto_class=transformers.AutoModel)
    assert type(by_name).__name__ == type(by_type).__name__ == "GPT2Model"


def test_unknown_auto_class_and_dtype_raise(tiny_gpt2_path):
    with pytest.raises(ValueError, match="AutoModelForCausalLM"):
        load_model_and_tokenizer(tiny_gpt2_path, auto_class="AutoModelForNothing")
    with pytest.raises(ValueError, match="bfloat16"):
        load_model_and_tokenizer(tiny_gpt2_path, dtype="float8")


def test_dtype_is_applied(tiny_llama_path):
    model, _ = load_model_and_tokenizer(tiny_llama_path, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_unknown_model_raises_model_load_error(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ModelLoadError, match="no_such_model") as caught:
        load_model_and_tokenizer(missing)
    assert "local path" in str(caught.value)
    with pytest.raises(ModelLoadError, match="someorg/no-such-model"):
        load_model_and_tokenizer("someorg/no-such-model")


def test_causal_lm_without_pad_token_gets_eos(tmp_path, tiny_gpt2_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    _, loaded = load_model_and_tokenizer(tiny_gpt2_path, tokenizer=str(tmp_path))
    assert loaded.pad_token == "[SEP]"


def test_encoder_keeps_its_missing_pad_token(tmp_path, tiny_bert_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(tmp_path)
    _, loaded = load_model_and_tokenizer(tiny_bert_path, tokenizer=str(tmp_path))
    assert loaded.pad_token is None


def test_slow_tokenizer_is_refused(monkeypatch, tiny_bert_path):
    slow = SimpleNamespace(is_fast=False, pad_token="[PAD]")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: slow)
    with pytest.raises(ModelLoadError, match="fast tokenizer"):
        load_model_and_tokenizer(tiny_bert_path)


def test_actor_device_map_keeps_cpu_actors_off_a_visible_gpu(monkeypatch):
    from raypipe.models.loading import actor_device_map

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    assert actor_device_map(0) == "cpu"          # reserved no GPU: must not take one
    assert actor_device_map(1) == "cuda"         # Ray made its one GPU visible
    assert actor_device_map(0.5) == "cuda"       # a fraction of one
    assert actor_device_map(2) == "auto"         # sharded across its GPUs by accelerate
    assert actor_device_map(2, {"": "cuda:1"}) == {"": "cuda:1"}  # given: used as is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert actor_device_map(1) == "cpu"          # asked for a GPU where there is none


def test_custom_code_is_not_run_unless_trusted(tmp_path):
    """trust_remote_code is off by default: a checkpoint with its own code (auto_map) is refused
    with a message naming the flag, and its code never runs."""
    import json

    from raypipe.config import ExtractConfig
    from raypipe.models.loading import load_config

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "raypipe-test-remote", "architectures": ["RemoteModel"],
        "auto_map": {"AutoConfig": "configuration_remote.RemoteConfig"}}))
    (tmp_path / "configuration_remote.py").write_text(
        "import pathlib\nfrom transformers import PretrainedConfig\n"
        "pathlib.Path(__file__).with_name('EXECUTED').write_text('yes')\n"
        "class RemoteConfig(PretrainedConfig):\n    model_type = 'raypipe-test-remote'\n")
    assert ExtractConfig(model="m", corpus="c", out="o").trust_remote_code is False
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_config(str(tmp_path))
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_model_and_tokenizer(str(tmp_path))
    assert not (tmp_path / "EXECUTED").exists()
