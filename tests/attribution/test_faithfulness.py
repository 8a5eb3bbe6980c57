"""Deletion/insertion faithfulness: pure masks and areas, then the job against a plain forward loop."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raypipe.attribution.faithfulness import (curve_auc, deletion_masks, fractions,
                                              insertion_masks, random_order_masks, step_counts)
from raypipe.attribution.faithfulness_job import (FaithfulnessConfig, curve_masks,
                                                  evaluate_faithfulness)
from raypipe.attribution.masks import distinct_masks
from raypipe.config import ConfigError

TEXTS = ["the movie was great fun", "a dull and boring film", "what a ride!",
         "an unbelievably long and winding story"]


# -- pure ---------------------------------------------------------------------------------------
def test_deletion_removes_the_top_unit_first():
    masks = deletion_masks(np.array([0.1, 0.9, -0.5, 0.3]))
    expected = [[1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(masks, np.array(expected, dtype=bool))


def test_insertion_is_the_complement_sequence():
    scores = np.random.default_rng(0).normal(size=7)
    ins = insertion_masks(scores)
    np.testing.assert_array_equal(ins, ~deletion_masks(scores))
    assert not ins[0].any() and ins[-1].all()
    assert ins[1, np.argmax(scores)], "the most important unit is inserted first"


def test_ties_keep_document_order_and_bad_scores_are_refused():
    np.testing.assert_array_equal(deletion_masks(np.zeros(3))[1], [False, True, True])
    with pytest.raises(ValueError, match="not finite"):
        deletion_masks(np.array([0.0, np.nan]))


def test_fewer_steps_spread_the_units_evenly():
    np.testing.assert_array_equal(step_counts(10, 4), [0, 2, 5, 8, 10])
    np.testing.assert_array_equal(step_counts(3, 10), [0, 1, 2, 3])
    masks = deletion_masks(np.arange(10.0), steps=4)
    assert masks.shape == (5, 10)
    np.testing.assert_array_equal((~masks).sum(1), [0, 2, 5, 8, 10])
    with pytest.raises(ValueError, match="steps"):
        step_counts(3, 0)


def test_auc_of_known_curves():
    assert curve_auc(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert curve_auc(np.array([2.0, 2.0, 2.0])) == pytest.approx(2.0), "flat curve: its value"
    assert curve_auc(np.array([0.0, 1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.875)
    x = fractions(10, 4)                                   # uneven [0, .2, .5, .8, 1]
    assert curve_auc(x, x) == pytest.approx(0.5), "area under y = x"
    with pytest.raises(ValueError, match="2 points"):
        curve_auc(np.array([1.0]))


def test_random_order_is_seeded():
    a = random_order_masks(12, seed=3, kind="deletion")
    np.testing.assert_array_equal(a, random_order_masks(12, seed=3, kind="deletion"))
    assert not np.array_equal(a, random_order_masks(12, seed=4, kind="deletion"))
    np.testing.assert_array_equal(random_order_masks(12, seed=3, kind="insertion"), ~a)
    assert ((~a).sum(1) == np.arange(13)).all(), "one unit per step"


def test_distinct_masks_rebuild_every_curve():
    masks = curve_masks(np.array([0.2, -1.0, 3.0]), seed=0, steps=None)      # (4, 4, 3)
    rows, index = distinct_masks(masks)
    assert not rows.all(axis=1).any(), "the original is not forwarded again"
    table = np.concatenate([np.ones((1, 3), bool), rows])
    np.testing.assert_array_equal(table[index], masks)
    assert len(rows) < 4 * 4 - 1


# -- the job ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def occlusion_store(tiny_bert_classifier_path, tmp_path_factory, ray_local):
    from raypipe.attribution.config import AttributeConfig
    from raypipe.attribution.pipeline import attribute

    root = tmp_path_factory.mktemp("faith")
    corpus = root / "texts.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    attribute(AttributeConfig(model=tiny_bert_classifier_path, corpus=str(corpus),
                              out=str(root / "store"), method="occlusion", granularity="word",
                              target="0,1", docs_per_shard=2, progress=False))
    return root


def reference_curve(model, tok, text: str, scores: list[float], target: int, kind: str) -> list[float]:
    """Score every step with a plain forward: words replaced by [MASK] in decreasing-score order."""
    enc = tok(text, return_tensors="pt")
    words = np.array([-1 if w is None else w for w in enc.word_ids()])
    order = np.argsort(-np.asarray(scores), kind="stable")
    curve = []
    for k in range(len(scores) + 1):
        moved = np.isin(words, order[:k])
        removed = moved if kind == "deletion" else (words >= 0) & ~moved
        ids = enc["input_ids"].clone()
        ids[0, torch.as_tensor(removed)] = tok.mask_token_id
        with torch.no_grad():
            curve.append(float(model(input_ids=ids, attention_mask=enc["attention_mask"]).logits[0, target]))
    return curve


def test_job_curves_equal_a_plain_forward_loop(occlusion_store, tiny_bert_classifier_path, ray_local):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raypipe import AttributionStore

    out = occlusion_store / "faith"
    summary = evaluate_faithfulness(FaithfulnessConfig(store=str(occlusion_store / "store"),
                                                       out=str(out), progress=False, batch_tokens=64))
    stored = {(r["doc_id"], r["target"]): r
              for r in AttributionStore(str(occlusion_store / "store")).table().to_pylist()}
    rows = pq.read_table(out / "faithfulness.parquet").to_pylist()
    assert [(r["doc_id"], r["target"]) for r in rows] == sorted(stored) and len(rows) == 8
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_classifier_path).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier_path)
    for row in rows:
        attr = stored[(row["doc_id"], row["target"])]
        text, g = TEXTS[row["doc_id"]], len(attr["units"])
        assert len(row["deletion_curve"]) == len(row["insertion_curve"]) == g + 1
        assert row["deletion_curve"][0] == pytest.approx(attr["original_score"], abs=1e-4)
        assert row["insertion_curve"][-1] == pytest.approx(attr["original_score"], abs=1e-4)
        for kind in ("deletion", "insertion"):
            expected = reference_curve(model, tok, text, attr["scores"], row["target"], kind)
            np.testing.assert_allclose(row[f"{kind}_curve"], expected, atol=1e-4)
            assert row[f"{kind}_auc"] == pytest.approx(curve_auc(np.asarray(expected)), abs=1e-4)
        assert np.isfinite(row["random_deletion_auc"]) and np.isfinite(row["random_insertion_auc"])
    written = json.loads((out / "faithfulness.json").read_text())
    assert written["rows"] == summary["rows"] == 8 and written["documents"] == 4
    assert written["mean"]["deletion_auc"] == pytest.approx(np.mean([r["deletion_auc"] for r in rows]))
    assert summary["max_original_score_drift"] < 1e-4


def test_generation_curves_score_the_stored_continuation(tiny_gpt2_path, tmp_path, ray_local):
    """Generation rows: units ordered by their column sums, each point the continuation's
    log-probability with those prompt tokens replaced by pad, as a plain forward computes it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raypipe import AttributionStore
    from raypipe.attribution.config import AttributeConfig
    from raypipe.attribution.pipeline import attribute

    docs = [{"text": "the cat sat on", "answer": " the mat"},
            {"text": "one two three four", "answer": " five six"}]
    corpus = tmp_path / "prompts.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    attribute(AttributeConfig(model=tiny_gpt2_path, corpus=str(corpus), out=str(tmp_path / "store"),
                              method="occlusion", granularity="token", target_column="answer",
                              mode="log_softmax", baseline="pad", progress=False))
    out = tmp_path / "faith"
    summary = evaluate_faithfulness(FaithfulnessConfig(store=str(tmp_path / "store"), out=str(out),
                                                       progress=False, batch_tokens=64))
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_path).eval()
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def continuation_logprob(prompt: list[int], answer: list[int]) -> float:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + answer])).logits[0], -1)
        return float(sum(logp[len(prompt) - 1 + j, a] for j, a in enumerate(answer)))

    stored = {r["doc_id"]: r for r in AttributionStore(str(tmp_path / "store")).table().to_pylist()}
    rows = pq.read_table(out / "faithfulness.parquet").to_pylist()
    assert [r["doc_id"] for r in rows] == [0, 1] and summary["rows"] == 2
    for row, doc in zip(rows, docs):
        attr = stored[row["doc_id"]]
        enc = tok(doc["text"], return_special_tokens_mask=True)
        prompt = enc["input_ids"]
        positions = [i for i, special in enumerate(enc["special_tokens_mask"]) if not special]
        answer = tok(doc["answer"], add_special_tokens=False)["input_ids"]
        importance = np.reshape(attr["scores"], attr["shape"]).sum(0)       # (g,) column sums
        order = np.argsort(-importance, kind="stable")
        g = len(importance)
        assert row["n_units"] == g == len(positions)   # token units: one per non-special token
        for kind in ("deletion", "insertion"):
            expected = []
            for k in range(g + 1):
                moved = set(order[:k].tolist())
                removed = moved if kind == "deletion" else set(range(g)) - moved
                ids = list(prompt)
                for u in removed:
                    ids[positions[u]] = pad
                expected.append(continuation_logprob(ids, answer))
            np.testing.assert_allclose(row[f"{kind}_curve"], expected, atol=1e-4)
        assert row["deletion_curve"][0] == pytest.approx(attr["original_score"], abs=1e-4)


def test_clear_errors(tmp_path):
    from raypipe.store import ATTRIBUTION_FORMAT, StoreWriter

    with pytest.raises(ConfigError, match="steps"):
        FaithfulnessConfig(store="s", out="o", steps=0)
    with pytest.raises(FileNotFoundError, match="no attribution store"):
        evaluate_faithfulness(FaithfulnessConfig(store=str(tmp_path / "none"), out=str(tmp_path / "o")))
    writer = StoreWriter(str(tmp_path / "odd"), {"task": "regression", "config": {}}, "h",
                         format=ATTRIBUTION_FORMAT)
    writer.finalize({})
    with pytest.raises(ConfigError, match="classification or generation store"):
        evaluate_faithfulness(FaithfulnessConfig(store=str(tmp_path / "odd"), out=str(tmp_path / "o")))
