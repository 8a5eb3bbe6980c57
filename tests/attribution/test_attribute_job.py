"""The attribution job on a local Ray: equals captum, independent of actors/batches, contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from raypipe import AttributionStore
from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.pipeline import attribute
from raypipe.cli.main import main

pytestmark = pytest.mark.ray

TEXTS = ["the movie was great fun", "a dull and boring film", "", "what a ride!",
         "an unbelievably long and winding story, told slowly", "ok"]


@pytest.fixture(scope="module")
def classifier(tiny_bert_classifier_path) -> str:
    """A random classifier whose logits do move with the input (init 0.3, see conftest)."""
    return tiny_bert_classifier_path


def run(classifier, out, **overrides):
    values = dict(model=classifier, corpus=TEXTS, out=str(out), progress=False, docs_per_shard=2)
    values.update(overrides)
    attribute(AttributeConfig(**values))
    return AttributionStore(str(out)).table().to_pylist()


def test_occlusion_equals_captum_feature_ablation(ray_local, classifier, tmp_path):
    rows = run(classifier, tmp_path / "occ", method="occlusion", granularity="word")
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tok = AutoTokenizer.from_pretrained(classifier)
    assert [r["doc_id"] for r in rows] == [0, 1, 3, 4, 5], "sorted, empty document skipped"
    assert {r["parameters"] for r in rows} == {
        '{"baseline": "mask", "granularity": "word", "max_length": 128, "mode": "logits", '
        '"seed": 0, "target": "predicted"}'}  # max_length as resolved from the model
    for row in rows:
        enc = tok(TEXTS[row["doc_id"]], return_tensors="pt")
        words = enc.word_ids()
        n_words = max(w for w in words if w is not None) + 1
        groups = torch.tensor([[w if w is not None else n_words + i for i, w in enumerate(words)]])
        attention = enc["attention_mask"]
        with torch.no_grad():
            predicted = int(model(**enc).logits.argmax())
        ablation = FeatureAblation(lambda ids: model(input_ids=ids, attention_mask=attention).logits)
        attr = ablation.attribute(enc["input_ids"], baselines=tok.mask_token_id, target=predicted,
                                  feature_mask=groups)[0]
        expected = [float(attr[words.index(w)]) for w in range(n_words)]
        assert row["target"] == predicted
        assert np.abs(expected).max() > 1e-2, "the model must react to the ablations"
        np.testing.assert_allclose(row["scores"], expected, rtol=1e-4, atol=1e-6)
        assert row["units"] == [TEXTS[row["doc_id"]][s:e] for s, e in zip(row["char_start"], row["char_end"])]


SENTENCES = ["It was fun. Then it was dull!", "Great. Bad. Fine.", "one sentence only"]


def _unit_groups(granularity: str, enc, text: str) -> list[list[int]]:
    """Token positions of each explained unit, from the tokenizer's own encoding (the
    sentence spans come from raypipe's splitter, the grouping of tokens is done here)."""
    from raypipe.granularity import split_sentences

    special = enc["special_tokens_mask"][0].tolist() if "special_tokens_mask" in enc else None
    n = enc["input_ids"].shape[1]
    if granularity == "all_tokens":
        return [[i] for i in range(n)]
    if granularity == "token":
        return [[i] for i in range(n) if not special[i]]
    offsets = enc["offset_mapping"][0].tolist()
    groups = []
    for s, e in split_sentences(text):
        members = [i for i in range(n) if not special[i] and s <= offsets[i][0] < e]
        if members:
            groups.append(members)
    return groups


@pytest.mark.parametrize("granularity", ["token", "all_tokens", "sentence"])
def test_occlusion_of_every_granularity_equals_captum(ray_local, classifier, tmp_path, granularity):
    """Tokens, every token (special ones too: replaced by the baseline like any unit) and
    sentences as units: the same scores as captum's FeatureAblation with those groups."""
    texts = SENTENCES if granularity == "sentence" else TEXTS[:2]
    rows = run(classifier, tmp_path / granularity, corpus=texts, method="occlusion",
               granularity=granularity)
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tok = AutoTokenizer.from_pretrained(classifier)
    assert [r["doc_id"] for r in rows] == list(range(len(texts)))
    for row in rows:
        text = texts[row["doc_id"]]
        enc = tok(text, return_tensors="pt", return_special_tokens_mask=True,
                  return_offsets_mapping=True)
        groups = _unit_groups(granularity, enc, text)
        if granularity == "sentence" and row["doc_id"] < 2:
            assert len(groups) >= 2, "the test needs documents of several sentences"
        feature = torch.arange(enc["input_ids"].shape[1]) + len(groups)  # the rest: apart
        for j, members in enumerate(groups):
            feature[members] = j
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        with torch.no_grad():
            predicted = int(model(**inputs).logits.argmax())
        ablation = FeatureAblation(lambda ids: model(input_ids=ids,
                                                     attention_mask=inputs["attention_mask"]).logits)
        attr = ablation.attribute(inputs["input_ids"], baselines=tok.mask_token_id,
                                  target=predicted, feature_mask=feature[None])[0]
        expected = [float(attr[members[0]]) for members in groups]
        assert len(row["units"]) == len(groups)
        np.testing.assert_allclose(row["scores"], expected, rtol=1e-4, atol=1e-6)
        if granularity == "all_tokens":
            assert row["units"][0] == "[CLS]" and row["units"][-1] == "[SEP]"


