"""The embedded default corpus: stdlib docstring paragraphs, parsed not imported."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from raypipe.corpus import CorpusError, open_corpus, stdlib_docstrings
from raypipe.corpus.in_memory import texts_fingerprint
from raypipe.corpus.stdlib_docstrings import docstring_paragraphs


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return stdlib_docstrings()


def test_size_and_cleanliness(docs):
    assert len(docs) > 2000
    assert len(set(docs)) == len(docs)
    assert all(len(d) >= 30 and len(d.split()) >= 4 for d in docs)
    assert all(d == " ".join(d.split()) for d in docs)
    assert not any(d.startswith(">>>") for d in docs)


def test_contains_a_known_docstring_paragraph(docs):
    # independent source: the runtime docstring of an imported module's function
    import textwrap

    first = " ".join(textwrap.dedent(json.loads.__doc__).strip().split("\n\n")[0].split())
    assert first in docs
    assert docs[: 10] == stdlib_docstrings(10)


def test_deterministic_across_processes(docs):
    code = (
        "from raypipe.corpus import stdlib_docstrings; from raypipe.corpus.in_memory import texts_fingerprint;"
        "print(texts_fingerprint(stdlib_docstrings()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == texts_fingerprint(docs)


def test_paragraph_filter():
    doc = (
        "Return the thing that this function computes for you.\n\n"
        "Example::\n\n    x = compute(1, 2)\n    y = x + 1\n\n"
        ">>> compute(1, 2)\n3\n\n"
        "Too short.\n\n"
        "{a: [1, 2], b: (3, 4)} -> {c: [5]}\n\n"
        "Last   paragraph,\n   spread over    lines of text."
    )
    assert docstring_paragraphs(doc) == [
        "Return the thing that this function computes for you.",
        "Last paragraph, spread over lines of text.",
    ]


def test_source_reads_the_same_texts_and_pickles_small(docs, check_range):
    source = open_corpus("stdlib:docstrings")
    assert len(source) == len(docs)
    result = check_range(source, 100, 150)
    assert [d.text for d in result.documents] == docs[100:150]
    assert len(pickle.dumps(source)) < 1000
    forged = pickle.loads(pickle.dumps(source))
    object.__setattr__(forged, "fingerprint", "0" * 64)  # as if opened on another Python
    with pytest.raises(CorpusError, match="same Python version"):
        forged.read_range(0, 1)


def test_max_docs_validation():
    with pytest.raises(ValueError, match="max_docs"):
        stdlib_docstrings(-1)
