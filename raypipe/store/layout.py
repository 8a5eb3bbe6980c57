"""The on-disk format of an activation store, and the conversion of vectors to and from it.

A store is a directory: a local path, or any URI that ``pyarrow.fs.FileSystem.from_uri``
understands (``s3://bucket/run``, ``gs://...``, ``file:///...``). All I/O goes through
``pyarrow.fs``, so the same code writes to a laptop disk and to object storage::

    STORE/manifest.json                   # the only thing a reader trusts (see manifest.py)
    STORE/shards/shard-000000.parquet     # name derived from the shard id, never random
    STORE/shards/shard-000001.parquet
    STORE/shards/.shard-000002.parquet.tmp-1f3a9c0e   # a write in progress (or crashed): ignored

A shard covers a contiguous range of corpus documents ``[doc_start, doc_end)``. It has one row
per unit (token, word, sentence, sample, ...) and these columns, in this order:

========================  ==========================  =====================================
column                    Arrow type                  meaning
========================  ==========================  =====================================
``doc_id``                int64 (string if the        the document's id in the corpus
                          corpus gave string ids)
``unit``                  int32                       index of the unit within its document
``text``                  string                      the unit's text
``char_start``            int64                       character span of the unit in the
``char_end``              int64                       document, ``[char_start, char_end)``
``<split point path>``    fixed_size_binary(d*size)   one column per split point, named by
                                                      its resolved module path, e.g.
                                                      ``encoder.layer.5``
========================  ==========================  =====================================

Rows are sorted by ``(doc_id, unit)`` within a shard, and shards are contiguous document
ranges, so reading shards in id order gives the corpus order.

**Activation columns.** Each value is the raw little-endian bytes of the row's ``(d,)`` vector
in the store dtype: ``float32`` (4 bytes), ``float16`` (2 bytes) or ``bfloat16`` (2 bytes: the
upper 16 bits of the float32, rounded to nearest even, as ``torch.Tensor.to(torch.bfloat16)``
does). The Arrow field carries metadata ``{"raypipe.dtype": "float16", "raypipe.dim": "384"}``.
Why not ``list<float16>``: measured on 2 cores, Parquet wrote one ``list<float16>`` per row at
~0.08 GB/s and one fixed-size binary value at ~0.6 GB/s; reading the latter runs at ~3 GB/s.

**Compression.** Activation columns are stored uncompressed; the small metadata columns
(ids, spans, text) use zstd level 1. Measured with pyarrow 26 on 2 cores, 16384 x 1024 random
float16 values: zstd-1 made the file 8 % smaller (22 % for bfloat16, whose low mantissa bits
are gone) but wrote at 0.6 GB/s against 1.6-1.9 GB/s uncompressed and read at 1.3-1.6 GB/s
against 5-7 GB/s. Activations are near-random in their low bits, so the saving does not pay
for a 2.5x slower write and a 4x slower read on every training epoch. Dictionary encoding is
off (useless on such values) and statistics are kept for the metadata columns only. Row groups
hold about ``ROW_GROUP_BYTES`` (64 MiB) of data.

**Reading a shard with pyarrow and numpy alone** (``path``: a shard file, ``name``: a split
point column; for bfloat16 ``x`` holds the uint16 bits: widen them with
``(x.astype(np.uint32) << 16).view(np.float32)``)::

    import numpy as np, pyarrow.parquet as pq
    meta = pq.read_schema(path).field(name).metadata
    d, dt = int(meta[b"raypipe.dim"]), {b"float32": "<f4", b"float16": "<f2", b"bfloat16": "<u2"}[meta[b"raypipe.dtype"]]
    col = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    x = np.frombuffer(col.buffers()[1], dt, len(col) * d, col.offset * col.type.byte_width).reshape(-1, d)
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

if TYPE_CHECKING:
    import torch

FORMAT = "raypipe.activations/1"
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
METADATA_COLUMNS = ("doc_id", "unit", "text", "char_start", "char_end")
DTYPE_META_KEY = "raypipe.dtype"
DIM_META_KEY = "raypipe.dim"
ROW_GROUP_BYTES = 64 * 2**20
METADATA_COMPRESSION = "zstd"
METADATA_COMPRESSION_LEVEL = 1

# store dtype -> (bytes per value, numpy dtype the bytes are read as)
DTYPES: dict[str, tuple[int, str]] = {"float32": (4, "<f4"), "float16": (2, "<f2"),
                                      "bfloat16": (2, "<u2")}


def _is_tensor(x) -> bool:
    """``isinstance(x, torch.Tensor)`` without importing torch: a process that never imported
    it holds no tensors. The store modules load torch only to convert (its rounding is the
    reference), so a job's driver and ``raypipe inspect`` start without it (~1.3 s on 2 cores).
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def shard_name(shard_id: int) -> str:
    """``12`` → ``"shards/shard-000012.parquet"``: a retried shard overwrites, never duplicates."""
    if isinstance(shard_id, bool) or not isinstance(shard_id, (int, np.integer)) or shard_id < 0:
        raise ValueError(f"shard_id must be a non-negative int, got {shard_id!r}")
    return f"{SHARDS_DIR}/shard-{int(shard_id):06d}.parquet"