@pytest.mark.parametrize("method", ["kernel_shap", "integrated_gradients"])
def test_same_scores_with_two_actors_and_other_budget(ray_local, classifier, tmp_path, method):
    """Perturbations packed with other documents' rows, gradients of padded batches (and
    integrated gradients cut into other passes): the same scores."""
    one = run(classifier, tmp_path / "one", method=method, n_samples=16, target="0,1")
    two = run(classifier, tmp_path / "two", method=method, n_samples=16, target="0,1",
              actors=2, num_cpus=0.5, batch_tokens=37)
    assert [(r["doc_id"], r["target"]) for r in one] == [(r["doc_id"], r["target"]) for r in two]
    assert len(one) == 10
    for a, b in zip(one, two):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    # the pool's model-stage time is the union of the shards' scoring intervals (busy_time)
    manifest = AttributionStore(tmp_path / "two").manifest
    shards = manifest["shards"]
    assert all(s["stats"]["busy_until"] > 0 for s in shards)
    summary = manifest["summary"]
    assert summary["actor_seconds"] == pytest.approx(sum(s["stats"]["model_seconds"] for s in shards))
    assert 0 < summary["model_seconds"] <= summary["actor_seconds"] + 1e-9


def test_killed_actor_and_killed_driver_resume_to_the_uninterrupted_store(ray_local, classifier,
                                                                         tmp_path, monkeypatch):
    """Fault tolerance as for activations: an actor killed on a shard is restarted and the
    shard redone; a job whose driver died after some shards (manifest listing 1 of 3, one
    shard file half there) resumes with the same config. Both give the uninterrupted rows,
    none twice."""
    import json as _json

    from raypipe.runtime import FAULT_ENV

    options = dict(method="kernel_shap", n_samples=16, target="0,1")
    reference = run(classifier, tmp_path / "ref", **options)
    assert len(reference) == 10
    assert _json.loads(reference[0]["parameters"])["n_samples"] == 16

    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:1")
    killed = run(classifier, tmp_path / "killed", **options)
    monkeypatch.delenv(FAULT_ENV)
    assert marker.exists(), "the fault hook fired: an actor died on shard 1"
    assert killed == reference

    out = tmp_path / "resumed"
    run(classifier, out, **options)
    manifest = _json.loads((out / "manifest.json").read_text())
    dropped = manifest["shards"][1:]
    manifest["shards"], manifest["status"] = manifest["shards"][:1], "running"
    (out / "manifest.json").write_text(_json.dumps(manifest))
    (out / dropped[0]["name"]).write_bytes(b"PAR1 half a shard")  # a write the driver never saw
    config = AttributeConfig(model=classifier, corpus=TEXTS, out=str(out), progress=False,
                             docs_per_shard=2, **options)
    result = attribute(config)
    assert result.shards_skipped == 1 and result.shards_written == 2
    assert AttributionStore(str(out)).table().to_pylist() == reference


def test_generation_rows_hold_the_target_by_unit_matrix(ray_local, tiny_gpt2_path, tmp_path):
    rows = run(tiny_gpt2_path, tmp_path / "gen", method="occlusion", granularity="token",
               max_new_tokens=3, baseline="remove")
    for row in rows:
        t, g = row["shape"]
        assert t == len(row["target_tokens"]) <= 3 and g == len(row["units"])
        assert len(row["scores"]) == t * g


