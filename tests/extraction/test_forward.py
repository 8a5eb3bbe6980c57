"""The extraction's model-side math: units reduced while the forwards go on, window by window."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.batching import tokenize_documents
from raypipe.corpus import Document
from raypipe.extraction import forward
from raypipe.extraction.forward import document_activations, unit_activations, unit_rows
from raypipe.models import SplitModel
from tests.extraction.helpers import load_plain

LONG = " ".join(f"word{i}" for i in range(40))
TEXTS = [LONG, "a short text", "another short one here", " ".join(f"w{i}" for i in range(25)), "ok"]


@pytest.fixture(scope="module")
def model_and_docs(minilm_path):
    model = SplitModel(minilm_path, [1, -1], device_map="cpu")
    documents = [Document(doc_id=i, text=t, position=i) for i, t in enumerate(TEXTS)]
    docs, _ = tokenize_documents(documents, model.tokenizer, max_length=12, overflow="window",
                                 granularity="word")
    assert max(len(d.windows) for d in docs) >= 3  # several windows, cut into different batches
    return model, docs


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_streamed_units_equal_the_whole_shard_reduced_at_once(model_and_docs, aggregation):
    model, docs = model_and_docs
    whole = document_activations(model, docs, batch_tokens=24)
    columns, acts = unit_rows(docs, whole, aggregation, model.hidden_sizes)
    s_columns, s_acts, seconds = unit_activations(model, docs, batch_tokens=24,
                                                  aggregation=aggregation)
    assert s_columns == columns and seconds > 0
    for p in model.split_points:
        torch.testing.assert_close(s_acts[p], acts[p], rtol=0, atol=0)


def _nan_rows(docs, hidden_sizes):
    counts = np.array([len(d.units) for d in docs])
    rows = {p: torch.full((int(counts.sum()), n), float("nan")) for p, n in hidden_sizes.items()}
    return rows, np.cumsum(counts) - counts


def test_documents_are_reduced_as_soon_as_their_last_window_ran(model_and_docs, monkeypatch):
    """Rows are written batch by batch: before the last forward, the documents earlier
    batches finished (one window or several) already have their rows."""
    model, docs = model_and_docs
    acts, first = _nan_rows(docs, model.hidden_sizes)
    written_before = []
    real_forward = model.forward_activations

    def counting_forward(ids, mask):
        rows = next(iter(acts.values()))
        written_before.append(int((~rows.isnan().all(dim=1)).sum()))
        return real_forward(ids, mask)

    monkeypatch.setattr(model, "forward_activations", counting_forward)
    forward.write_unit_rows(model, docs, (acts, first), batch_tokens=24, aggregation="mean")
    assert len(written_before) > 2 and written_before[0] == 0
    assert 0 < written_before[-1] < len(next(iter(acts.values())))
    assert written_before == sorted(written_before)
    assert not any(x.isnan().any() for x in acts.values())  # every row written in the end


@pytest.mark.parametrize("granularity", ["token", "word", "sample"])
def test_left_padding_reduces_the_real_positions(tiny_gpt2_path, granularity):
    """A causal LM padded on the left: its documents' units are reduced from the right end of
    their padded rows (the in-batch path) and equal the units of each document's own tokens
    (unpadded one row at a time, then reduced) and those of right padding."""
    model = SplitModel(tiny_gpt2_path, [0, -1], device_map="cpu")
    documents = [Document(doc_id=i, text=t, position=i) for i, t in enumerate(TEXTS)]
    docs, _ = tokenize_documents(documents, model.tokenizer, max_length=64, overflow="window",
                                 granularity=granularity)
    assert len({d.n_tokens for d in docs}) > 2  # rows of different lengths share batches
    whole = document_activations(model, docs, batch_tokens=256, padding_side="left")
    _, expected = unit_rows(docs, whole, "mean", model.hidden_sizes)
    _, left, _ = unit_activations(model, docs, batch_tokens=256, aggregation="mean",
                                  padding_side="left")
    _, right, _ = unit_activations(model, docs, batch_tokens=256, aggregation="mean")
    for p in model.split_points:
        torch.testing.assert_close(left[p], expected[p], rtol=0, atol=0)
        torch.testing.assert_close(left[p], right[p], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("granularity,aggregation", [("token", "mean"), ("word", "mean"),
                                                     ("word", "signed_max"), ("sample", "sum")])
def test_a_bfloat16_model_gives_the_rows_of_its_tokens_widened_first(minilm_path, granularity,
                                                                      aggregation):
    """Selections are taken in bfloat16 and sums in float32 on the model's side: the rows
    equal reducing every token widened to float32 first (exactly)."""
    model = SplitModel(minilm_path, [1], dtype="bfloat16", device_map="cpu")
    documents = [Document(doc_id=i, text=t, position=i) for i, t in enumerate(TEXTS)]
    docs, _ = tokenize_documents(documents, model.tokenizer, max_length=128, overflow="window",
                                 granularity=granularity)
    assert all(len(d.windows) == 1 for d in docs)  # all reduced from their padded batch
    whole = document_activations(model, docs, batch_tokens=256)
    assert whole[0]["encoder.layer.1"].dtype == torch.float32
    _, expected = unit_rows(docs, whole, aggregation, model.hidden_sizes)
    _, acts, _ = unit_activations(model, docs, batch_tokens=256, aggregation=aggregation)
    torch.testing.assert_close(acts["encoder.layer.1"], expected["encoder.layer.1"], rtol=0, atol=0)


def test_windows_equal_a_plain_forward_of_each_window(model_and_docs, minilm_path):
    """Every window is its own forward: a document's token rows are its windows' outputs in
    order (independent reference: transformers with a hook, one window at a time)."""
    model, docs = model_and_docs
    plain, _ = load_plain(minilm_path)
    captured = []
    handle = plain.get_submodule("encoder.layer.1").register_forward_hook(
        lambda _m, _i, out: captured.append(out[0][0] if isinstance(out, tuple) else out[0]))
    per_doc = document_activations(model, docs, batch_tokens=24)
    try:
        for doc, acts in zip(docs, per_doc):
            captured.clear()
            with torch.no_grad():
                for window in doc.windows:
                    plain(input_ids=torch.as_tensor(window)[None])
            torch.testing.assert_close(acts["encoder.layer.1"], torch.cat(captured), atol=1e-5,
                                       rtol=1e-5)
    finally:
        handle.remove()
    assert np.sum([len(w) for w in docs[0].windows]) == len(per_doc[0]["encoder.layer.1"])


def test_lanes_over_weight_sharing_replicas_give_the_rows_of_one_model(minilm_path):
    """Each lane's share of the documents on its own replica, written in place into the
    shard's rows, equals one model running the whole shard (the same rows, the same
    activations, every row written)."""
    from raypipe.batching.token_budget import balanced_groups

    replicas = SplitModel.replicas(minilm_path, 3, [1, -1], device_map="cpu")
    assert len(replicas) == 3 and len({id(r.hf_model) for r in replicas}) == 3
    weights = [dict(r.hf_model.named_parameters()) for r in replicas]
    assert all(w[k] is weights[0][k] for w in weights[1:] for k in weights[0])   # shared tensors
    documents = [Document(doc_id=i, text=t, position=i) for i, t in enumerate(TEXTS * 3)]
    docs, _ = tokenize_documents(documents, replicas[0].tokenizer, max_length=12,
                                 overflow="window", granularity="word")
    _, whole, _ = unit_activations(replicas[0], docs, batch_tokens=24, aggregation="mean")
    groups = balanced_groups([sum(len(w) for w in d.windows) for d in docs], 3)
    merged, first = _nan_rows(docs, replicas[0].hidden_sizes)
    for k, g in enumerate(groups):  # the lanes, one after the other
        seconds = forward.write_unit_rows(replicas[k], [docs[i] for i in g], (merged, first[g]),
                                          batch_tokens=24, aggregation="mean")
        assert seconds > 0
    for p in replicas[0].split_points:
        assert merged[p].shape == whole[p].shape
        torch.testing.assert_close(merged[p], whole[p], rtol=0, atol=1e-5)


def test_a_model_nnsight_wrapped_or_dispatched_is_not_copied(minilm_path):
    from raypipe.models.replicas import can_share_weights, shared_weight_copy

    wrapped = SplitModel(minilm_path, [1], device_map="cpu").hf_model
    assert not can_share_weights(wrapped)
    with pytest.raises(ValueError, match="copy it before wrapping"):
        shared_weight_copy(wrapped)


def test_a_document_that_never_finishes_is_an_error_not_garbage_rows(model_and_docs, monkeypatch):
    """Rows are written into uninitialised tensors: a document the forwards never finished
    must fail the shard rather than leave its rows as whatever memory held."""
    model, docs = model_and_docs
    real = forward._forward_batches

    def drop_first(*args, **kwargs):
        for rows, out, longest in real(*args, **kwargs):
            keep = [r for r, (d, _, _) in enumerate(rows) if d != 0]
            yield [rows[r] for r in keep], {p: t[keep] for p, t in out.items()}, longest

    monkeypatch.setattr(forward, "_forward_batches", drop_first)
    with pytest.raises(RuntimeError, match="1 of 5 documents were never finished"):
        unit_activations(model, docs, batch_tokens=24, aggregation="mean")


def test_rows_stay_float32_on_cpu_whatever_torch_defaults_to(model_and_docs):
    model, docs = model_and_docs
    expected = unit_activations(model, docs, batch_tokens=24, aggregation="mean")[1]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _, acts, _ = unit_activations(model, docs, batch_tokens=24, aggregation="mean")
    finally:
        torch.set_default_dtype(previous)
    for p, x in acts.items():
        assert x.dtype == torch.float32 and x.device.type == "cpu"
        torch.testing.assert_close(x, expected[p], rtol=0, atol=0)


def test_no_documents_give_empty_rows(model_and_docs):
    model, _ = model_and_docs
    columns, acts, seconds = unit_activations(model, [], batch_tokens=24, aggregation="mean")
    assert columns["doc_id"] == [] and seconds == 0
    assert {p: tuple(x.shape) for p, x in acts.items()} == {p: (0, d) for p, d in
                                                            model.hidden_sizes.items()}
