"""CSV/TSV: records (not lines), quoted newlines, seeking, strings only, counted fallbacks."""

from __future__ import annotations


import pandas as pd
import pytest

from raypipe.corpus import CorpusError, Document, open_corpus
from raypipe.corpus.csv_table import CsvSource


def _messy_frame(n: int) -> pd.DataFrame:
    texts = []
    for i in range(n):
        kind = i % 6
        texts.append(
            [f"plain {i}", f'has "quotes", commas {i}', f"two\nlines {i}", "", "NA", f"crlf\r\nin value {i}"][kind]
        )
    return pd.DataFrame({"id": [f"{i:04d}" for i in range(n)], "text": texts, "score": range(n)})


def _pandas_reference(path, sep=","):
    """Independent read: pandas' C parser, everything as strings, no NA conversion."""
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def test_round_trip_against_pandas_with_quoted_newlines(tmp_path, check_range):
    path = tmp_path / "c.csv"
    _messy_frame(40).to_csv(path, index=False)
    expected = _pandas_reference(path)
    source = CsvSource.open(path, every=3)
    assert len(source) == len(expected) == 40
    for start, stop in [(0, 40), (2, 4), (3, 6), (5, 17), (38, 50)]:
        result = check_range(source, start, stop)
        assert [d.text for d in result.documents] == list(expected["text"][start:stop])
        assert result.decode_fallbacks == 0
    ids = open_corpus(path, id_column="id").read_range(20, 22).documents
    assert ids == [Document(row.id, row.text, 20 + k) for k, row in enumerate(expected[20:22].itertuples())]


def test_tsv_and_blank_lines(tmp_path, check_range):
    path = tmp_path / "c.tsv"
    path.write_text("text\tlabel\nfirst doc\t1\n\nsecond doc\t0\n\n\nthird\t1\n")
    expected = _pandas_reference(path, sep="\t")
    result = check_range(CsvSource.open(path, delimiter="\t", every=1), 0, 10)
    assert [d.text for d in result.documents] == list(expected["text"]) == ["first doc", "second doc", "third"]
    assert open_corpus(path).describe()["kind"] == "tsv"


def test_latin1_cell_is_counted_and_short_record_is_a_problem(tmp_path, check_range):
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,text\n1,caf\xe9\n2\n3,fine\n")
    result = check_range(open_corpus(path, id_column="id"), 0, 3)
    assert result.documents == [Document("1", "café", 0), Document("3", "fine", 2)]
    assert result.decode_fallbacks == 1
    assert result.problems[0][0] == 1 and "1 fields" in result.problems[0][1]


def test_long_field_beyond_csv_default_limit(tmp_path):
    long_text = "word " * 40_000  # 200 kB, over csv's default 128 KiB field limit
    path = tmp_path / "c.csv"
    pd.DataFrame({"text": [long_text, "short"]}).to_csv(path, index=False)
    assert [d.text for d in open_corpus(path).read_range(0, 2).documents] == [long_text, "short"]


def test_missing_column_lists_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("sentence,label\nhello,1\n")
    with pytest.raises(CorpusError, match=r"no column 'text'.*'sentence', 'label'.*--text-column"):
        open_corpus(path)


def test_header_only_and_empty_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text\n")
    assert len(open_corpus(path)) == 0
    path.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        open_corpus(path)


def test_tsv_quotes_follow_pandas_and_a_stray_quote_is_an_error(tmp_path, check_range):
    """TSV as pandas writes it (quoted cells, doubled quotes, quoted newlines) reads back; raw
    text opening a quote it never closes is an error naming the record, never a cell that
    swallows the rest of the file."""
    frame = pd.DataFrame({"id": ["1", "2", "3"],
                          "text": ['He said "great" movie', "two\nlines", '"quoted" start']})
    path = tmp_path / "p.tsv"
    frame.to_csv(path, sep="\t", index=False)
    result = check_range(open_corpus(path, id_column="id"), 0, 10)
    assert [d.text for d in result.documents] == list(frame["text"])
    raw = tmp_path / "raw.tsv"
    raw.write_text('id\ttext\n1\tfine\n2\t"unbalanced quote here\n3\tthird doc\n4\tfourth doc\n')
    with pytest.raises(CorpusError, match=r"record 2 .*quoted.*\.jsonl"):
        open_corpus(raw)


def test_csv_unclosed_quote_is_an_error_naming_the_record(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text\nfine\n"unbalanced\nnext\nthird\n')
    with pytest.raises(CorpusError, match=r"record 2 .*quoted"):
        open_corpus(path)


def test_record_with_more_fields_than_the_header_is_a_problem(tmp_path, check_range):
    """An unquoted separator inside the text would cut it silently; the record is reported."""
    path = tmp_path / "c.tsv"
    path.write_text("id\ttext\n1\thello\tworld\n2\tfine\n")
    result = check_range(open_corpus(path, id_column="id"), 0, 2)
    assert [d.text for d in result.documents] == ["fine"]
    assert result.problems[0][0] == 0 and "3 fields, more than the 2" in result.problems[0][1]
