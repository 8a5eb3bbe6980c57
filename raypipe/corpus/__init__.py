"""Corpus readers: open a corpus of any supported format and read it in ranges, for sharding.

``open_corpus`` picks a reader from the path; every reader is a ``CorpusSource`` with
``len``, ``read_range(start, stop)`` and ``describe()``.
"""

from raypipe.corpus.documents import CorpusError, CorpusSource, Document, ReadResult
from raypipe.corpus.sources import open_corpus
from raypipe.corpus.stdlib_docstrings import stdlib_docstrings

__all__ = ["CorpusError", "CorpusSource", "Document", "ReadResult", "open_corpus", "stdlib_docstrings"]
