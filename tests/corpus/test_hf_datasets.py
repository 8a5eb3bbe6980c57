"""Hugging Face datasets: saved with save_to_disk (Dataset and DatasetDict); Hub offline."""

from __future__ import annotations

import datasets
import pytest

from raypipe.corpus import CorpusError, Document, open_corpus


def test_saved_dataset_round_trip(tmp_path, check_range):
    texts = [f"sentence {i}" for i in range(30)]
    columns = {"sentence": texts, "idx": list(range(100, 130)), "label": [i % 2 for i in range(30)]}
    datasets.Dataset.from_dict(columns).save_to_disk(tmp_path / "ds")
    expected = datasets.load_from_disk(tmp_path / "ds")["sentence"]
    source = open_corpus(tmp_path / "ds", text_column="sentence", id_column="idx")
    assert len(source) == 30
    for start, stop in [(0, 30), (5, 9), (28, 40)]:
        result = check_range(source, start, stop)
        assert [d.text for d in result.documents] == list(expected[start:stop])
        assert [d.doc_id for d in result.documents] == list(range(100 + start, 100 + min(stop, 30)))


def test_saved_dataset_dict_picks_the_split(tmp_path):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a", "b"]}), "test": datasets.Dataset.from_dict({"text": ["c"]})}
    )
    dd.save_to_disk(tmp_path / "dd")
    assert open_corpus(tmp_path / "dd", split="test").read_range(0, 5).documents == [Document(0, "c", 0)]
    with pytest.raises(CorpusError, match=r"no split 'validation'.*'train', 'test'"):
        open_corpus(tmp_path / "dd", split="validation")


def test_saved_dataset_missing_column(tmp_path):
    datasets.Dataset.from_dict({"sentence": ["a"]}).save_to_disk(tmp_path / "ds")
    with pytest.raises(CorpusError, match=r"no column 'text'.*'sentence'.*--text-column"):
        open_corpus(tmp_path / "ds")


def test_hub_failure_is_a_clear_corpus_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CorpusError, match=r"cannot load Hugging Face dataset 'x/y'.*save_to_disk"):
        open_corpus("hf:x/y")
