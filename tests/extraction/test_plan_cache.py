"""The plan cache: a later job on the same model plans from it without torch, and equally."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from raypipe.config import ExtractConfig
from raypipe.extraction.plan import plan_extraction
from raypipe.extraction.plan_cache import cache_dir, facts_key
from raypipe.models import SplitPointError

TEXTS = [f"document number {i}, with a few words." for i in range(40)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPIPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "plans"


def config(model: str, tmp_path, **kw) -> ExtractConfig:
    return ExtractConfig(model=model, corpus=TEXTS, out=str(tmp_path / "s"), **kw)


def test_a_second_plan_comes_from_the_cache_and_equals_the_first(tiny_gpt2_path, tmp_path, cache):
    first = plan_extraction(config(tiny_gpt2_path, tmp_path, split_points=[-1, 0]))
    second = plan_extraction(config(tiny_gpt2_path, tmp_path, split_points=[-1, 0]))
    assert not first.facts_cached and second.facts_cached
    assert len(list(cache.glob("*.json"))) == 1
    for field in ("split_points", "max_length", "model_type", "tokenizer_spec", "shards",
                  "docs_per_shard", "n_docs"):
        assert getattr(second, field) == getattr(first, field), field
    assert first.split_points == ["transformer.h.0", "transformer.h.2"]
    # other options that change the resolution are other entries
    other = plan_extraction(config(tiny_gpt2_path, tmp_path, split_points=[-1, 0], max_length=16))
    assert not other.facts_cached and other.max_length == 16


def test_a_cached_plan_imports_neither_torch_nor_transformers(minilm_path, tmp_path, cache):
    plan_extraction(config(minilm_path, tmp_path, split_points=[1]))
    script = (
        "import sys\n"
        "from raypipe.config import ExtractConfig\n"
        "from raypipe.extraction.plan import plan_extraction\n"
        f"p = plan_extraction(ExtractConfig(model={minilm_path!r}, corpus={TEXTS!r}, "
        f"out={str(tmp_path / 's')!r}, split_points=[1]))\n"
        "print(p.facts_cached, p.split_points, 'torch' in sys.modules, "
        "'transformers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True ['encoder.layer.1'] False False"


def test_a_changed_model_is_planned_afresh(tiny_gpt2_path, tmp_path, cache):
    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2_path, model)
    assert plan_extraction(config(str(model), tmp_path)).split_points == ["transformer.h.2"]
    settings = json.loads((model / "config.json").read_text())
    settings["n_layer"] = 4  # the same folder, now a deeper model: -1 is another block
    (model / "config.json").write_text(json.dumps(settings))
    plan = plan_extraction(config(str(model), tmp_path))
    assert not plan.facts_cached and plan.split_points == ["transformer.h.3"]


def test_errors_are_never_cached(tiny_gpt2_path, tmp_path, cache):
    for _ in range(2):
        with pytest.raises(SplitPointError, match="transformer.h.2"):
            plan_extraction(config(tiny_gpt2_path, tmp_path, split_points=["transformer.h.9"]))
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_a_torn_entry_is_ignored_and_replaced(tiny_gpt2_path, tmp_path, cache):
    plan_extraction(config(tiny_gpt2_path, tmp_path))
    (entry,) = cache.glob("*.json")
    good = json.loads(entry.read_text())
    for bad in ('{"split_points": ["transformer.h', json.dumps(dict(good, max_length="512")),
                json.dumps(dict(good, split_points=[])), json.dumps(dict(good, extra=1))):
        entry.write_text(bad)
        plan = plan_extraction(config(tiny_gpt2_path, tmp_path))
        assert not plan.facts_cached and plan.split_points == ["transformer.h.2"]
        assert json.loads(entry.read_text()) == good


def test_the_cache_can_be_turned_off_and_skips_remote_code(tiny_gpt2_path, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPIPE_CACHE_DIR", "off")
    assert cache_dir() is None
    assert not plan_extraction(config(tiny_gpt2_path, tmp_path)).facts_cached
    assert not plan_extraction(config(tiny_gpt2_path, tmp_path)).facts_cached
    monkeypatch.delenv("RAYPIPE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "raypipe" / "plans"
    assert facts_key(config(tiny_gpt2_path, tmp_path, trust_remote_code=True), "files:x") is None
    assert facts_key(config(tiny_gpt2_path, tmp_path), None) is None  # a hub id not cached locally
