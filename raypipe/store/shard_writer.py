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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.store.layout import (METADATA_COLUMNS, METADATA_COMPRESSION,
                                  METADATA_COMPRESSION_LEVEL, ROW_GROUP_BYTES, SHARDS_DIR,
                                  resolve_store, shard_name)

_CHUNK_BYTES = 8 * 2**20


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


def serialize_shard(table: pa.Table) -> pa.Buffer:
    """Shard table → Parquet file bytes, built in memory so the checksum needs no re-read."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **parquet_options(table))
    return sink.getvalue()


def _write_chunks(stream: pa.NativeFile, data: pa.Buffer) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK_BYTES):
        stream.write(view[start:start + _CHUNK_BYTES])


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


def write_bytes_atomically(fs: pafs.FileSystem, path: str, data: pa.Buffer | bytes) -> None:
    """Write ``data`` to a hidden temporary sibling of ``path``, then move it onto ``path``.

    On a local disk the move is a POSIX rename, so readers see the old file or the whole new
    one; on object stores a move is copy+delete, but nothing is listed until the manifest says so.
    """
    folder, base = path.rsplit("/", 1)
    tmp = f"{folder}/.{base}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp, compression=None) as stream:
            _write_chunks(stream, pa.py_buffer(data) if isinstance(data, bytes) else data)
        fs.move(tmp, path)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise


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
    data = serialize_shard(table)
    # hashlib and pyarrow release the GIL on large buffers: hash while the bytes are written
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = pool.submit(lambda: hashlib.sha256(memoryview(data)).hexdigest())
        write_bytes_atomically(fs, f"{base}/{name}", data)
        checksum = "sha256:" + digest.result()
    return ShardRecord(shard_id=int(shard_id), name=name, rows=table.num_rows,
                       doc_start=int(doc_start), doc_end=int(doc_end), checksum=checksum,
                       bytes=data.size,
                       stats=json.loads(json.dumps(stats or {}, default=jsonable)))
