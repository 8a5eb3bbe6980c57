"""CSV and TSV files with a header row; one document per record.

Records may span lines (quoted newlines), so the plain line index does not apply. One pass with
Python's ``csv`` reader, fed line by line from the binary file, records the byte offset of every
K-th record; a read seeks there and parses only its range. Blank lines are not records (as in
pandas and pyarrow). Every cell is read as a string; a cell that is not valid UTF-8 is decoded
with the fallback encoding and counted. A record too short to hold the text (or id) field, or
with more fields than the header (an unquoted separator inside the text would cut it), is a
``problems`` entry, not a crash and not a silently cut text.

Quoting: CSV and TSV follow RFC 4180 (what pandas and ``csv.writer`` write: a cell holding a
quote, separator or newline is quoted, inner quotes doubled) and are parsed strictly, so a
cell that opens a quote it never closes, or text after a closing quote, is an error naming
the record instead of a field that swallows the rest of the file. Raw text with quotes at
the start of cells is better given as ``.jsonl`` or ``.txt``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from raypipe.corpus.decoding import check_encoding, decode_with_fallback
from raypipe.corpus.documents import CorpusError, CorpusSource, Document, ReadResult, clamp_range
from raypipe.corpus.line_index import DEFAULT_EVERY, FileStamp

_FIELD_LIMIT = 2**31 - 1
_BOM = "\ufeff"


class _LineFeed:
    """Yields the lines of a binary file as ``str`` for ``csv.reader`` and tracks the byte
    offset after the last line handed out: the start of the next record, since the reader
    never reads past the end of the record it returns.

    Lines are decoded with ``surrogateescape`` so that bytes survive parsing unchanged and each
    cell can be decoded on its own afterwards.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.offset = f.tell()

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        raw = self._f.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        return raw.decode("utf-8", "surrogateescape")


def _decode_cell(cell: str, fallback_encoding: str) -> tuple[str, bool]:
    """Undo ``surrogateescape`` for a cell holding invalid UTF-8, then decode with fallback."""
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return decode_with_fallback(cell.encode("utf-8", "surrogateescape"), fallback_encoding)
    return cell, False


