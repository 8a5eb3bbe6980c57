"""`raypipe mine`: every stage's output from one command, a re-run that redoes nothing, errors."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from raypipe.cli.main import main
from raypipe.mining import MineConfig, top_concepts

WORDS = ("river stone cloud apple engine violin marble garden ticket lantern copper meadow "
         "harbor pencil orbit velvet").split()


def _corpus(path, n_docs=40):
    lines = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(6)) for i in range(n_docs)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def _job(tmp_path, model, **overrides):
    corpus = tmp_path / "docs.txt"
    lines = _corpus(corpus)
    job = {"model": model, "corpus": str(corpus), "out": str(tmp_path / "mine"),
           "split_point": "1", "granularity": "token", "method": "topk_sae", "concepts": 16,
           "top_k": 4, "epochs": 2, "batch_size": 64, "top_activations": 5,
           "docs_per_shard": 16, "progress": False} | overrides
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(job))
    return path, lines


def test_mine_runs_every_stage_then_resumes_without_redoing_any(ray_local, tiny_bert_path, tmp_path,
                                                                capsys):
    job, lines = _job(tmp_path, tiny_bert_path)
    assert main(["mine", "--config", str(job)]) == 0
    out = tmp_path / "mine"
    manifest = json.loads((out / "activations" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["shards"]) == 3   # 40 docs / 16
    fit = json.loads((out / "concepts" / "fit_summary.json").read_text())
    assert fit["config"]["holdout_shards"] == 1          # 3 shards: the last one is held out
    dictionary = out / "concepts" / "dictionary.safetensors"
    assert dictionary.is_file()
    top = pq.read_table(out / "interpretation" / "top_activations.parquet").to_pylist()
    assert {"concept", "rank", "activation", "doc_id", "unit", "text"} <= set(top[0])
    assert all(r["text"] in lines[r["doc_id"]] for r in top)   # units come from their documents
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and top[0]["text"] in html
    assert str(out / "report.html") in capsys.readouterr().out
    assert top_concepts(str(out / "interpretation"), n=3)

    stamp = dictionary.stat().st_mtime_ns
    summary = (out / "interpretation" / "interpretation.json").read_text()
    assert main(["mine", "--config", str(job)]) == 0
    again = json.loads((out / "activations" / "manifest.json").read_text())
    assert again["summary"]["shards_skipped"] == 3 and again["summary"]["shards_written"] == 0
    assert dictionary.stat().st_mtime_ns == stamp, "a finished fit is not redone"
    assert (out / "interpretation" / "interpretation.json").read_text() == summary


def test_mine_reinterprets_a_refitted_dictionary_but_not_for_runtime_flags(ray_local,
                                                                          tiny_bert_path, tmp_path):
    job, _ = _job(tmp_path, tiny_bert_path, method="pca", concepts=6, top_activations=3)
    assert main(["mine", "--config", str(job)]) == 0
    out = tmp_path / "mine"
    dictionary = out / "concepts" / "dictionary.safetensors"
    summary_path = out / "interpretation" / "interpretation.json"
    stamp, summary = dictionary.stat().st_mtime_ns, summary_path.read_text()

    # progress/address/num_gpus change how a stage runs, not what it writes: nothing is redone
    job.write_text(yaml.safe_dump(yaml.safe_load(job.read_text()) | {"progress": True,
                                                                    "num_gpus": 0}))
    assert main(["mine", "--config", str(job)]) == 0
    assert dictionary.stat().st_mtime_ns == stamp, "a runtime-only flag must not refit"
    assert summary_path.read_text() == summary

    # a fit made from other store contents (as after a re-extraction) is redone
    fit_path = out / "concepts" / "fit_summary.json"
    fit = json.loads(fit_path.read_text())
    assert len(fit["store_checksums"]) == 3
    fit_path.write_text(json.dumps(fit | {"store_checksums": ["sha256:another-store"] * 3}))
    assert main(["mine", "--config", str(job)]) == 0
    assert dictionary.stat().st_mtime_ns != stamp, "the store changed: the fit is redone"

    # a refit (here into a fresh concepts/) must be followed by a new interpretation and report
    shutil.rmtree(out / "concepts")
    job.write_text(yaml.safe_dump(yaml.safe_load(job.read_text()) | {"method": "kmeans",
                                                                    "concepts": 9}))
    assert main(["mine", "--config", str(job)]) == 0
    again = json.loads(summary_path.read_text())
    assert (again["method"], again["n_concepts"]) == ("kmeans", 9)
    concepts = pq.read_table(out / "interpretation" / "concepts.parquet")
    assert concepts.num_rows == 9
    top = pq.read_table(out / "interpretation" / "top_activations.parquet").to_pylist()
    assert max(r["concept"] for r in top) == 8
    assert "kmeans" in (out / "report.html").read_text()


def test_mine_on_one_shard_measures_in_sample(ray_local, tiny_bert_path, tmp_path):
    job, _ = _job(tmp_path, tiny_bert_path, docs_per_shard=512, epochs=1, top_activations=2)
    assert main(["mine", "--config", str(job)]) == 0
    fit = json.loads((tmp_path / "mine" / "concepts" / "fit_summary.json").read_text())
    assert fit["config"]["holdout_shards"] == 0


def test_mine_config_errors_name_the_problem(tmp_path, capsys):
    job = tmp_path / "bad.yaml"
    job.write_text(yaml.safe_dump({"model": "m", "corpus": "c", "out": "o", "concept": 8}))
    assert main(["mine", "--config", str(job)]) != 0
    assert "concept" in capsys.readouterr().err
    with pytest.raises(Exception, match="model"):
        MineConfig(corpus="c", out="o")


def test_mine_without_overcomplete_stops_before_extracting_with_the_install_command(
        tiny_bert_path, tmp_path, capsys, monkeypatch):
    """A plain `pip install raypipe` lacks overcomplete (README, 'Installing overcomplete'):
    the job says how to install it before its extraction runs, not minutes later in the
    trainer actor."""
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "overcomplete", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "overcomplete" else real_find_spec(name, *a))
    job, _ = _job(tmp_path, tiny_bert_path)
    assert main(["mine", "--config", str(job)]) == 2
    assert "pip install --no-deps overcomplete==0.3.0" in capsys.readouterr().err
    assert not (tmp_path / "mine" / "activations").exists()