def test_cli_attribute_and_errors(ray_local, classifier, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:2]) + "\n")
    assert main(["attribute", "--model", classifier, "--corpus", str(corpus), "--method", "lime",
                 "--n-samples", "8", "--out", str(tmp_path / "lime"), "--no-progress"]) == 0
    assert "rows           2" in capsys.readouterr().out
    assert main(["attribute", "--model", classifier, "--corpus", str(corpus), "--method", "shap",
                 "--out", str(tmp_path / "x")]) == 2
    assert "kernel_shap" in capsys.readouterr().err


def test_generation_with_target_column_equals_plain_forward(ray_local, tiny_gpt2_path, tmp_path):
    import json as _json

    from transformers import AutoModelForCausalLM

    docs = [{"text": "the cat sat on", "answer": " the mat"},
            {"text": "one two three", "answer": " four five"}]
    corpus = tmp_path / "prompts.jsonl"
    corpus.write_text("\n".join(_json.dumps(d) for d in docs) + "\n")
    rows = run(tiny_gpt2_path, tmp_path / "gen", corpus=str(corpus), method="occlusion",
               granularity="token", target_column="answer", mode="log_softmax", baseline="pad")
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_path).eval()
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def continuation_score(prompt: list[int], answer: list[int]) -> np.ndarray:
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        return np.array([float(logp[len(prompt) - 1 + j, a]) for j, a in enumerate(answer)])

    for row, doc in zip(rows, docs):
        enc = tok(doc["text"], return_special_tokens_mask=True)
        prompt = enc["input_ids"]
        units = [i for i, special in enumerate(enc["special_tokens_mask"]) if not special]
        answer = tok(doc["answer"], add_special_tokens=False)["input_ids"]
        assert row["target_tokens"] == tok.convert_ids_to_tokens(answer)
        base = continuation_score(prompt, answer)
        expected = np.stack([base - continuation_score(prompt[:i] + [pad] + prompt[i + 1:], answer)
                             for i in units], axis=1)   # (T, g)
        assert row["shape"] == list(expected.shape)
        np.testing.assert_allclose(np.reshape(row["scores"], row["shape"]), expected, atol=1e-4)


def test_continuations_given_as_text_or_ids_and_rows_without_one(ray_local, tiny_gpt2_path,
                                                                  tmp_path):
    """A continuation column holds text or token ids (a JSON array): both are explained, the
    ids as given. One that is missing, neither text nor ids, out of the vocabulary or empty:
    that document is skipped and counted, never explained with a continuation the model
    generates; a corpus line that is not JSON is counted as unreadable; both are reported."""
    import json as _json

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_path)
    ids = tok(" the mat", add_special_tokens=False)["input_ids"]
    lines = [_json.dumps({"text": "the cat sat on", "answer": " the mat"}),
             _json.dumps({"text": "one two three"}),                      # no answer field
             _json.dumps({"text": "the cat sat on", "answer": ids}),      # ids of " the mat"
             _json.dumps({"text": "up and", "answer": ""}),               # empty
             "{not json",
             _json.dumps({"text": "a b c", "answer": {"ids": [1]}}),      # neither
             _json.dumps({"text": "red green", "answer": [5, 10**6]}),    # outside the vocabulary
             _json.dumps({"text": "a b c", "answer": " d"})]
    corpus = tmp_path / "prompts.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    config = AttributeConfig(model=tiny_gpt2_path, corpus=str(corpus), out=str(tmp_path / "gen"),
                             progress=False, docs_per_shard=3, method="occlusion",
                             granularity="token", target_column="answer",
                             baseline="mask")  # GPT-2 has no mask token: pad
    result = attribute(config)
    rows = AttributionStore(str(tmp_path / "gen")).table().to_pylist()
    assert [r["doc_id"] for r in rows] == [0, 2, 7]
    assert rows[0]["target_tokens"] == rows[1]["target_tokens"] == tok.convert_ids_to_tokens(ids)
    np.testing.assert_array_equal(rows[0]["scores"], rows[1]["scores"])  # ids = the text's ids
    assert rows[1]["target_label"] == tok.decode(ids)
    assert _json.loads(rows[0]["parameters"])["baseline"] == "pad"
    assert result.skipped_continuations == 4 and result.unreadable == 1
    messages = dict(result.problems)
    assert set(messages) == {1, 4, 5, 6}
    assert "'answer'" in messages[1] and "array of token ids" in messages[5]
    assert "outside the model's vocabulary [0, 400)" in messages[6]


