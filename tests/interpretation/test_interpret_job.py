"""`raypipe interpret` over a real extraction: the distributed top-k equals brute force."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raypipe import ActivationStore, ConceptModel
from raypipe.cli.main import main
from raypipe.concepts.trainer import ConceptTrainer
from raypipe.config import ExtractConfig
from raypipe.concepts.fit_config import FitConfig
from raypipe.extraction import extract_activations
from raypipe.interpretation.interpret_job import InterpretConfig, interpret_concepts

pytestmark = pytest.mark.ray

TEXTS = [f"The {a} sat near the {b} while it was {c}." for a, b, c in
         zip(["cat", "dog", "bird", "fish"] * 5, ["door", "tree", "river", "window", "car"] * 4,
             ["raining", "sunny", "late", "early"] * 5)]


@pytest.fixture(scope="module")
def fitted(ray_local, minilm_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("interp")
    store = root / "store"
    extract_activations(ExtractConfig(model=minilm_path, corpus=TEXTS, out=str(store),
                                      split_points=[2], docs_per_shard=6, progress=False))
    concepts = root / "pca"
    ConceptTrainer(FitConfig(store=str(store), out=str(concepts), method="pca", concepts=6,
                             holdout_shards=0, progress=False).to_dict()).fit()
    return store, concepts


def test_topk_equals_brute_force_and_contexts_hold_the_unit(fitted, tmp_path):
    store_dir, concepts_dir = fitted
    out = tmp_path / "out"
    summary = interpret_concepts(InterpretConfig(store=str(store_dir), concepts=str(concepts_dir),
                                                 out=str(out), top_k=5, context=3, progress=False))
    store = ActivationStore(str(store_dir))
    codes = ConceptModel.load(concepts_dir).encode(torch.from_numpy(store.to_numpy())).numpy()
    top = pq.read_table(out / "top_activations.parquet").to_pylist()
    units = store.units().to_pylist()
    assert summary["rows"] == len(units)
    for concept in range(6):
        mine = [r for r in top if r["concept"] == concept]
        ref = np.argsort(-codes[:, concept], kind="stable")[:5]
        np.testing.assert_allclose([r["activation"] for r in mine], codes[ref, concept], rtol=1e-5)
        for r, row in zip(mine, ref):
            assert (r["doc_id"], r["unit"], r["text"]) == (units[row]["doc_id"], units[row]["unit"],
                                                           units[row]["text"])
            assert r["context"][r["highlight_start"]:r["highlight_end"]] == r["text"]
            assert r["context"] in TEXTS[r["doc_id"]]
    freq = pq.read_table(out / "concepts.parquet").column("frequency").to_numpy()
    np.testing.assert_allclose(freq, (codes > 0).mean(0))


def test_cli_interpret(fitted, tmp_path, capsys):
    store_dir, concepts_dir = fitted
    assert main(["interpret", "--store", str(store_dir), "--concepts", str(concepts_dir),
                 "--out", str(tmp_path / "i"), "--top-k", "3", "--no-progress"]) == 0
    assert "6 concepts" in capsys.readouterr().out
