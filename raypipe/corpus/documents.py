"""The shared vocabulary of corpus readers: a document, the result of reading a range, the
error type, and the interface every source implements.

The pipeline driver asks a source for its length, cuts ``[0, len)`` into shards, and ships the
*pickled source* to Ray tasks that call ``read_range`` for their shard. That is why the
interface is tiny and why sources hold paths and indexes, never the corpus itself.
"""

from __future__ import annotations

import abc
import operator
from dataclasses import dataclass, field
from typing import Any


class CorpusError(ValueError):
    """A corpus cannot be opened or read: missing file, missing column, unknown format, ...

    A ``ValueError`` so that callers validating user input can catch both alike.
    """


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    ``position`` is always the 0-based position in the corpus (line number of a text file,
    empty lines included; row of a table); ``doc_id`` equals it unless an id column is used,
    so that activations can always be traced back to a row.
    """

    doc_id: int | str
    """Identifier: the position, or the value of the id column."""
    text: str
    """The document text, possibly empty (callers count and skip empty texts)."""
    position: int
    """0-based position in the corpus."""
    token_ids: tuple[int, ...] | None = None
    """Token ids given instead of a text (a continuation column read with ``token_ids=True``
    that holds a list of integers); ``text`` is then empty."""


def as_token_ids(value: Any) -> tuple[int, ...] | None:
    """``value`` as token ids when it is a list of integers (a parsed JSON array, a Parquet
    ``list<int>`` cell; booleans and nulls are not ids), else None."""
    if isinstance(value, (list, tuple)) and all(type(i) is int for i in value):
        return tuple(value)
    return None


@dataclass
class ReadResult:
    """What ``CorpusSource.read_range`` returns: documents plus an account of what went wrong.

    Nothing is dropped silently: every position of the range is either in ``documents`` or in
    ``problems``, so ``len(documents) + len(problems) == stop - start`` (after clamping).
    """

    documents: list[Document] = field(default_factory=list)
    """Every position of the range that could be read, in order (empty texts included)."""
    decode_fallbacks: int = 0
    """Lines/cells that were not valid UTF-8 and were decoded with the fallback encoding."""
    problems: list[tuple[int, str]] = field(default_factory=list)
    """``(position, reason)`` for rows that could not be read at all."""


def clamp_range(start: int, stop: int, length: int) -> tuple[int, int]:
    """Validate ``[start, stop)`` and clamp it to ``[0, length)`` the way slicing does.

    Negative bounds and ``start > stop`` are errors rather than Python's wrap-around, because
    a shard with such bounds is a bug in the caller, not a request for the corpus's tail.
    """
    try:
        if isinstance(start, bool) or isinstance(stop, bool):
            raise TypeError
        start, stop = operator.index(start), operator.index(stop)  # numpy integers are fine
    except TypeError:
        raise CorpusError(f"read_range bounds must be integers, got start={start!r}, stop={stop!r}") from None
    if start < 0 or stop < 0:
        raise CorpusError(f"read_range bounds must be >= 0, got start={start}, stop={stop}")
    if start > stop:
        raise CorpusError(f"read_range needs start <= stop, got start={start}, stop={stop}")
    return min(start, length), min(stop, length)


class CorpusSource(abc.ABC):
    """A corpus that can say its length and read any range of consecutive documents.

    Implementations must stay small when pickled (paths and an offset index) and make
    ``read_range`` cost proportional to the range, not to its start.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of documents (positions), known without reading the texts again."""

    @abc.abstractmethod
    def read_range(self, start: int, stop: int) -> ReadResult:
        """Read positions ``[start, stop)``; ``stop`` beyond the end is clamped like a slice."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """A JSON-able record of what was read (kind, path, columns, size/mtime or a
        fingerprint, count), stored in the activation store's manifest so a resumed run can
        tell whether the corpus changed."""