def test_sobol_scores_each_distinct_perturbation_once_and_equals_brute_force(ray_local, classifier,
                                                                           tmp_path):
    """Repeated Sobol rows are scored once (fewer forwards), and the scores still equal the
    estimator applied to a plain forward of every mask row."""
    from raypipe.attribution import estimate, make_masks, perturbed_inputs
    from raypipe.attribution.masks import doc_seed

    rows = run(classifier, tmp_path / "sobol", method="sobol", n_samples=8, granularity="word",
               target="1")
    summary = AttributionStore(str(tmp_path / "sobol")).manifest["summary"]
    assert summary["forward_rows"] < summary["mask_rows"], summary
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tok = AutoTokenizer.from_pretrained(classifier)
    for row in rows:
        enc = tok(TEXTS[row["doc_id"]], return_tensors="np")
        words = enc.word_ids()
        members = [np.array([i for i, w in enumerate(words) if w == j])
                   for j in range(len(row["units"]))]
        plan = make_masks("sobol", len(members), n_samples=8, seed=doc_seed(0, row["doc_id"]))
        ids, attention = perturbed_inputs(enc["input_ids"][0], members, plan.masks,
                                          baseline=tok.mask_token_id)
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(ids),
                           attention_mask=torch.as_tensor(attention)).logits
        expected = estimate(plan, logits[:, 1].numpy())["scores"]
        np.testing.assert_allclose(row["scores"], expected, rtol=1e-4, atol=1e-5)


def test_an_impossible_baseline_fails_in_the_plan_naming_it(ray_local, classifier, tmp_path):
    """The CPU tasks only see the tokenizer's special ids; a baseline they could not resolve is
    refused on the driver, with the real tokenizer, before anything is written."""
    from raypipe.config import ConfigError

    for method in ("occlusion", "integrated_gradients"):  # gradient baselines are ids too
        with pytest.raises(ConfigError, match=r"--baseline -5: baseline token id must be >= 0"):
            run(classifier, tmp_path / method, method=method, baseline="-5")
        shards = tmp_path / method / "shards"
        assert not shards.exists() or not list(shards.iterdir())


def test_out_of_range_baseline_id_and_class_fail_in_the_plan(ray_local, classifier, tmp_path):
    """An id past the vocabulary or a class past the labels used to fail in an actor, after a
    store was started whose hash then blocked the corrected re-run."""
    from raypipe.config import ConfigError

    with pytest.raises(ConfigError, match=r"--baseline 1000000: token id 1000000 is outside the "
                                          r"model's vocabulary \[0, \d+\)"):
        run(classifier, tmp_path / "b", method="occlusion", baseline="1000000")
    with pytest.raises(ConfigError, match=r"--target 0,5: class 5 is out of range; .* has 2 labels"):
        run(classifier, tmp_path / "t", method="occlusion", target="0,5")
    assert not (tmp_path / "b").exists() and not (tmp_path / "t").exists()


def test_kernel_shap_enumerated_equals_brute_force_shapley_of_the_model(ray_local, classifier,
                                                                       tmp_path):
    """With 2^g <= n_samples every coalition is scored and the job returns the exact Shapley
    values of the model's logit: checked against the textbook sum over all subsets, each
    coalition scored by a plain transformers forward (absent words -> [MASK])."""
    from itertools import combinations
    from math import factorial

    rows = run(classifier, tmp_path / "shap", method="kernel_shap", n_samples=64,
               granularity="word", target="1")
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    tok = AutoTokenizer.from_pretrained(classifier)
    checked = 0
    for row in rows:
        enc = tok(TEXTS[row["doc_id"]], return_tensors="pt")
        words = enc.word_ids()
        g = len(row["units"])
        if 2 ** g > 64:
            continue  # sampled, not enumerated
        members = [[i for i, w in enumerate(words) if w == j] for j in range(g)]

        def f(kept: frozenset) -> float:
            ids = enc["input_ids"].clone()
            for j in set(range(g)) - kept:
                ids[0, members[j]] = tok.mask_token_id
            with torch.no_grad():
                return float(model(input_ids=ids).logits[0, 1])

        value = {frozenset(s): f(frozenset(s)) for k in range(g + 1) for s in combinations(range(g), k)}
        shapley = [sum(factorial(len(s)) * factorial(g - len(s) - 1) / factorial(g)
                       * (value[s | {i}] - value[s]) for s in value if i not in s) for i in range(g)]
        np.testing.assert_allclose(row["scores"], shapley, atol=1e-5)
        assert np.abs(shapley).max() > 1e-3  # the words matter: not a vacuous comparison
        checked += 1
    assert checked == 4  # every document of at most 6 words