def resolve_store(root: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``root`` → ``(filesystem, base path inside it)``; plain paths are made absolute."""
    text = os.fspath(root)
    if "://" in text:
        fs, base = pafs.FileSystem.from_uri(text)
        return fs, base.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(text)


def check_dtype(dtype: str) -> tuple[int, str]:
    """Store dtype → ``(itemsize, numpy read dtype)``; an unknown name is a ValueError."""
    try:
        return DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"store dtype {dtype!r} is not supported: use one of "
                         f"{', '.join(DTYPES)}") from None


def _readonly_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor view of a (possibly read-only) array; only ever read from."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def _as_store_array(x: np.ndarray | torch.Tensor, dtype: str) -> np.ndarray:
    """``(n, d)`` any float → contiguous ``(n, d)`` of the store's read dtype (uint16 bits for
    bfloat16). Conversions go through torch: its rounding is the reference (bfloat16 is
    round-to-nearest-even, as ``Tensor.to(torch.bfloat16)``), and it converts 3-4x faster than
    numpy's ``astype`` on these machines. Always a copy: a caller reusing its buffer must not
    change a table already built."""
    import torch

    check_dtype(dtype)
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"activations must be a float tensor, got {x.dtype}")
        t = x.detach()
    else:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"activations must be a float array, got dtype {x.dtype}")
        t = _readonly_tensor(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    source_ptr = t.untyped_storage().data_ptr()
    t = t.to(getattr(torch, dtype)).cpu().contiguous()
    if t.untyped_storage().data_ptr() == source_ptr:
        t = t.clone()
    if dtype == "bfloat16":
        t = t.view(torch.int16)
    arr = t.numpy()
    return arr.view("<u2") if dtype == "bfloat16" else arr


def encode_activations(x: np.ndarray | torch.Tensor, dtype: str) -> pa.FixedSizeBinaryArray:
    """``(n, d)`` float array or tensor (any float dtype, any device) → ``n`` values of ``d``
    vectors' raw bytes in ``dtype``, as the store's activation column holds them."""
    if x.ndim != 2:
        raise ValueError(f"activations must be 2-D (n, d), got shape {tuple(x.shape)}; "
                         "flatten units into rows first")
    n, d = (int(s) for s in x.shape)
    if d == 0:
        raise ValueError("activations have d = 0 columns; a split point must have a hidden size")
    arr = _as_store_array(x, dtype)
    width = d * arr.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(arr)])


def decode_activations(col: pa.Array | pa.ChunkedArray, dtype: str, dim: int,
                       out_dtype=np.float32) -> np.ndarray:
    """A store activation column → ``(n, dim)`` array of ``out_dtype`` (a fresh, writable copy).

    Zero-parse: each chunk's data buffer is viewed with ``np.frombuffer`` (honouring the
    chunk's offset) and converted once into the output (by torch when ``out_dtype`` is a
    float type: 3-4x faster than numpy's float16 conversion).
    """
    out = np.empty((len(col), int(dim)), dtype=out_dtype)
    decode_activations_into(col, dtype, dim, out)
    return out


def decode_activations_into(col: pa.Array | pa.ChunkedArray, dtype: str, dim: int,
                            out: np.ndarray) -> None:
    """``decode_activations`` writing into ``out`` ``(len(col), dim)``: no second copy when a
    reader fills one big array shard by shard."""
    itemsize, read_dtype = check_dtype(dtype)
    dim = int(dim)
    width = dim * itemsize
    if not pa.types.is_fixed_size_binary(col.type) or col.type.byte_width != width:
        raise ValueError(f"column of type {col.type} does not hold {dim} x {dtype} vectors "
                         f"(expected fixed_size_binary[{width}]); check dtype and dim against "
                         f"the field metadata {DTYPE_META_KEY!r}/{DIM_META_KEY!r}")
    if col.null_count:
        raise ValueError(f"activation column has {col.null_count} null rows; a store never "
                         "writes nulls, so the file is not a raypipe shard")
    if out.shape != (len(col), dim):
        raise ValueError(f"out has shape {out.shape}, expected {(len(col), dim)}")
    use_torch = out.dtype in (np.float16, np.float32, np.float64)
    if use_torch:
        import torch
    row = 0
    for chunk in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
        n = len(chunk)
        if n == 0:
            continue
        raw = np.frombuffer(chunk.buffers()[1], dtype=read_dtype, count=n * dim,
                            offset=chunk.offset * width).reshape(n, dim)
        if use_torch:
            src = _readonly_tensor(raw)
            torch.from_numpy(out[row:row + n]).copy_(src.view(torch.bfloat16)
                                                     if dtype == "bfloat16" else src)
        elif dtype == "bfloat16":
            out[row:row + n] = (raw.astype("<u4") << 16).view("<f4")
        else:
            out[row:row + n] = raw
        row += n


def _to_arrow(values) -> pa.Array:
    if _is_tensor(values):
        values = values.cpu().numpy()
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(
        values if isinstance(values, np.ndarray) else list(values))


def _doc_id_array(doc_id) -> pa.Array:
    try:
        arr = _to_arrow(doc_id)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # ints and strings mixed (a JSONL id field)
        arr = pa.array([str(v) for v in doc_id], pa.string())
    if pa.types.is_integer(arr.type) or (pa.types.is_null(arr.type) and len(arr) == 0):
        return arr.cast(pa.int64())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    raise TypeError(f"doc_id must be integers or strings, got Arrow type {arr.type}")


def same_doc_id_type(tables: list[pa.Table]) -> list[pa.Table]:
    """Shard tables with one ``doc_id`` type, ready to concatenate: strings when some shards
    hold integer ids and others strings (a JSONL id field mixing both); an empty shard's
    column takes the others' type."""
    types = {t.schema.field("doc_id").type for t in tables if t.num_rows}
    target = pa.string() if len(types) > 1 else next(iter(types), pa.int64())
    return [cast_doc_ids(t, target) for t in tables]


