"""The attribution model stage without Ray: where its torch work runs."""
from __future__ import annotations

import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.forward_stage import ScoreShard
from raypipe.attribution.perturb_stage import prepare_shard
from raypipe.batching.backend import backend_spec
from raypipe.corpus import open_corpus

TEXTS = ["the film was a delight", "a dull and tired story", "ok"]


@pytest.mark.parametrize("method", ["occlusion", "saliency"])
def test_score_shard_runs_every_torch_op_on_one_thread(tiny_bert_classifier_path, tmp_path,
                                                      torch_op_threads, method):
    """Built on one thread and called on another (as Ray Data does), the actor still loads its
    model and runs every forward on its own lane threads, neither of the two, and fills in each
    document's results."""
    from transformers import AutoTokenizer

    config = AttributeConfig(model=tiny_bert_classifier_path, corpus=TEXTS, method=method,
                             granularity="word", out=str(tmp_path / "store"), progress=False,
                             n_samples=8)
    spec = backend_spec(AutoTokenizer.from_pretrained(tiny_bert_classifier_path))
    batch = prepare_shard({"shard_id": np.array([0]), "doc_start": np.array([0]),
                           "doc_end": np.array([len(TEXTS)])}, corpus=open_corpus(TEXTS),
                          targets=None, tokenizer=spec, max_length=64, granularity="word",
                          method=method, n_samples=8, seed=0, baseline="mask",
                          gradient=config.is_gradient)
    torch_op_threads.clear()
    stage = ScoreShard(config.to_dict() | {"corpus": "-"})
    with ThreadPoolExecutor(max_workers=1) as calls:
        out = calls.submit(stage, batch).result()
    # the lanes: one model copy each on CPU (two on these 2 cores), one for gradient methods
    assert torch_op_threads == stage._lanes.idents and threading.get_ident() not in torch_op_threads
    assert len(stage._lanes) == (1 if config.is_gradient else min(4, os.cpu_count()))
    work = pickle.loads(out["payload"][0])["work"]
    assert len(work) == len(TEXTS)
    key = "unit_scores" if config.is_gradient else "scores"
    for w in work:
        assert np.isfinite(np.asarray(w.results[key], dtype=float)).all()
