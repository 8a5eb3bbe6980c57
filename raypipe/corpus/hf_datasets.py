"""Hugging Face datasets: a dataset saved with ``save_to_disk``, or one loaded from the Hub.

Datasets are memory-mapped Arrow tables, so a read of any range is cheap. The source keeps only
the location (directory, or Hub name and split) and loads the dataset lazily, once per process,
so that pickling it into Ray tasks stays small. ``datasets`` is imported inside the functions:
it is slow to import and most corpora do not need it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.corpus.decoding import check_encoding, decode_with_fallback
from raypipe.corpus.documents import CorpusError, CorpusSource, Document, ReadResult, clamp_range

_TEXT_DTYPES = {"string", "large_string", "string_view", "binary", "large_binary", "binary_view"}
_INT_DTYPES = {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}


def directory_fingerprint(directory: str) -> str:
    """SHA-256 over (relative path, size, mtime) of every file under ``directory``: changes
    when the saved dataset is rewritten, without reading its data."""
    root = Path(directory)
    entries = sorted(
        (path.relative_to(root).as_posix(), path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _load_saved(path: str, split: str, fingerprint: str) -> Any:
    """Load (memory-map) a saved Dataset, or one split of a saved DatasetDict.

    ``fingerprint`` is only part of the cache key: a rewritten directory is loaded afresh.
    """
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise CorpusError(f"cannot load the saved Hugging Face dataset at {path!r}: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise CorpusError(
                f"saved dataset {path!r} has no split {split!r}; its splits are "
                f"{', '.join(map(repr, loaded))}: pass one of them as --corpus-split (YAML: corpus_split)"
            )
        loaded = loaded[split]
    return loaded


@functools.lru_cache(maxsize=8)
def _load_hub(name: str, split: str) -> Any:
    """Load a dataset from the Hub (or the local Hub cache)."""
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown name, bad split, ...: all mean "cannot open"
        raise CorpusError(
            f"cannot load Hugging Face dataset {name!r} (split {split!r}) from the Hub: "
            f"{type(exc).__name__}: {exc}. Without network access, save it with "
            "`datasets.load_dataset(...).save_to_disk(DIR)` on a connected machine and pass DIR"
        ) from exc


def _check_features(dataset: Any, where: str, text_column: str, id_column: str | None,
                    text_flag: str = "--text-column") -> None:
    """Fail early on a missing column or one whose type cannot be a text (or an id)."""
    features = dataset.features
    for column, flag in ((text_column, text_flag), (id_column, "--id-column")):
        if column is not None and column not in features:
            raise CorpusError(
                f"dataset {where} has no column {column!r}; its columns are "
                f"{', '.join(map(repr, features))}: pass one of them as {flag}"
            )
    text_dtype = getattr(features[text_column], "dtype", None)
    if text_dtype not in _TEXT_DTYPES:
        raise CorpusError(
            f"column {text_column!r} of dataset {where} is {features[text_column]}, expected a string; "
            f"pass the column holding the text as {text_flag}"
        )
    if id_column is not None and getattr(features[id_column], "dtype", None) not in _TEXT_DTYPES | _INT_DTYPES:
        raise CorpusError(
            f"id column {id_column!r} of dataset {where} is {features[id_column]}, expected a string or integer"
        )


def _read_rows(
    dataset: Any, start: int, stop: int, text_column: str, id_column: str | None, fallback_encoding: str
) -> ReadResult:
    """Read positions ``[start, stop)`` of a Dataset, only its text (and id) columns."""
    result = ReadResult()
    if start == stop:
        return result
    columns = [text_column] if id_column is None else [text_column, id_column]
    rows = dataset.select_columns(columns).select(range(start, stop))[:]
    ids = rows[id_column] if id_column is not None else range(start, stop)
    for position, text, doc_id in zip(range(start, stop), rows[text_column], ids):
        if text is None:
            result.problems.append((position, f"column {text_column!r} is null"))
            continue
        if isinstance(text, bytes):
            text, fell_back = decode_with_fallback(text, fallback_encoding)
            result.decode_fallbacks += fell_back
        if doc_id is None:
            result.problems.append((position, f"id column {id_column!r} is null"))
            continue
        result.documents.append(Document(doc_id=doc_id, text=text, position=position))
    return result


@dataclass(frozen=True, eq=False)
class SavedDatasetSource(CorpusSource):
    """A dataset saved with ``Dataset.save_to_disk`` (or a split of a saved ``DatasetDict``)."""

    path: str
    """Absolute path of the saved directory."""
    split: str
    """Split to read when the directory holds a DatasetDict (ignored for a single Dataset)."""
    text_column: str
    """Column holding the text."""
    id_column: str | None
    """Column holding the document id; None means the position."""
    fallback_encoding: str
    """Encoding for binary cells that are not valid UTF-8."""
    count: int
    """Number of rows."""
    fingerprint: str
    """``directory_fingerprint`` at opening time; reads refuse a rewritten dataset."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        text_column: str = "text",
        id_column: str | None = None,
        split: str = "train",
        fallback_encoding: str = "cp1252",
        text_flag: str = "--text-column",
    ) -> SavedDatasetSource:
        """Memory-map the dataset, check its columns, and note its size."""
        fallback_encoding = check_encoding(fallback_encoding)
        path = os.path.abspath(os.fspath(path))
        fingerprint = directory_fingerprint(path)
        dataset = _load_saved(path, split, fingerprint)
        _check_features(dataset, repr(path), text_column, id_column, text_flag)
        return cls(path, split, text_column, id_column, fallback_encoding, dataset.num_rows, fingerprint)

    def __len__(self) -> int:
        return self.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        if start < stop and directory_fingerprint(self.path) != self.fingerprint:
            raise CorpusError(
                f"saved dataset {self.path!r} changed since it was opened; open the corpus again and start a new run"
            )
        dataset = _load_saved(self.path, self.split, self.fingerprint)
        return _read_rows(dataset, start, stop, self.text_column, self.id_column, self.fallback_encoding)

    def describe(self) -> dict:
        return {
            "kind": "hf_saved",
            "path": self.path,
            "split": self.split,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "fingerprint": self.fingerprint,
            "count": self.count,
            "fallback_encoding": self.fallback_encoding,
        }