def cast_doc_ids(table: pa.Table, typ: pa.DataType) -> pa.Table:
    """``table`` with its ``doc_id`` column cast to ``typ`` (its "not null" kept)."""
    at = table.schema.get_field_index("doc_id")
    if table.schema.field(at).type == typ:
        return table
    return table.set_column(at, table.schema.field(at).with_type(typ), table.column(at).cast(typ))


def _typed_array(values, typ: pa.DataType, name: str) -> pa.Array:
    arr = _to_arrow(values)
    try:
        return arr.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"{name} must be castable to {typ}, got Arrow type {arr.type}: "
                        f"{exc}") from None


def build_shard_table(doc_id: Sequence | np.ndarray, unit: Sequence | np.ndarray,
                      text: Sequence[str], char_start: Sequence | np.ndarray,
                      char_end: Sequence | np.ndarray,
                      activations: Mapping[str, np.ndarray | torch.Tensor],
                      dtype: str) -> pa.Table:
    """Columns of ``n`` units plus ``{split path: (n, d)}`` → the shard table (see module doc).

    Activation columns follow the mapping's order; each field records its dtype and ``d``.
    """
    check_dtype(dtype)
    columns = {
        "doc_id": _doc_id_array(doc_id),
        "unit": _typed_array(unit, pa.int32(), "unit"),
        "text": _typed_array(text, pa.string(), "text"),
        "char_start": _typed_array(char_start, pa.int64(), "char_start"),
        "char_end": _typed_array(char_end, pa.int64(), "char_end"),
    }
    n = len(columns["doc_id"])
    bad = {k: len(v) for k, v in columns.items() if len(v) != n}
    if bad:
        raise ValueError(f"metadata columns differ in length: doc_id has {n} rows, {bad}")
    fields = [pa.field(k, v.type, nullable=False) for k, v in columns.items()]
    arrays = list(columns.values())
    for path, x in activations.items():
        if not isinstance(path, str) or not path or path in METADATA_COLUMNS:
            raise ValueError(f"activation column name {path!r} must be a non-empty module path "
                             f"other than {METADATA_COLUMNS}")
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"activations[{path!r}] has shape {tuple(x.shape)}; expected "
                             f"({n}, d) for the {n} units")
        col = encode_activations(x, dtype)
        meta = {DTYPE_META_KEY: dtype, DIM_META_KEY: str(int(x.shape[1]))}
        fields.append(pa.field(path, col.type, nullable=False, metadata=meta))
        arrays.append(col)
    schema = pa.schema(fields, metadata={"raypipe.format": FORMAT})
    return pa.Table.from_arrays(arrays, schema=schema)


def activation_columns(schema: pa.Schema) -> dict[str, tuple[str, int]]:
    """Shard schema → ``{split path: (dtype, dim)}`` from the fields' metadata, in column order."""
    out = {}
    for f in schema:
        if f.name in METADATA_COLUMNS:
            continue
        meta = f.metadata or {}
        try:
            out[f.name] = (meta[DTYPE_META_KEY.encode()].decode(), int(meta[DIM_META_KEY.encode()]))
        except KeyError:
            raise ValueError(f"column {f.name!r} lacks {DTYPE_META_KEY!r}/{DIM_META_KEY!r} field "
                             "metadata; it was not written by build_shard_table") from None
    return out
