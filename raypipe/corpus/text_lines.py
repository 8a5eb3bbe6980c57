"""Plain text files with one document per line.

The simplest corpus format and the one real data often comes in (rt-polarity). Position ``i`` is
line ``i`` of the file, empty lines included, so positions match ``sed -n`` and ``wc -l``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from raypipe.corpus.decoding import check_encoding, decode_with_fallback
from raypipe.corpus.documents import CorpusSource, Document, ReadResult, clamp_range
from raypipe.corpus.line_index import DEFAULT_EVERY, LineIndex, build_line_index, iter_lines

_BOM = "\ufeff"


@dataclass(frozen=True, eq=False)
class TextLinesSource(CorpusSource):
    """One document per line of a text file; reads seek through a sparse line index."""

    index: LineIndex
    """Where every K-th line starts, and the line count."""
    fallback_encoding: str = "cp1252"
    """Encoding for lines that are not valid UTF-8."""

    @classmethod
    def open(
        cls, path: str | os.PathLike, fallback_encoding: str = "cp1252", every: int = DEFAULT_EVERY
    ) -> TextLinesSource:
        """Index ``path`` (one pass). ``every`` is the index spacing K; tests make it small."""
        return cls(build_line_index(os.path.abspath(os.fspath(path)), every), check_encoding(fallback_encoding))

    def __len__(self) -> int:
        return self.index.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        result = ReadResult()
        for position, raw in enumerate(iter_lines(self.index, start, stop), start):
            text, fell_back = decode_with_fallback(raw, self.fallback_encoding)
            if position == 0 and text.startswith(_BOM):
                text = text[1:]
            result.decode_fallbacks += fell_back
            result.documents.append(Document(doc_id=position, text=text, position=position))
        return result

    def describe(self) -> dict:
        return {
            "kind": "text",
            "path": self.index.path,
            "text_column": None,
            "id_column": None,
            "size_bytes": self.index.stamp.size,
            "mtime_ns": self.index.stamp.mtime_ns,
            "count": self.index.count,
            "fallback_encoding": self.fallback_encoding,
        }