@dataclass(frozen=True, eq=False)
class HubDatasetSource(CorpusSource):
    """A dataset from the Hugging Face Hub, ``datasets.load_dataset(name, split=split)``.

    Each worker process loads it again (from its local Hub cache when present), so every node
    needs network access or a warm cache; prefer a saved directory on shared storage.
    """

    name: str
    """Hub dataset name, e.g. ``"cornell-movie-review-data/rotten_tomatoes"``."""
    split: str
    """Split to read."""
    text_column: str
    """Column holding the text."""
    id_column: str | None
    """Column holding the document id; None means the position."""
    fallback_encoding: str
    """Encoding for binary cells that are not valid UTF-8."""
    count: int
    """Number of rows."""
    fingerprint: str
    """SHA-256 over the names and sizes of the dataset's cache files (they name the revision)."""

    @classmethod
    def open(
        cls,
        name: str,
        text_column: str = "text",
        id_column: str | None = None,
        split: str = "train",
        fallback_encoding: str = "cp1252",
        text_flag: str = "--text-column",
    ) -> HubDatasetSource:
        """Load the dataset (a clear ``CorpusError`` when the Hub is unreachable) and check columns."""
        fallback_encoding = check_encoding(fallback_encoding)
        dataset = _load_hub(name, split)
        _check_features(dataset, f"{name!r} (split {split!r})", text_column, id_column, text_flag)
        files = sorted(
            (os.path.basename(entry["filename"]), os.path.getsize(entry["filename"]))
            for entry in dataset.cache_files
            if os.path.exists(entry["filename"])
        )
        fingerprint = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        return cls(name, split, text_column, id_column, fallback_encoding, dataset.num_rows, fingerprint)

    def __len__(self) -> int:
        return self.count

    def read_range(self, start: int, stop: int) -> ReadResult:
        start, stop = clamp_range(start, stop, len(self))
        dataset = _load_hub(self.name, self.split)
        if dataset.num_rows != self.count:
            raise CorpusError(
                f"Hub dataset {self.name!r} (split {self.split!r}) now has {dataset.num_rows} rows, "
                f"not {self.count}; open the corpus again and start a new run"
            )
        return _read_rows(dataset, start, stop, self.text_column, self.id_column, self.fallback_encoding)

    def describe(self) -> dict:
        return {
            "kind": "hf_hub",
            "path": f"hf:{self.name}",
            "split": self.split,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "fingerprint": self.fingerprint,
            "count": self.count,
            "fallback_encoding": self.fallback_encoding,
        }
