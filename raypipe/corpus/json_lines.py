"""JSON Lines files: one JSON object per line, the text in one field.

Indexed and read like plain text files (see ``line_index``); each line is parsed on its own,
so one malformed line becomes a ``problems`` entry instead of failing the shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import islice

from raypipe.corpus.decoding import check_encoding, decode_with_fallback
from raypipe.corpus.documents import (CorpusError, CorpusSource, Document, ReadResult, as_token_ids,
                                      clamp_range)
from raypipe.corpus.line_index import DEFAULT_EVERY, LineIndex, build_line_index, iter_lines

_SNIFF_LINES = 100
_BOM = "\ufeff"


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _parse_row(line: str, text_column: str, id_column: str | None, position: int,
               token_ids: bool = False) -> Document | str:
    """Parse one line into a document, or return the reason it cannot be one; with
    ``token_ids``, a JSON array of integers in the text field is read as token ids."""
    if not line.strip():
        return "empty line, expected a JSON object"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(row, dict):
        return f"expected a JSON object, got a JSON {_json_type(row)}"
    if text_column not in row:
        return f"no field {text_column!r} (fields: {', '.join(map(repr, row))})"
    text = row[text_column]
    ids = as_token_ids(text) if token_ids else None
    if not isinstance(text, str) and ids is None:
        expected = "a string or an array of token ids" if token_ids else "a string"
        return f"field {text_column!r} is a JSON {_json_type(text)}, expected {expected}"
    doc_id: int | str = position
    if id_column is not None:
        if id_column not in row:
            return f"no id field {id_column!r} (fields: {', '.join(map(repr, row))})"
        doc_id = row[id_column]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
            return f"id field {id_column!r} is a JSON {_json_type(doc_id)}, expected a string or an integer"
    if ids is not None:
        return Document(doc_id=doc_id, text="", position=position, token_ids=ids)
    return Document(doc_id=doc_id, text=text, position=position)


def _check_columns(index: LineIndex, fallback_encoding: str, text_column: str, id_column: str | None,
                   text_flag: str = "--text-column") -> None:
    """Fail early when none of the first JSON objects has the text (or id) field: a typo in
    ``--text-column`` would otherwise turn every row into a problem. A field that only some
    rows lack (an optional continuation column) is a problem of those rows, counted later."""
    first_error = ""
    objects: list[dict] = []
    for position, raw in enumerate(islice(iter_lines(index, 0, index.count), _SNIFF_LINES)):
        line, _ = decode_with_fallback(raw, fallback_encoding)
        line = line.removeprefix(_BOM) if position == 0 else line
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            first_error = first_error or f"invalid JSON: {exc}"
            continue
        if not isinstance(row, dict):
            first_error = first_error or f"a JSON {_json_type(row)}, not an object"
            continue
        objects.append(row)
    for column, flag in ((text_column, text_flag), (id_column, "--id-column")):
        if objects and column is not None and not any(column in row for row in objects):
            raise CorpusError(
                f"JSON Lines file {index.path!r} has no field {column!r} in its first "
                f"{len(objects)} objects; their fields are "
                f"{', '.join(map(repr, dict.fromkeys(k for row in objects for k in row)))}: "
                f"pass one of them as {flag}"
            )
    if index.count and not objects:
        raise CorpusError(
            f"{index.path!r} is not JSON Lines (one JSON object per line): none of its first "
            f"{min(index.count, _SNIFF_LINES)} lines is an object ({first_error}); "
            "convert a JSON array to JSON Lines, or pass format='text' to read raw lines"
        )


@dataclass(frozen=True, eq=False)
class JsonLinesSource(CorpusSource):
    """One document per JSON object line; the text is ``row[text_column]``."""

    index: LineIndex
    """Where every K-th line starts, and the line count."""
    text_column: str = "text"
    """Field holding the text (must be a JSON string)."""
    id_column: str | None = None
    """Field holding the document id (string or integer); None means the position."""
    fallback_encoding: str = "cp1252"
    """Encoding for lines that are not valid UTF-8."""
    token_ids: bool = False
    """Read a JSON array of integers in the text field as token ids (``Document.token_ids``)."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        text_column: str = "text",
        id_column: str | None = None,
        fallback_encoding: str = "cp1252",
        every: int = DEFAULT_EVERY,
        token_ids: bool = False,
        text_flag: str = "--text-column",
    ) -> JsonLinesSource:
        """Index ``path`` (one pass) and check the fields on its first JSON object."""
        fallback_encoding = check_encoding(fallback_encoding)
        index = build_line_index(os.path.abspath(os.fspath(path)), every)
        _check_columns(index, fallback_encoding, text_column, id_column, text_flag)
        return cls(index, text_column, id_column, fallback_encoding, token_ids)

    def __len__(self) -> int:
        return self.index.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        result = ReadResult()
        for position, raw in enumerate(iter_lines(self.index, start, stop), start):
            line, fell_back = decode_with_fallback(raw, self.fallback_encoding)
            result.decode_fallbacks += fell_back
            if position == 0:
                line = line.removeprefix(_BOM)
            parsed = _parse_row(line, self.text_column, self.id_column, position, self.token_ids)
            if isinstance(parsed, Document):
                result.documents.append(parsed)
            else:
                result.problems.append((position, parsed))
        return result

    def describe(self) -> dict:
        return {
            "kind": "jsonl",
            "path": self.index.path,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "size_bytes": self.index.stamp.size,
            "mtime_ns": self.index.stamp.mtime_ns,
            "count": self.index.count,
            "fallback_encoding": self.fallback_encoding,
        }
