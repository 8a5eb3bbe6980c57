"""``open_corpus``: turn what a user typed (a path, a list, ``hf:NAME``, ``stdlib:docstrings``)
into a ``CorpusSource``, inferring the format from the suffix or the directory's contents."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from raypipe.corpus.csv_table import CsvSource
from raypipe.corpus.decoding import check_encoding
from raypipe.corpus.documents import CorpusError, CorpusSource
from raypipe.corpus.hf_datasets import HubDatasetSource, SavedDatasetSource
from raypipe.corpus.in_memory import InMemorySource
from raypipe.corpus.json_lines import JsonLinesSource
from raypipe.corpus.parquet_table import ParquetSource, list_parquet_files
from raypipe.corpus.stdlib_docstrings import StdlibDocstringsSource
from raypipe.corpus.text_lines import TextLinesSource

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet", "hf_saved", "hf", "list", "stdlib")
"""Values accepted for ``format`` (``None`` infers it)."""

_HF_PREFIX = "hf:"
_STDLIB_NAME = "stdlib:docstrings"
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_HF_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def infer_format(corpus: str | os.PathLike | Sequence[str]) -> str:
    """The format ``open_corpus`` would use for ``corpus`` when ``format`` is None."""
    if isinstance(corpus, (list, tuple)):
        return "list"
    if isinstance(corpus, str) and corpus.startswith(_HF_PREFIX):
        return "hf"
    if isinstance(corpus, str) and corpus == _STDLIB_NAME:
        return "stdlib"
    path = Path(os.fspath(corpus))
    if path.is_dir():
        if any((path / marker).is_file() for marker in _HF_SAVED_MARKERS):
            return "hf_saved"
        if list_parquet_files(str(path)):
            return "parquet"
        raise CorpusError(
            f"cannot tell the format of directory {str(path)!r}: it is neither a dataset saved with "
            "save_to_disk (dataset_info.json/state.json) nor a directory of .parquet files"
        )
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "text")


def open_corpus(
    corpus: str | os.PathLike | Sequence[str],
    *,
    text_column: str = "text",
    id_column: str | None = None,
    format: str | None = None,
    fallback_encoding: str = "cp1252",
    split: str = "train",
    token_ids: bool = False,
    text_flag: str = "--text-column",
) -> CorpusSource:
    """Open a corpus for sharded reading; runs the one cheap indexing pass its format needs.

    ``corpus`` is a file (``.txt``/other: one document per line; ``.jsonl``/``.json``: JSON
    lines; ``.csv``/``.tsv``; ``.parquet``), a directory (saved HF dataset, or ``.parquet``
    files), a list/tuple of strings, ``"hf:NAME"`` (``datasets.load_dataset(NAME, split=split)``)
    or ``"stdlib:docstrings"`` (the embedded default corpus). ``text_column``/``id_column`` name
    the columns of tabular formats; ``fallback_encoding`` decodes what is not UTF-8.
    ``token_ids``: a JSON Lines array or a Parquet ``list<int>`` in the text column is read
    as token ids (``Document.token_ids``: a continuation to explain given as ids).
    ``text_flag``: the option that named ``text_column``, for error messages.
    """
    if format is not None and format not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r}; use one of {', '.join(FORMATS)} or None to infer it")
    if isinstance(corpus, Sequence) and not isinstance(corpus, (str, list, tuple)):
        raise CorpusError(
            f"corpus must be a path, a list/tuple of str, 'hf:NAME' or {_STDLIB_NAME!r}, got {type(corpus).__name__}"
        )
    if isinstance(corpus, str) and corpus.startswith("stdlib:") and corpus != _STDLIB_NAME:
        raise CorpusError(f"unknown embedded corpus {corpus!r}; the only one is {_STDLIB_NAME!r}")
    check_encoding(fallback_encoding)
    fmt = format or infer_format(corpus)
    if fmt in ("list", "stdlib", "text") and id_column is not None:
        raise CorpusError(f"id_column={id_column!r} needs a tabular corpus; {fmt!r} corpora have no columns, drop it")

    if fmt == "list":
        if not isinstance(corpus, (list, tuple)):
            raise CorpusError(f"format 'list' needs a list or tuple of str, got {type(corpus).__name__}")
        return InMemorySource.open(corpus)
    if isinstance(corpus, (list, tuple)):
        raise CorpusError(f"format {fmt!r} needs a path or name, got a {type(corpus).__name__}; use format='list'")
    if fmt == "stdlib":
        return StdlibDocstringsSource.open()
    if fmt == "hf":
        name = str(corpus).removeprefix(_HF_PREFIX)
        if not name:
            raise CorpusError(f"empty Hub dataset name in {corpus!r}; write hf:OWNER/NAME")
        return HubDatasetSource.open(name, text_column, id_column, split, fallback_encoding,
                                     text_flag=text_flag)

    path = os.fspath(corpus)
    if not os.path.exists(path):
        raise CorpusError(f"corpus not found: {path!r}; check the path (or use 'hf:NAME' / {_STDLIB_NAME!r})")
    if fmt == "text":
        if os.path.isdir(path):
            raise CorpusError(f"{path!r} is a directory, not a text file; pass a file or another format")
        return TextLinesSource.open(path, fallback_encoding)
    if fmt == "jsonl":
        return JsonLinesSource.open(path, text_column, id_column, fallback_encoding,
                                    token_ids=token_ids, text_flag=text_flag)
    if fmt in ("csv", "tsv"):
        return CsvSource.open(path, text_column, id_column, "\t" if fmt == "tsv" else ",", fallback_encoding,
                              text_flag=text_flag)
    if fmt == "parquet":
        return ParquetSource.open(path, text_column, id_column, fallback_encoding,
                                  token_ids=token_ids, text_flag=text_flag)
    return SavedDatasetSource.open(path, text_column, id_column, split, fallback_encoding,
                                   text_flag=text_flag)
