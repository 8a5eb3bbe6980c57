"""JSON Lines: per-line parsing, problems for bad rows, id columns, seeking."""

from __future__ import annotations

import json

import pytest

from raypipe.corpus import CorpusError, Document, open_corpus
from raypipe.corpus.json_lines import JsonLinesSource


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_round_trip_against_json_module(tmp_path, check_range):
    rows = [{"text": f"doc {i} é ✓", "id": f"id-{i}", "n": i} for i in range(50)]
    rows[3]["text"] = ""
    path = tmp_path / "c.jsonl"
    _write_jsonl(path, rows)
    expected = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    source = JsonLinesSource.open(path, every=4)
    for start, stop in [(0, 50), (3, 4), (7, 13), (47, 60)]:
        result = check_range(source, start, stop)
        assert [d.text for d in result.documents] == [row["text"] for row in expected[start:stop]]
        assert [d.doc_id for d in result.documents] == list(range(start, min(stop, 50)))
    with_ids = open_corpus(path, id_column="id").read_range(10, 12).documents
    assert with_ids == [Document("id-10", "doc 10 é ✓", 10), Document("id-11", "doc 11 é ✓", 11)]


def test_bad_rows_become_problems_at_their_position(tmp_path, check_range):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"text": "good", "id": 7}\n'
        "{not json\n"
        "\n"
        '{"text": null, "id": 1}\n'
        '["a list"]\n'
        '{"body": "no text field", "id": 2}\n'
        '{"text": "bool id", "id": true}\n'
        '{"text": "last", "id": "x"}\n'
    )
    result = check_range(open_corpus(path, id_column="id"), 0, 8)
    assert result.documents == [Document(7, "good", 0), Document("x", "last", 7)]
    reasons = dict(result.problems)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert "invalid JSON" in reasons[1]
    assert "empty line" in reasons[2]
    assert "null" in reasons[3]
    assert "array" in reasons[4]
    assert "'text'" in reasons[5] and "'body'" in reasons[5]
    assert "boolean" in reasons[6]


def test_missing_text_field_names_the_fields_and_the_flag(tmp_path):
    path = tmp_path / "c.jsonl"
    _write_jsonl(path, [{"content": "x", "label": 1}])
    with pytest.raises(CorpusError, match=r"no field 'text'.*'content', 'label'.*--text-column"):
        open_corpus(path)
    with pytest.raises(CorpusError, match=r"no field 'uid'.*--id-column"):
        open_corpus(path, text_column="content", id_column="uid")


def test_a_json_array_file_is_not_json_lines(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=1))
    with pytest.raises(CorpusError, match="not JSON Lines"):
        open_corpus(path)


def test_latin1_line_is_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n{"text": "ok"}\n')
    result = open_corpus(path).read_range(0, 2)
    assert [d.text for d in result.documents] == ["café", "ok"] and result.decode_fallbacks == 1


def test_utf8_bom_before_the_first_object(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    result = open_corpus(path).read_range(0, 2)
    assert [d.text for d in result.documents] == ["first", "second"] and result.problems == []
