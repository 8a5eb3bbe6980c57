"""Parquet: files and directories, ranges across row groups and files, typed columns."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.corpus import CorpusError, Document, open_corpus


def _table(start: int, n: int) -> pa.Table:
    rows = range(start, start + n)
    return pa.table({"uid": [1000 + i for i in rows], "text": [f"t{i}" for i in rows], "x": [0.5] * n})


def test_directory_ranges_cross_row_groups_and_files(tmp_path, check_range):
    # three files (sorted by name), row groups of 4 rows, 25 rows in total
    pq.write_table(_table(0, 10), tmp_path / "part-0.parquet", row_group_size=4)
    pq.write_table(_table(10, 7), tmp_path / "part-1.parquet", row_group_size=4)
    pq.write_table(_table(17, 8), tmp_path / "part-2.parquet", row_group_size=4)
    (tmp_path / "_SUCCESS").write_text("")
    expected = pd.concat([pd.read_parquet(tmp_path / f"part-{k}.parquet") for k in range(3)], ignore_index=True)
    source = open_corpus(tmp_path, id_column="uid")
    assert len(source) == len(expected) == 25
    for start, stop in [(0, 25), (3, 5), (9, 11), (8, 18), (16, 17), (24, 30), (25, 25)]:
        result = check_range(source, start, stop)
        assert [d.text for d in result.documents] == list(expected["text"][start:stop])
        assert [d.doc_id for d in result.documents] == list(expected["uid"][start:stop])
    assert source.describe()["num_files"] == 3


def test_nulls_are_problems_and_binary_is_decoded(tmp_path, check_range):
    path = tmp_path / "c.parquet"
    table = pa.table({"text": pa.array([b"caf\xe9", None, b"ok", b""], type=pa.binary())})
    pq.write_table(table, path)
    result = check_range(open_corpus(path), 0, 4)
    assert result.documents == [Document(0, "café", 0), Document(2, "ok", 2), Document(3, "", 3)]
    assert result.decode_fallbacks == 1
    assert result.problems == [(1, "column 'text' is null")]


def test_missing_and_mistyped_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"sentence": ["a"], "label": [1]}), path)
    with pytest.raises(CorpusError, match=r"no column 'text'.*'sentence', 'label'.*--text-column"):
        open_corpus(path)
    with pytest.raises(CorpusError, match=r"'label'.*int64"):
        open_corpus(path, text_column="label")


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CorpusError, match="neither a dataset saved with save_to_disk"):
        open_corpus(tmp_path / "nothing")
    with pytest.raises(CorpusError, match="holds no .parquet files"):
        open_corpus(tmp_path / "nothing", format="parquet")
