"""Parquet files, or a directory of them, with the text in one column.

Opening reads only footers (row counts per row group and the schema), never data. A read
touches only the row groups that overlap its range and only the text (and id) columns, so a
shard costs about one row group of I/O beyond its own rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.corpus.decoding import check_encoding, decode_with_fallback
from raypipe.corpus.documents import (CorpusError, CorpusSource, Document, ReadResult, as_token_ids,
                                      clamp_range)
from raypipe.corpus.line_index import FileStamp


def _is_text_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_bytes_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _is_ids_type(kind: pa.DataType) -> bool:
    """A list of integers: a column of token ids."""
    return ((pa.types.is_list(kind) or pa.types.is_large_list(kind))
            and pa.types.is_integer(kind.value_type))


def list_parquet_files(directory: str) -> list[str]:
    """The ``.parquet`` files under ``directory`` (recursively, for hive partitions), in sorted
    relative-path order so positions are stable; hidden and ``_``-prefixed entries (``_SUCCESS``,
    temporary files of writers) are skipped."""
    root = Path(directory)
    found = []
    for path in root.rglob("*.parquet"):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(part.startswith((".", "_")) for part in parts):
            found.append(path)
    return [str(path) for path in sorted(found, key=lambda p: p.relative_to(root).as_posix())]


@dataclass(frozen=True)
class ParquetPart:
    """One Parquet file: where it is, its stamp, and the row count of each row group."""

    path: str
    """Absolute path."""
    stamp: FileStamp
    """Size and mtime at opening time."""
    row_group_rows: tuple[int, ...]
    """Rows in each row group, in file order."""


def _open_part(path: str, text_column: str, id_column: str | None,
               token_ids: bool = False, text_flag: str = "--text-column") -> ParquetPart:
    """Read one footer and check that the columns exist with usable types."""
    stamp = FileStamp.of(path)
    try:
        meta = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read Parquet file {path!r}: {exc}") from exc
    schema = meta.schema_arrow
    for column, flag in ((text_column, text_flag), (id_column, "--id-column")):
        if column is not None and column not in schema.names:
            raise CorpusError(
                f"Parquet file {path!r} has no column {column!r}; its columns are "
                f"{', '.join(map(repr, schema.names))}: pass one of them as {flag}"
            )
    text_type = schema.field(text_column).type
    if not (_is_text_type(text_type) or _is_bytes_type(text_type)
            or (token_ids and _is_ids_type(text_type))):
        expected = "string, binary or a list of token ids" if token_ids else "string or binary"
        raise CorpusError(
            f"column {text_column!r} of {path!r} has type {text_type}, expected {expected}; "
            f"pass the column holding the text as {text_flag}"
        )
    if id_column is not None:
        id_type = schema.field(id_column).type
        if not (_is_text_type(id_type) or pa.types.is_integer(id_type)):
            raise CorpusError(
                f"id column {id_column!r} of {path!r} has type {id_type}, expected string or integer; "
                "pass another --id-column or none"
            )
    rows = tuple(meta.metadata.row_group(i).num_rows for i in range(meta.metadata.num_row_groups))
    return ParquetPart(path=path, stamp=stamp, row_group_rows=rows)


@dataclass(frozen=True, eq=False)
class ParquetSource(CorpusSource):
    """One document per row of one Parquet file or of a directory of Parquet files."""

    path: str
    """The file or directory given, absolute."""
    parts: tuple[ParquetPart, ...]
    """The files, in reading order."""
    text_column: str
    """Column holding the text (string, or binary decoded like text files)."""
    id_column: str | None
    """Column holding the document id (string or integer); None means the position."""
    fallback_encoding: str
    """Encoding for binary cells that are not valid UTF-8."""
    token_ids: bool = False
    """Read a ``list<int>`` text column as token ids (``Document.token_ids``)."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        text_column: str = "text",
        id_column: str | None = None,
        fallback_encoding: str = "cp1252",
        token_ids: bool = False,
        text_flag: str = "--text-column",
    ) -> ParquetSource:
        """Read the footers of the file, or of every ``.parquet`` file under the directory."""
        fallback_encoding = check_encoding(fallback_encoding)
        path = os.path.abspath(os.fspath(path))
        if os.path.isdir(path):
            files = list_parquet_files(path)
            if not files:
                raise CorpusError(f"directory {path!r} holds no .parquet files; pass a Parquet file or directory")
        else:
            files = [path]
        parts = tuple(_open_part(file, text_column, id_column, token_ids, text_flag) for file in files)
        return cls(path, parts, text_column, id_column, fallback_encoding, token_ids)

    def __len__(self) -> int:
        return sum(sum(part.row_group_rows) for part in self.parts)

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        result = ReadResult()
        first = 0  # position of the first row of the current row group
        for part in self.parts:
            groups = []  # row groups of this part that overlap [start, stop)
            part_first = None  # position of the first row of groups[0]
            for group, rows in enumerate(part.row_group_rows):
                if first < stop and first + rows > start:
                    part_first = first if part_first is None else part_first
                    groups.append(group)
                first += rows
            if groups:
                self._read_groups(result, part, groups, part_first, max(start, part_first), stop)
            if first >= stop:
                break
        return result

    def _read_groups(
        self, result: ReadResult, part: ParquetPart, groups: list[int], groups_first: int, start: int, stop: int
    ) -> None:
        """Read positions ``[start, stop)`` of ``part`` from row groups starting at ``groups_first``."""
        if FileStamp.of(part.path) != part.stamp:
            raise CorpusError(
                f"corpus file {part.path!r} changed since it was opened (size/mtime differ); "
                "open the corpus again and start a new run"
            )
        columns = [self.text_column] if self.id_column is None else [self.text_column, self.id_column]
        try:
            table = pq.ParquetFile(part.path).read_row_groups(groups, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise CorpusError(f"cannot read Parquet file {part.path!r}: {exc}") from exc
        table = table.slice(start - groups_first, stop - start)
        texts = table.column(self.text_column).to_pylist()
        ids = table.column(self.id_column).to_pylist() if self.id_column is not None else None
        for offset, text in enumerate(texts):
            position = start + offset
            if text is None:
                result.problems.append((position, f"column {self.text_column!r} is null"))
                continue
            if isinstance(text, bytes):
                text, fell_back = decode_with_fallback(text, self.fallback_encoding)
                result.decode_fallbacks += fell_back
            doc_id = position if ids is None else ids[offset]
            if doc_id is None:
                result.problems.append((position, f"id column {self.id_column!r} is null"))
                continue
            if isinstance(text, list):  # a list<int> column, accepted with token_ids
                token_ids = as_token_ids(text)
                if token_ids is None:
                    result.problems.append((position, f"column {self.text_column!r} holds a null id"))
                    continue
                result.documents.append(Document(doc_id=doc_id, text="", position=position,
                                                 token_ids=token_ids))
                continue
            result.documents.append(Document(doc_id=doc_id, text=text, position=position))

    def describe(self) -> dict:
        base = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        files = [(os.path.relpath(part.path, base), part.stamp.size, part.stamp.mtime_ns) for part in self.parts]
        return {
            "kind": "parquet",
            "path": self.path,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "num_files": len(self.parts),
            "size_bytes": sum(part.stamp.size for part in self.parts),
            "mtime_ns": max((part.stamp.mtime_ns for part in self.parts), default=0),
            "fingerprint": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
            "count": len(self),
            "fallback_encoding": self.fallback_encoding,
        }
