"""Split points: finding the block list, resolving ints and paths, and the errors."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
)

from raypipe.models import SplitPointError, find_block_list, resolve_split_points


def _gpt2(cls=GPT2LMHeadModel) -> torch.nn.Module:
    return cls(GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=100, n_positions=32))


def _llama(cls=LlamaForCausalLM) -> torch.nn.Module:
    return cls(
        LlamaConfig(
            num_hidden_layers=3, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=32, vocab_size=100,
        )
    )


def _bert() -> torch.nn.Module:
    return BertModel(
        BertConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
                   intermediate_size=32, vocab_size=100)
    )


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_gpt2, "transformer.h"),
        (lambda: _gpt2(GPT2Model), "h"),
        (_llama, "model.layers"),
        (lambda: _llama(LlamaModel), "layers"),
        (_bert, "encoder.layer"),
    ],
)
def test_find_block_list_on_hf_architectures(build, expected):
    assert find_block_list(build()) == expected


class _Experts(torch.nn.Module):
    """A block with more experts (8) than the model has blocks (2), as in MoE models."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = torch.nn.Linear(8, 8)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(8, 2) for _ in range(8))


def test_find_block_list_prefers_blocks_over_more_numerous_experts():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(_Experts() for _ in range(2))
    assert find_block_list(model) == "layers"


def test_find_block_list_without_module_list_raises():
    with pytest.raises(SplitPointError, match="no nn.ModuleList"):
        find_block_list(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_ints_digit_strings_and_paths_resolve_unique_in_order():
    model = _gpt2()
    resolved = resolve_split_points(
        model, ["transformer.h.2", -1, "1", 0, "-3", "transformer.h.0.mlp", "transformer.wte"]
    )
    assert resolved == [
        "transformer.wte",
        "transformer.h.0",
        "transformer.h.0.mlp",
        "transformer.h.1",
        "transformer.h.2",
    ]


def test_negative_ints_count_from_the_end():
    assert resolve_split_points(_llama(), [-1]) == ["model.layers.2"]
    assert resolve_split_points(_bert(), [-3]) == ["encoder.layer.0"]


@pytest.mark.parametrize("point", [3, -4, "7"])
def test_int_out_of_range_names_the_range(point):
    with pytest.raises(SplitPointError, match=r"\[-3, 2\]"):
        resolve_split_points(_gpt2(), [point])


def test_wrong_path_lists_close_valid_paths():
    with pytest.raises(SplitPointError) as caught:
        resolve_split_points(_gpt2(), ["transfomer.h.1.mlpp"])
    message = str(caught.value)
    assert "'transfomer.h.1.mlpp'" in message
    assert "'transformer.h.1.mlp'" in message
    assert "[-3, 2]" in message


def test_empty_and_wrong_types_raise():
    with pytest.raises(SplitPointError, match="no split points"):
        resolve_split_points(_gpt2(), [])
    with pytest.raises(SplitPointError, match="bool"):
        resolve_split_points(_gpt2(), [True])
    with pytest.raises(SplitPointError, match="not a module"):
        resolve_split_points(_gpt2(), [""])
