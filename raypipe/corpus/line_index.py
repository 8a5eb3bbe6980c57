"""A sparse index of line starts, so a line-based file can be read from any line by seeking.

One pass over the file records the byte offset of every K-th line (K = 1024 by default). A read
of lines ``[start, stop)`` then seeks to the offset of line ``start // K * K`` and skips at most
K - 1 lines, so its cost does not grow with ``start``. The index holds ``lines / K`` integers:
small enough to pickle into every Ray task.

Lines are the pieces of the file split on ``b"\\n"``, a trailing ``b"\\r"`` removed; a final
newline does not start an extra, empty line; empty lines in between are lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from raypipe.corpus.documents import CorpusError

DEFAULT_EVERY = 1024
_CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class FileStamp:
    """Size and modification time of a file, to notice that it changed after indexing."""

    size: int
    """Size in bytes."""
    mtime_ns: int
    """Modification time in nanoseconds since the epoch."""

    @classmethod
    def of(cls, path: str) -> FileStamp:
        """Stamp ``path`` now; a missing or unreadable file is a ``CorpusError`` naming it."""
        try:
            stat = os.stat(path)
        except FileNotFoundError as exc:
            raise CorpusError(f"corpus file not found: {path!r}; check the path") from exc
        except OSError as exc:
            raise CorpusError(f"cannot read corpus file {path!r}: {exc}") from exc
        return cls(size=stat.st_size, mtime_ns=stat.st_mtime_ns)


@dataclass(frozen=True, eq=False)
class LineIndex:
    """Offsets of every ``every``-th line of one file, and its line count."""

    path: str
    """Absolute path of the indexed file."""
    stamp: FileStamp
    """Size and mtime at indexing time; reads refuse a file that has changed since."""
    count: int
    """Number of lines."""
    every: int
    """K: ``offsets[j]`` is the byte offset where line ``j * every`` starts."""
    offsets: np.ndarray
    """int64 array of shape (ceil(count / every),)."""


def build_line_index(path: str, every: int = DEFAULT_EVERY) -> LineIndex:
    """Index ``path`` in one pass: count its lines and note where every ``every``-th starts.

    Uses numpy to find newlines chunk by chunk, so a pass runs at disk speed rather than at
    Python-loop speed.
    """
    if every < 1:
        raise CorpusError(f"line index spacing must be >= 1, got {every}")
    stamp = FileStamp.of(path)
    starts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    newlines = 0  # newlines seen before the current chunk
    base = 0  # byte offset of the current chunk
    last_byte = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                where = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
                # newline number g (0-based, global) ends line g; line g + 1 starts after it.
                wanted = (newlines + np.arange(where.size) + 1) % every == 0
                starts.append(base + where[wanted].astype(np.int64) + 1)
                newlines += where.size
                base += len(chunk)
                last_byte = chunk[-1:]
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path!r}: {exc}") from exc
    count = newlines + (1 if last_byte not in (b"", b"\n") else 0)
    offsets = np.concatenate(starts)
    offsets = offsets[: -(-count // every)]  # a start recorded after the final newline is no line
    return LineIndex(path=path, stamp=stamp, count=count, every=every, offsets=offsets)


def iter_lines(index: LineIndex, start: int, stop: int) -> Iterator[bytes]:
    """Yield the raw bytes of lines ``[start, stop)`` (already clamped to ``[0, count]``),
    without their ``b"\\n"`` / ``b"\\r\\n"`` ending.

    Raises ``CorpusError`` when the file changed since it was indexed: positions would no
    longer mean the same lines, and a resumed job would silently mix two corpora.
    """
    if start >= stop:
        return
    if FileStamp.of(index.path) != index.stamp:
        raise CorpusError(
            f"corpus file {index.path!r} changed since it was indexed (size/mtime differ); "
            "open the corpus again and start a new run"
        )
    block = start // index.every
    with open(index.path, "rb") as f:
        f.seek(int(index.offsets[block]))
        for _ in range(start - block * index.every):
            f.readline()
        for position in range(start, stop):
            line = f.readline()
            if not line and position < index.count:
                raise CorpusError(f"corpus file {index.path!r} ended at line {position}, expected {index.count} lines")
            if line.endswith(b"\n"):
                line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            yield line
