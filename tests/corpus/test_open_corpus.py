"""open_corpus: format inference, in-memory lists, and the errors users meet first."""

from __future__ import annotations

import pickle

import pytest

from raypipe.corpus import CorpusError, Document, open_corpus
from raypipe.corpus.sources import infer_format


def test_format_is_inferred_from_suffix_and_directory(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "a.parquet").write_bytes(b"")
    cases = {
        "a.txt": "text", "a.text": "text", "README": "text", "a.md": "text", "a.jsonl": "jsonl",
        "a.JSON": "jsonl", "a.csv": "csv", "a.tsv": "tsv", "a.parquet": "parquet", "ds": "hf_saved", "pq": "parquet",
    }
    assert {name: infer_format(tmp_path / name) for name in cases} == cases
    assert infer_format(["a"]) == "list" and infer_format(("a",)) == "list"
    assert infer_format("hf:owner/name") == "hf" and infer_format("stdlib:docstrings") == "stdlib"


def test_in_memory_list(check_range):
    texts = ["alpha", "", "gamma", "delta"]
    source = open_corpus(texts)
    texts.append("added later")  # the source copied the list
    assert len(source) == 4
    result = check_range(source, 1, 10)
    assert result.documents == [Document(1, "", 1), Document(2, "gamma", 2), Document(3, "delta", 3)]
    with pytest.raises(CorpusError, match=r"item 1 is a int"):
        open_corpus(["ok", 3])


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError, match="nope.jsonl"):
        open_corpus(missing)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "xml"}, "unknown corpus format 'xml'"),
        ({"fallback_encoding": "klingon"}, "unknown fallback encoding 'klingon'"),
        ({"id_column": "id"}, "id_column='id' needs a tabular corpus"),
    ],
)
def test_bad_arguments_name_the_value(tmp_path, kwargs, message):
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    with pytest.raises(CorpusError, match=message):
        open_corpus(path, **kwargs)


def test_unknown_embedded_corpus():
    with pytest.raises(CorpusError, match="stdlib:docstrings"):
        open_corpus("stdlib:nope")


def test_corpus_error_is_a_value_error():
    assert issubclass(CorpusError, ValueError)


def test_describe_records_identity(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n')
    described = open_corpus(path).describe()
    assert described["kind"] == "jsonl" and described["path"] == str(path) and described["count"] == 1
    assert described["size_bytes"] == path.stat().st_size and described["mtime_ns"] == path.stat().st_mtime_ns
    assert pickle.loads(pickle.dumps(open_corpus(path))).describe() == described


def test_numpy_integer_bounds_are_accepted():
    import numpy as np

    bounds = np.array([1, 3])
    assert [d.text for d in open_corpus(["a", "b", "c", "d"]).read_range(bounds[0], bounds[1]).documents] == ["b", "c"]
    with pytest.raises(CorpusError, match="integers"):
        open_corpus(["a"]).read_range(0.0, 1)


def test_unreadable_paths_say_what_was_expected(tmp_path):
    """Paths that exist but hold no corpus: a directory (even one named like a text file), a
    broken symlink. (Permission bits cannot be tested here: CI runs as root.)"""
    (tmp_path / "docs.txt").mkdir()
    with pytest.raises(CorpusError, match=r"directory .*docs\.txt.*save_to_disk.*\.parquet"):
        open_corpus(tmp_path / "docs.txt")
    (tmp_path / "link.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(CorpusError, match="link.txt"):
        open_corpus(tmp_path / "link.txt")


def test_a_continuation_column_may_hold_token_ids(tmp_path):
    """With token_ids=True (attribution targets), a JSON Lines array or a Parquet list<int>
    of integers is read as ids; anything else that is not text stays a problem, and without
    the flag an array is a problem as before."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": "p", "t": t}) for t in
                              [" text", [3, 1, 4], [], [1, True], [1, "2"], 7]) + "\n")
    read = open_corpus(str(path), text_column="t", token_ids=True).read_range(0, 6)
    assert [(d.position, d.text, d.token_ids) for d in read.documents] == [
        (0, " text", None), (1, "", (3, 1, 4)), (2, "", ())]
    assert [p for p, _ in read.problems] == [3, 4, 5]
    assert all("a string or an array of token ids" in m for _, m in read.problems)
    plain = open_corpus(str(path), text_column="t").read_range(0, 6)
    assert [d.position for d in plain.documents] == [0]

    table = pa.table({"text": ["p", "q", "r"],
                      "t": pa.array([[5, 6], None, [7, None]], pa.list_(pa.int32()))})
    pq.write_table(table, tmp_path / "c.parquet")
    read = open_corpus(str(tmp_path / "c.parquet"), text_column="t", token_ids=True).read_range(0, 3)
    assert [(d.position, d.token_ids) for d in read.documents] == [(0, (5, 6))]
    assert [p for p, _ in read.problems] == [1, 2]
    with pytest.raises(CorpusError, match="expected string or binary"):
        open_corpus(str(tmp_path / "c.parquet"), text_column="t")


def test_a_field_only_some_rows_lack_is_their_problem_a_field_none_has_is_an_error(tmp_path):
    """An optional continuation column may be absent from the first row; a column no sniffed
    row has is a typo, named with the option that gave it."""
    import json

    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in
                              [{"text": "a"}, {"text": "b", "answer": " c"}]) + "\n")
    read = open_corpus(str(path), text_column="answer", token_ids=True,
                       text_flag="--target-column").read_range(0, 2)
    assert [d.text for d in read.documents] == [" c"] and [p for p, _ in read.problems] == [0]
    with pytest.raises(CorpusError, match=r"no field 'anser'.*'text', 'answer'.*--target-column"):
        open_corpus(str(path), text_column="anser", text_flag="--target-column")
