"""Text files: one document per line, seeking through a sparse index, fallback decoding."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from raypipe.corpus import CorpusError, open_corpus
from raypipe.corpus.text_lines import TextLinesSource

RT_POS = Path(__file__).resolve().parents[3] / "shared" / "data" / "rt-polarity" / "rt-polarity.pos"


def _expected_lines(data: bytes) -> list[str]:
    """Independent reference: split with plain Python, no index."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r").decode("utf-8") for line in lines]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"one line",
        b"one line\n",
        b"a\n\nb\n\n\nc\n",
        b"crlf\r\nline two\r\n\r\nlast",
        b"\n\n\n",
    ],
)
def test_every_range_matches_plain_split(tmp_path, check_range, data):
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    expected = _expected_lines(data)
    source = TextLinesSource.open(path, every=2)
    assert len(source) == len(expected)
    for start in range(len(expected) + 1):
        for stop in range(start, len(expected) + 2):
            result = check_range(source, start, stop)
            assert [d.text for d in result.documents] == expected[start:stop]
            assert [d.doc_id for d in result.documents] == list(range(start, min(stop, len(expected))))
            assert result.decode_fallbacks == 0 and result.problems == []


def test_seek_across_index_boundaries_on_larger_file(tmp_path, check_range):
    lines = [f"line {i}" if i % 7 else "" for i in range(1000)]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n")
    source = TextLinesSource.open(path, every=64)
    assert len(source.index.offsets) == 16
    for start, stop in [(0, 64), (63, 65), (64, 128), (127, 513), (999, 1000), (950, 5000)]:
        assert [d.text for d in check_range(source, start, stop).documents] == lines[start:stop]


def test_latin1_and_cp1252_bytes_decode_with_counted_fallbacks(tmp_path, check_range):
    path = tmp_path / "latin.txt"
    # caf\xe9: Latin-1 e-acute; \x93\x94: cp1252 quotes; \x81: undefined in cp1252 -> Latin-1
    path.write_bytes(b"caf\xe9\nplain\n\x93quoted\x94\nodd \x81 byte\nna\xc3\xafve\n")
    result = check_range(open_corpus(path), 0, 5)
    assert [d.text for d in result.documents] == ["café", "plain", "\u201cquoted\u201d", "odd \x81 byte", "naïve"]
    assert result.decode_fallbacks == 3


def test_fallback_encoding_is_configurable(tmp_path):
    path = tmp_path / "greek.txt"
    path.write_bytes("αβγ".encode("cp1253") + b"\n")
    result = open_corpus(path, fallback_encoding="cp1253").read_range(0, 1)
    assert result.documents[0].text == "αβγ" and result.decode_fallbacks == 1


def test_utf8_bom_is_not_part_of_the_first_document(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    assert [d.text for d in open_corpus(path).read_range(0, 2).documents] == ["first", "second"]


def test_changed_file_is_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\nb\n")
    source = open_corpus(path)
    path.write_text("a\nb\nc\nd\n")
    with pytest.raises(CorpusError, match="changed since it was indexed"):
        source.read_range(0, 2)


def test_pickled_source_is_small(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"document number {i} with some words\n" for i in range(50_000)))
    source = open_corpus(path)
    assert len(source) == 50_000
    assert os.path.getsize(path) > 1_500_000
    assert len(pickle.dumps(source)) < 2_000  # 49 offsets, a path and a stamp


def test_bad_ranges_are_errors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\nb\n")
    source = open_corpus(path)
    for start, stop in [(-1, 1), (2, 1), (0, -1)]:
        with pytest.raises(CorpusError, match="read_range"):
            source.read_range(start, stop)


@pytest.mark.skipif(not RT_POS.exists(), reason=f"shared data not present at {RT_POS}")
def test_real_rt_polarity_file(check_range):
    data = RT_POS.read_bytes()
    source = open_corpus(RT_POS)
    assert len(source) == 5331 == data.count(b"\n")
    result = check_range(source, 0, len(source))
    assert len(result.documents) == 5331 and result.problems == []
    raw_lines = data.split(b"\n")[:-1]
    not_utf8 = 0
    for raw in raw_lines:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 += 1
    assert result.decode_fallbacks == not_utf8 > 0
    assert [d.text for d in result.documents] == [raw.decode("cp1252", "replace") for raw in raw_lines]
    middle = source.read_range(2000, 3100)  # starts mid-block, crosses a K=1024 boundary
    assert middle.documents == result.documents[2000:3100]
