"""The job configs' hash: what a store's content depends on, and nothing else."""
from __future__ import annotations

import os

from raypipe.attribution.config import AttributeConfig
from raypipe.config import ExtractConfig


def test_extract_hash_ignores_how_the_store_path_is_spelled_and_runtime_fields(tmp_path):
    base = dict(model="m", corpus="c.txt", split_points=[1])
    a = ExtractConfig(**base, out="runs/a")
    same = [ExtractConfig(**base, out="./runs/a"), ExtractConfig(**base, out=os.path.abspath("runs/a")),
            ExtractConfig(**base, out="runs/a", actors=3, batch_tokens=64, device_map="auto")]
    assert {c.config_hash() for c in same} == {a.config_hash()}
    assert ExtractConfig(**base, out="runs/a", granularity="word").config_hash() != a.config_hash()
    assert a.config_hash({"sha": "x"}) != a.config_hash({"sha": "y"})  # another corpus


def test_attribute_hash_ignores_the_store_path_but_not_the_method():
    base = dict(model="m", corpus="c.txt", method="occlusion")
    a = AttributeConfig(**base, out="runs/a")
    assert AttributeConfig(**base, out="/elsewhere/a", actors=2).config_hash() == a.config_hash()
    assert AttributeConfig(**base | {"method": "lime"}, out="runs/a").config_hash() != a.config_hash()
