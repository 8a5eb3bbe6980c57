"""Write one shard file atomically, under a name derived from its id.

Why this shape: retried write tasks duplicate output when file names are random, and a crashed
worker can leave a partial file that readers take as data. So a shard is first written to
``shards/.shard-NNNNNN.parquet.tmp-<random>`` and moved to ``shards/shard-NNNNNN.parquet`` only
once complete; a retry after a crash overwrites the same final name. The shard is not part of
the store until the driver lists its ``ShardRecord`` in the manifest (``StoreWriter.record``).

``write_shard`` is a pure function of its arguments (no driver state), so a Ray actor on any
node can call it and send the small record back.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.store.layout import (METADATA_COLUMNS, METADATA_COMPRESSION,
                                  METADATA_COMPRESSION_LEVEL, ROW_GROUP_BYTES, SHARDS_DIR,
                                  resolve_store, shard_name)

@dataclass
class ShardRecord:
    """One finished shard, as listed in the manifest (JSON via ``dataclasses.asdict``)."""

    shard_id: int
    name: str  # relative to the store root, e.g. "shards/shard-000012.parquet"
    rows: int
    doc_start: int  # the corpus positions [doc_start, doc_end) this shard covers
    doc_end: int
    checksum: str  # "sha256:<hex>" of the file bytes
    bytes: int
    stats: dict = field(default_factory=dict)  # producer counters: docs, tokens, truncated, ...

    @classmethod
    def from_dict(cls, data: dict) -> "ShardRecord":
        """Manifest entry → record; unknown or missing keys are a ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - {"stats"}
        if unknown or missing:
            raise ValueError(f"manifest shard entry {data!r} has unknown keys {sorted(unknown)} "
                             f"and lacks keys {sorted(missing)}; it was not written by raypipe")
        return cls(**data)


def jsonable(value):
    """``json.dumps`` default: numpy scalars/arrays → Python values, anything else → ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def parquet_options(table: pa.Table) -> dict:
    """``pq.write_table`` keyword arguments for a shard table (choices explained in layout.py)."""
    meta = [c for c in table.column_names if c in METADATA_COLUMNS]
    compression = {c: (METADATA_COMPRESSION if c in METADATA_COLUMNS else "none")
                   for c in table.column_names}
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    return dict(compression=compression,
                compression_level={c: METADATA_COMPRESSION_LEVEL for c in meta},
                use_dictionary=False, write_statistics=meta,
                row_group_size=max(1, ROW_GROUP_BYTES // row_bytes))


class _HashingSink:
    """A write-only file object for ``pq.write_table``: passes every byte on to a pyarrow output
    stream and hashes (sha256) and counts it on the way, so a shard goes to its file in one pass
    and its checksum needs no re-read (on object stores, no download).

    Measured on a 112 MB MiniLM token shard (2 cores): 0.11-0.13 s, against 0.32-0.53 s for
    serializing into an in-memory buffer, then copying it to the file while a thread hashed it
    (the buffer's growth and the second copy cost more than the write itself).
    """

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data) -> int:  # bytes or a pa.Buffer, from pyarrow
        self._stream.write(data)
        self._digest.update(data)
        size = memoryview(data).nbytes
        self.bytes += size
        return size

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        pass

    def close(self) -> None:  # the stream is closed by its owner (see write_table_atomically)
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def checksum(self) -> str:
        return f"sha256:{self._digest.hexdigest()}"


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass  # best effort: a leftover .tmp file is ignored by every reader


_HASH_CHUNK = 8 * 2**20


def file_checksum(fs, path: str) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in chunks: the form ``ShardRecord.checksum``
    holds, so a resume or ``verify()`` can tell a damaged shard from an intact one."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


@contextmanager
def _atomic_output(fs: pafs.FileSystem, path: str) -> Iterator[pa.NativeFile]:
    """An output stream to a hidden temporary sibling of ``path``, moved onto ``path`` when the
    block ends without an error, and removed when it raises.

    On a local disk the move is a POSIX rename, so readers see the old file or the whole new
    one; on object stores a move is copy+delete, but nothing is listed until the manifest says so.
    """
    folder, base = path.rsplit("/", 1)
    tmp = f"{folder}/.{base}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp, compression=None) as stream:
            yield stream
        fs.move(tmp, path)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise


def write_bytes_atomically(fs: pafs.FileSystem, path: str, data: pa.Buffer | bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `_atomic_output`)."""
    with _atomic_output(fs, path) as stream:
        stream.write(data)


def write_table_atomically(fs: pafs.FileSystem, path: str, table: pa.Table) -> tuple[str, int]:
    """Write ``table`` as Parquet (``parquet_options``) to ``path`` atomically (see
    `_atomic_output`); returns the file's ``("sha256:<hex>", size in bytes)``, hashed while it
    was written."""
    with _atomic_output(fs, path) as stream:
        sink = _HashingSink(stream)
        pq.write_table(table, pa.PythonFile(sink, mode="w"), **parquet_options(table))
    return sink.checksum, sink.bytes


def write_shard(root: str | os.PathLike, shard_id: int, table: pa.Table, *, doc_start: int,
                doc_end: int, stats: dict | None = None,
                required: tuple[str, ...] = METADATA_COLUMNS) -> ShardRecord:
    """Write ``table`` (from ``build_shard_table``) as shard ``shard_id`` of the store at ``root``.

    Returns the record the driver passes to ``StoreWriter.record``. Calling it again for the same
    id (a retry) replaces the file; it never creates a second shard.
    """
    name = shard_name(shard_id)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"shard {shard_id} table lacks columns {missing}; build it with "
                         "raypipe.store.build_shard_table")
    if not 0 <= doc_start <= doc_end:
        raise ValueError(f"shard {shard_id}: need 0 <= doc_start <= doc_end, got "
                         f"[{doc_start}, {doc_end})")
    fs, base = resolve_store(root)
    fs.create_dir(f"{base}/{SHARDS_DIR}", recursive=True)
    checksum, size = write_table_atomically(fs, f"{base}/{name}", table)
    return ShardRecord(shard_id=int(shard_id), name=name, rows=table.num_rows,
                       doc_start=int(doc_start), doc_end=int(doc_end), checksum=checksum,
                       bytes=size,
                       stats=json.loads(json.dumps(stats or {}, default=jsonable)))
