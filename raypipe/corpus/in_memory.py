"""A corpus given as a list of strings, for notebooks, tests and small jobs.

The only source that carries its texts when pickled: there is no file for a worker to read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from raypipe.corpus.documents import CorpusError, CorpusSource, Document, ReadResult, clamp_range


def texts_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 over the texts (each prefixed by its length, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class InMemorySource(CorpusSource):
    """Documents held in memory; ``doc_id`` is the position in the list."""

    texts: tuple[str, ...]
    """The documents, in order."""

    @classmethod
    def open(cls, texts: Sequence[str]) -> InMemorySource:
        """Copy ``texts`` into a tuple (so later edits to the list cannot shift positions)."""
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise CorpusError(
                    f"in-memory corpus item {position} is a {type(text).__name__}, not a str; "
                    "pass a list of strings"
                )
        return cls(tuple(texts))

    def __len__(self) -> int:
        return len(self.texts)

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        return ReadResult(
            documents=[Document(doc_id=p, text=self.texts[p], position=p) for p in range(start, stop)]
        )

    def describe(self) -> dict:
        return {
            "kind": "list",
            "path": None,
            "text_column": None,
            "id_column": None,
            "fingerprint": texts_fingerprint(self.texts),
            "count": len(self.texts),
        }
