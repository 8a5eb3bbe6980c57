"""The embedded default corpus: paragraphs of the Python standard library's docstrings.

Every machine with Python has it, offline, so examples, tests and first runs need no download.
Docstrings are read with ``ast`` from the stdlib source files rather than by importing the
modules: importing runs module code (side effects, GUI toolkits, seconds of start-up), parsing
does not. Texts are deterministic for a given Python version; the source records that version
and a fingerprint so a worker with another Python cannot silently read other documents.
"""

from __future__ import annotations

import ast
import functools
import os
import platform
import re
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from raypipe.corpus.documents import CorpusError, CorpusSource, Document, ReadResult, clamp_range
from raypipe.corpus.in_memory import texts_fingerprint

SKIPPED_MODULES = frozenset({"antigravity", "this", "tkinter", "turtle", "idlelib", "test", "lib2to3", "turtledemo"})
"""Top-level modules left out: jokes, GUI code, and test suites (not documentation)."""
_SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__"})
_MIN_CHARS = 30
_MIN_WORDS = 4
_MIN_LETTER_SHARE = 0.6  # letters among non-space characters; prose is ~0.8, code much less
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_source_files(stdlib_dir: str | None = None) -> list[str]:
    """Source files of the stdlib's top-level modules and packages (``sys.stdlib_module_names``
    minus ``SKIPPED_MODULES``), sorted by module name, then by path within a package."""
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    files = []
    for name in sorted(sys.stdlib_module_names - SKIPPED_MODULES):
        module_file = os.path.join(root, name + ".py")
        package_dir = os.path.join(root, name)
        if os.path.isfile(module_file):
            files.append(module_file)
        elif os.path.isdir(package_dir):
            for dirpath, dirnames, filenames in os.walk(package_dir):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
                files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return files


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings of a module and of its classes and functions, in source order.

    Walks statement blocks only (definitions can sit inside ``if``/``try``/``with``), never
    expressions: docstrings cannot be there, and skipping them makes the walk cheap.
    """
    if isinstance(node, _DOCUMENTED):
        docstring = ast.get_docstring(node, clean=True)
        if docstring:
            yield docstring
    for block in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, block, ()):
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                yield from _docstrings(child)


def _looks_like_code(paragraph: str) -> bool:
    """Doctest sessions and signatures/tables: a line starting with ``>>>``, or few letters."""
    if any(line.lstrip().startswith(">>>") for line in paragraph.splitlines()):
        return True
    visible = "".join(paragraph.split())
    return sum(c.isalpha() for c in visible) < _MIN_LETTER_SHARE * len(visible)


def docstring_paragraphs(docstring: str) -> list[str]:
    """Split a docstring at blank lines and keep the prose paragraphs, whitespace normalised.

    Besides short and code-looking paragraphs, reStructuredText literal blocks are dropped: a
    paragraph after one ending in ``::``, or one whose lines are all indented.
    """
    kept = []
    after_literal_marker = False
    for paragraph in _PARAGRAPH_BREAK.split(docstring.strip("\n")):
        text = " ".join(paragraph.split())
        literal = after_literal_marker or all(line[:1].isspace() for line in paragraph.splitlines() if line.strip())
        after_literal_marker = text.endswith("::") or (after_literal_marker and literal and paragraph[:1].isspace())
        if literal or len(text) < _MIN_CHARS or len(text.split()) < _MIN_WORDS or _looks_like_code(paragraph):
            continue
        kept.append(text)
    return kept


@functools.lru_cache(maxsize=1)
def _all_paragraphs() -> tuple[str, ...]:
    """Every kept paragraph, de-duplicated in first-seen order (parsed once per process)."""
    seen: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old stdlib sources
        for path in stdlib_source_files():
            try:
                with open(path, "rb") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (OSError, SyntaxError, ValueError):
                continue  # unreadable or not Python 3 (data files named .py): not documentation
            for docstring in _docstrings(tree):
                seen.update(dict.fromkeys(docstring_paragraphs(docstring)))
    return tuple(seen)


def stdlib_docstrings(max_docs: int | None = None) -> list[str]:
    """Paragraphs of the Python standard library's docstrings: a few thousand short English
    technical texts, deterministic for a given Python version, available offline.

    ``max_docs`` keeps the first ``max_docs`` paragraphs (None keeps all).
    """
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 0):
        raise ValueError(f"max_docs must be a non-negative integer or None, got {max_docs!r}")
    return list(_all_paragraphs()[:max_docs])


@dataclass(frozen=True, eq=False)
class StdlibDocstringsSource(CorpusSource):
    """``stdlib_docstrings()`` as a corpus; workers recompute the texts instead of receiving them."""

    max_docs: int | None
    """As in ``stdlib_docstrings``."""
    count: int
    """Number of documents."""
    python_version: str
    """Python version whose stdlib was read; the texts depend on it."""
    fingerprint: str
    """SHA-256 of the texts; a worker whose texts differ refuses to read."""

    @classmethod
    def open(cls, max_docs: int | None = None) -> StdlibDocstringsSource:
        """Collect the paragraphs (a few seconds, once per process) and fingerprint them."""
        texts = stdlib_docstrings(max_docs)
        if not texts:
            raise CorpusError(
                f"found no docstrings under {sysconfig.get_paths()['stdlib']!r} (is the stdlib "
                "installed only as a zip?); pass a corpus file instead"
            )
        return cls(max_docs, len(texts), platform.python_version(), texts_fingerprint(texts))

    def __len__(self) -> int:
        return self.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        texts = _all_paragraphs()[: self.count]
        if len(texts) != self.count or _fingerprint(self.count) != self.fingerprint:
            raise CorpusError(
                f"this process's stdlib docstrings differ from the ones the corpus was opened with "
                f"(Python {platform.python_version()} here, {self.python_version} there); run every "
                "worker with the same Python version"
            )
        return ReadResult(documents=[Document(doc_id=p, text=texts[p], position=p) for p in range(start, stop)])

    def describe(self) -> dict:
        return {
            "kind": "stdlib_docstrings",
            "path": "stdlib:docstrings",
            "text_column": None,
            "id_column": None,
            "python_version": self.python_version,
            "max_docs": self.max_docs,
            "fingerprint": self.fingerprint,
            "count": self.count,
        }


@functools.lru_cache(maxsize=4)
def _fingerprint(count: int) -> str:
    """Fingerprint of the first ``count`` paragraphs, computed once per process."""
    return texts_fingerprint(_all_paragraphs()[:count])