def _records(f: IO[bytes], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(byte offset where the record starts, fields)`` for every non-blank record."""
    if csv.field_size_limit() < _FIELD_LIMIT:  # the default 128 KiB cuts long documents
        csv.field_size_limit(_FIELD_LIMIT)
    feed = _LineFeed(f)
    start = feed.offset
    for fields in csv.reader(feed, delimiter=delimiter, strict=True):  # RFC 4180, strictly
        if fields:
            yield start, fields
        start = feed.offset


@dataclass(frozen=True, eq=False)
class CsvSource(CorpusSource):
    """One document per record of a CSV/TSV file with a header row."""

    path: str
    """Absolute path of the file."""
    stamp: FileStamp
    """Size and mtime at indexing time; reads refuse a file that has changed since."""
    delimiter: str
    """Field separator: ``","`` for CSV, ``"\\t"`` for TSV."""
    columns: tuple[str, ...]
    """Header names, in file order."""
    text_column: str
    """Column holding the text."""
    id_column: str | None
    """Column holding the document id (read as a string); None means the position."""
    fallback_encoding: str
    """Encoding for cells that are not valid UTF-8."""
    count: int
    """Number of records (blank lines excluded)."""
    every: int
    """K: ``offsets[j]`` is the byte offset where record ``j * every`` starts."""
    offsets: np.ndarray
    """int64 array of shape (ceil(count / every),)."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        text_column: str = "text",
        id_column: str | None = None,
        delimiter: str = ",",
        fallback_encoding: str = "cp1252",
        every: int = DEFAULT_EVERY,
        text_flag: str = "--text-column",
    ) -> CsvSource:
        """Read the header, check the columns, and index record starts (one pass)."""
        if every < 1:
            raise CorpusError(f"record index spacing must be >= 1, got {every}")
        fallback_encoding = check_encoding(fallback_encoding)
        path = os.path.abspath(os.fspath(path))
        stamp = FileStamp.of(path)
        offsets: list[int] = []
        count = 0
        try:
            with open(path, "rb") as f:
                records = _records(f, delimiter)
                header = next(records, None)
                if header is None:
                    raise CorpusError(
                        f"CSV file {path!r} is empty: expected a header row naming a {text_column!r} column"
                    )
                columns = tuple(_decode_cell(name, fallback_encoding)[0] for name in header[1])
                columns = (columns[0].removeprefix(_BOM), *columns[1:])
                for column, flag in ((text_column, text_flag), (id_column, "--id-column")):
                    if column is not None and column not in columns:
                        raise CorpusError(
                            f"CSV file {path!r} has no column {column!r}; its columns are "
                            f"{', '.join(map(repr, columns))}: pass one of them as {flag}"
                        )
                for start, _ in records:
                    if count % every == 0:
                        offsets.append(start)
                    count += 1
        except csv.Error as exc:
            raise CorpusError(
                f"cannot parse CSV file {path!r} at record {count + 1} (after the header): {exc}. "
                "CSV fields that contain quotes, commas or newlines must be quoted, with inner "
                'quotes doubled ("say ""hi"""); a file of raw text lines is better read as .txt '
                "or .jsonl") from exc
        except OSError as exc:
            raise CorpusError(f"cannot read corpus file {path!r}: {exc}") from exc
        return cls(
            path=path,
            stamp=stamp,
            delimiter=delimiter,
            columns=columns,
            text_column=text_column,
            id_column=id_column,
            fallback_encoding=fallback_encoding,
            count=count,
            every=every,
            offsets=np.asarray(offsets, dtype=np.int64),
        )

    def __len__(self) -> int:
        return self.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        result = ReadResult()
        if start == stop:
            return result
        if FileStamp.of(self.path) != self.stamp:
            raise CorpusError(
                f"corpus file {self.path!r} changed since it was indexed (size/mtime differ); "
                "open the corpus again and start a new run"
            )
        text_at = self.columns.index(self.text_column)
        id_at = None if self.id_column is None else self.columns.index(self.id_column)
        block = start // self.every
        position = block * self.every
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[block]))
            try:
                for _, fields in _records(f, self.delimiter):
                    if position >= start:
                        self._append(result, position, fields, text_at, id_at)
                    position += 1
                    if position == stop:
                        break
            except csv.Error as exc:
                raise CorpusError(f"cannot parse CSV file {self.path!r} near record {position}: {exc}") from exc
        if position < stop:
            raise CorpusError(f"CSV file {self.path!r} ended at record {position}, expected {self.count} records")
        return result

    def _append(self, result: ReadResult, position: int, fields: list[str], text_at: int, id_at: int | None) -> None:
        """Turn one record into a document (or a problem) and count decode fallbacks."""
        needed = max(text_at, -1 if id_at is None else id_at) + 1
        if len(fields) < needed or len(fields) > len(self.columns):
            side = "fewer" if len(fields) < needed else "more"
            result.problems.append(
                (position, f"record has {len(fields)} fields, {side} than the {len(self.columns)} "
                           "columns of the header")
            )
            return
        text, fell_back = _decode_cell(fields[text_at], self.fallback_encoding)
        result.decode_fallbacks += fell_back
        doc_id: int | str = position
        if id_at is not None:
            doc_id, fell_back = _decode_cell(fields[id_at], self.fallback_encoding)
            result.decode_fallbacks += fell_back
        result.documents.append(Document(doc_id=doc_id, text=text, position=position))

    def describe(self) -> dict:
        return {
            "kind": "tsv" if self.delimiter == "\t" else "csv",
            "path": self.path,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "size_bytes": self.stamp.size,
            "mtime_ns": self.stamp.mtime_ns,
            "count": self.count,
            "fallback_encoding": self.fallback_encoding,
        }
