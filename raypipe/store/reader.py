"""Read an activation store: whole arrays, streamed batches, Ray and HF datasets, verification.

Only shards listed in the manifest are read; stray ``.tmp`` files and unlisted shard files are
ignored. Shards are read in ``shard_id`` order, which is corpus order (see layout.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.store.layout import (MANIFEST_NAME, METADATA_COLUMNS, SHARDS_DIR,
                                  activation_columns, decode_activations,
                                  cast_doc_ids, decode_activations_into, resolve_store,
                                  same_doc_id_type)
from raypipe.store.manifest import read_manifest
from raypipe.store.shard_writer import ShardRecord, file_checksum

if TYPE_CHECKING:
    import datasets
    import ray.data
    import torch


def _with_documents(table: pa.Table) -> pa.Table:
    """``(doc_id, unit)`` rows in store order plus ``document``: a counter that steps where a
    new document starts (the id changes, or the unit index restarts)."""
    doc_ids, units = table.column("doc_id").combine_chunks(), table.column("unit").to_numpy()
    starts = np.ones(len(table), dtype=bool)
    if len(table) > 1:
        changed = pc.not_equal(doc_ids[1:], doc_ids[:-1]).to_numpy(zero_copy_only=False)
        starts[1:] = changed | (units[1:] <= units[:-1])
    return pa.table({"doc_id": doc_ids, "document": np.cumsum(starts), "unit": units})


class ActivationStore:
    """A finished (or partly finished) store written by ``StoreWriter`` and ``write_shard``.

    >>> store = ActivationStore("out/minilm")
    >>> x = store.to_numpy("encoder.layer.5")        # (rows, d) float32
    >>> for batch in store.iter_batches(batch_size=4096, shuffle_buffer=65536):
    ...     batch["activations"]                      # (b, d) float32, plus doc_id, unit
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fs, self._base = resolve_store(path)
        manifest = read_manifest(self._fs, self._base)
        if manifest is None:
            raise FileNotFoundError(
                f"no activation store at {self.path!r}: expected {self.path}/{MANIFEST_NAME} and "
                f"{self.path}/{SHARDS_DIR}/shard-*.parquet, as written by an extraction run. "
                "Pass the --out directory of that run.")
        self.manifest: dict = manifest
        self.shards: list[ShardRecord] = sorted(
            (ShardRecord.from_dict(s) for s in manifest.get("shards", [])),
            key=lambda r: r.shard_id)
        self.split_points: list[str] = list(self._columns)

    @cached_property
    def _columns(self) -> dict[str, tuple[str, int]]:
        """``{split path: (store dtype, d)}`` in manifest order.

        The first shard's field metadata is the source of truth; the manifest's ``split_points``
        (when they name the same columns) only fixes the order. A store without shards falls
        back to the manifest's ``dtype`` and ``hidden_sizes``.
        """
        listed = self.manifest.get("split_points")
        listed = listed if isinstance(listed, list) and all(isinstance(p, str) for p in listed) \
            else None
        if self.shards:
            cols = activation_columns(pq.read_schema(self._file(self.shards[0]),
                                                     filesystem=self._fs))
            if listed is not None and sorted(listed) == sorted(cols):
                return {p: cols[p] for p in listed}
            return cols
        sizes = self.manifest.get("hidden_sizes") or {}
        return {p: (self.manifest.get("store_dtype") or self.manifest.get("dtype", "float32"), int(sizes.get(p, 0)))
                for p in (listed or [])}

    def __len__(self) -> int:
        return sum(r.rows for r in self.shards)

    def __repr__(self) -> str:
        return (f"ActivationStore({self.path!r}, rows={len(self)}, shards={len(self.shards)}, "
                f"split_points={self.split_points}, status={self.manifest.get('status')!r})")

    def _file(self, rec: ShardRecord) -> str:
        return f"{self._base}/{rec.name}"

    def _split(self, split: str | int | None) -> str:
        """Path, index into ``split_points``, or None (only with one split point) → path."""
        valid = self.split_points
        if split is None:
            if len(valid) == 1:
                return valid[0]
            raise KeyError(f"store {self.path!r} has {len(valid)} split points {valid}; pass "
                           "split= one of them (a path or an index)")
        if isinstance(split, (int, np.integer)) and not isinstance(split, bool):
            if -len(valid) <= split < len(valid):
                return valid[split]
        elif split in valid:
            return split
        raise KeyError(f"unknown split point {split!r} in store {self.path!r}; valid: {valid} "
                       f"(or an index 0..{len(valid) - 1})")

    def dim(self, split: str | int | None = None) -> int:
        """Hidden size ``d`` of a split point's vectors."""
        return self._columns[self._split(split)][1]

    def _read(self, rec: ShardRecord, columns: list[str]) -> pa.Table:
        return pq.read_table(self._file(rec), columns=columns, filesystem=self._fs)

    def _check_columns(self, columns: tuple[str, ...]) -> None:
        bad = [c for c in columns if c not in METADATA_COLUMNS]
        if bad:
            raise KeyError(f"unknown metadata columns {bad}; valid: {list(METADATA_COLUMNS)}")

    def units(self) -> pa.Table:
        """``doc_id, unit, text, char_start, char_end`` of every row, sorted by (doc_id, unit).

        With positional ids (the default) that is store order. With ``--id-column`` the rows
        are reordered by id (``to_numpy`` follows the same order); shards whose ids were
        integers and shards whose ids were strings (a JSONL column mixing both, or a shard of
        empty documents) are read as strings together.
        """
        table = self.store_order_units()
        return table if self._order is None else table.take(pa.array(self._order))

    def store_order_units(self, columns: tuple[str, ...] = METADATA_COLUMNS) -> pa.Table:
        """The rows of `units` in store order (shard by shard): what row indices of
        `iter_batches` and the per-shard jobs (top activations) refer to."""
        self._check_columns(columns)
        tables = [self._read(r, list(columns)) for r in self.shards]
        if not tables:
            empty = {"doc_id": pa.int64(), "unit": pa.int32(), "text": pa.string(),
                     "char_start": pa.int64(), "char_end": pa.int64()}
            return pa.table({c: pa.array([], empty[c]) for c in columns})
        return pa.concat_tables(same_doc_id_type(tables))

    @cached_property
    def _order(self) -> np.ndarray | None:
        """Permutation of store order into (doc_id, unit) order; None when they agree."""
        table = self.store_order_units(("doc_id", "unit"))
        if pa.types.is_integer(table.schema.field("doc_id").type):  # positional ids: O(n) check
            doc, unit = (np.diff(table.column(c).to_numpy()) for c in ("doc_id", "unit"))
            if np.all((doc > 0) | ((doc == 0) & (unit > 0))):
                return None
        # Two documents given the same id by an id column stay apart, in corpus order.
        keyed = _with_documents(table)
        order = pc.sort_indices(keyed, sort_keys=[("doc_id", "ascending"), ("document", "ascending"),
                                                  ("unit", "ascending")]).to_numpy()
        return None if np.array_equal(order, np.arange(len(order))) else order

    def duplicate_doc_ids(self, limit: int = 10) -> tuple[int, list]:
        """How many ids name more than one document (an id column with repeats), and up to
        ``limit`` of them. Their rows stay grouped by document in ``units()``, but a reader
        keyed by ``doc_id`` alone would merge them."""
        keyed = _with_documents(self.store_order_units(("doc_id", "unit")))
        counts = pa.table({"doc_id": keyed.column("doc_id"), "document": keyed.column("document")}
                          ).group_by("doc_id").aggregate([("document", "count_distinct")])
        repeated = counts.filter(pc.greater(counts.column("document_count_distinct"), 1))
        return repeated.num_rows, repeated.column("doc_id").to_pylist()[:limit]

    def to_numpy(self, split: str | int | None = None) -> np.ndarray:
        """All rows of one split point → float32 ``(rows, d)``, in ``units()`` order."""
        path = self._split(split)
        dtype, dim = self._columns[path]
        out = np.empty((len(self), dim), dtype=np.float32)
        row = 0
        for rec in self.shards:
            col = self._read(rec, [path]).column(path)
            if row + len(col) > len(out):
                raise ValueError(f"shard {rec.name} has more rows than the manifest's {rec.rows}; "
                                 "run verify() to list damaged shards")
            decode_activations_into(col, dtype, dim, out[row:row + len(col)])
            row += len(col)
        if row != len(out):
            raise ValueError(f"store {self.path!r} shards hold {row} rows, the manifest lists "
                             f"{len(out)}; run verify() to list damaged shards")
        return out if self._order is None else out[self._order]

    def to_torch(self, split: str | int | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        """``to_numpy`` as a CPU tensor of ``dtype`` (default float32) ``(rows, d)``."""
        import torch

        return torch.from_numpy(self.to_numpy(split)).to(dtype or torch.float32)

    def iter_batches(self, split: str | int | None = None, batch_size: int = 1024, *,
                     shuffle_buffer: int | None = None, seed: int = 0,
                     columns: tuple[str, ...] = ("doc_id", "unit"),
                     drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Stream ``{"activations": (b, d) float32, <column>: (b,)}`` batches, shard by shard.

        Memory holds one decoded shard plus the carried-over rows. Without ``shuffle_buffer``
        rows come in store order. With it, shards are visited in a seeded random order and
        rows pass through a buffer of about ``shuffle_buffer`` rows: each time a shard arrives,
        its rows join the buffer and everything beyond ``shuffle_buffer`` rows is emitted as a
        uniformly random subset of the pooled rows, in random order. The same ``seed`` gives
        the same batches; every row comes exactly once per pass (the last batch may be short
        unless ``drop_last``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle_buffer is not None and shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 or None, got {shuffle_buffer}")
        columns = tuple(columns)
        self._check_columns(columns)
        path = self._split(split)  # checked here, not at the first next()
        return self._batches(path, batch_size, shuffle_buffer, seed, columns, drop_last)

    def _batches(self, path: str, batch_size: int, shuffle_buffer: int | None, seed: int,
                 columns: tuple[str, ...], drop_last: bool) -> Iterator[dict[str, np.ndarray]]:
        dtype, dim = self._columns[path]
        rng = np.random.default_rng(seed)
        order = list(self.shards)
        if shuffle_buffer is not None:
            order = [order[i] for i in rng.permutation(len(order))]

        def shards() -> Iterator[dict[str, np.ndarray]]:
            for rec in order:
                table = self._read(rec, [*columns, path])
                shard = {c: table.column(c).to_numpy() for c in columns}
                shard["activations"] = decode_activations(table.column(path), dtype, dim)
                yield shard

        if shuffle_buffer is None:
            pool: dict[str, np.ndarray] | None = None
            for shard in shards():
                pool = shard if pool is None else {k: np.concatenate([pool[k], shard[k]])
                                                   for k in shard}
                n_out = _rows(pool) // batch_size * batch_size
                for start in range(0, n_out, batch_size):
                    yield {k: v[start:start + batch_size] for k, v in pool.items()}
                pool = {k: v[n_out:] for k, v in pool.items()}
            rest = pool
        else:
            buffer = _ShuffleBuffer(shuffle_buffer, rng)
            for shard in shards():
                out = buffer.add(shard, batch_size)
                for start in range(0, _rows(out), batch_size):
                    yield {k: v[start:start + batch_size] for k, v in out.items()}
            rest = buffer.drain()
        if rest is None or _rows(rest) == 0:
            return
        n = _rows(rest)
        stop = n // batch_size * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield {k: v[start:start + batch_size] for k, v in rest.items()}

    def to_ray_dataset(self) -> "ray.data.Dataset":
        """``ray.data.read_parquet`` over the listed shard files.

        Activation columns stay raw bytes (fixed-size binary); decode them inside
        ``map_batches`` with ``decode_activations(col, dtype, dim)``. Needs a Ray runtime.
        Where shards hold integer ids and others string ids (see `units`), ``doc_id`` is read
        as strings in every block.
        """
        import ray.data

        if not self.shards:
            raise ValueError(f"store {self.path!r} lists no shards yet; nothing to read")
        files = [self._file(r) for r in self.shards]
        by_type: dict[pa.DataType, list[str]] = {}
        for rec, file in zip(self.shards, files):
            if rec.rows:
                typ = pq.read_schema(file, filesystem=self._fs).field("doc_id").type
                by_type.setdefault(typ, []).append(file)
        if len(by_type) < 2:  # one id type (empty shards left out: no rows to type)
            return ray.data.read_parquet(sum(by_type.values(), []) or files, filesystem=self._fs)
        # Ray Data refuses to merge int64 and string schemas: read each group, ids as strings
        parts = [ray.data.read_parquet(group, filesystem=self._fs).map_batches(
                     cast_doc_ids, batch_format="pyarrow", fn_kwargs={"typ": pa.string()})
                 for group in by_type.values()]
        return parts[0].union(*parts[1:])

    def to_hf_dataset(self, split: str | int | None = None) -> "datasets.Dataset":
        """Metadata columns plus ``"activations"`` as fixed-length float32 lists (in memory)."""
        import datasets
        from datasets.table import InMemoryTable

        x = self.to_numpy(split)
        acts = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
        table = self.units().append_column("activations", acts)
        return datasets.Dataset(InMemoryTable(table))

    def verify(self) -> list[str]:
        """Re-check every listed shard's size, checksum, row count and columns.

        Returns one message per problem; an empty list means the store is intact.
        """
        problems = []
        total = 0
        for rec in self.shards:
            total += rec.rows
            problems.extend(self._verify_shard(rec))
        if self.manifest.get("rows") not in (None, total):
            problems.append(f"manifest rows={self.manifest['rows']} but its shards sum to {total}")
        return problems

    def _verify_shard(self, rec: ShardRecord) -> list[str]:
        path = self._file(rec)
        info = self._fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            return [f"{rec.name}: listed in the manifest but missing"]
        if info.size != rec.bytes:
            return [f"{rec.name}: {info.size} bytes on disk, manifest says {rec.bytes}"]
        checksum = file_checksum(self._fs, path)
        if checksum != rec.checksum:
            return [f"{rec.name}: checksum {checksum} != manifest {rec.checksum}"]
        try:
            meta = pq.read_metadata(path, filesystem=self._fs)
            schema = pq.read_schema(path, filesystem=self._fs)
        except (OSError, pa.ArrowException) as exc:
            return [f"{rec.name}: not a readable Parquet file ({exc})"]
        problems = []
        if meta.num_rows != rec.rows:
            problems.append(f"{rec.name}: {meta.num_rows} rows, manifest says {rec.rows}")
        missing = [c for c in (*METADATA_COLUMNS, *self.split_points) if c not in schema.names]
        if missing:
            problems.append(f"{rec.name}: lacks columns {missing}")
        return problems


def _rows(pool: dict[str, np.ndarray]) -> int:
    return len(pool["activations"])


class _ShuffleBuffer:
    """Rows held in preallocated arrays; each emitted row is a uniform draw from the held rows.

    Why not permute the whole buffer per shard: at the default 65,536-row buffer and 10,000-row
    shards that copies every held row twice per shard (~15 row copies per emitted row). Here a
    row is copied about three times in all: into the buffer, out of it, and at most once to
    fill the hole an emitted row left (only the index permutation is O(buffer)).
    """

    def __init__(self, keep: int, rng: np.random.Generator) -> None:
        self.keep = keep
        self.rng = rng
        self.rows = 0
        self.data: dict[str, np.ndarray] | None = None

    def add(self, shard: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """Take a shard's rows; return the whole batches now due, a random subset in random order."""
        s = _rows(shard)
        self._reserve(shard, self.rows + s)
        for k, v in shard.items():
            self.data[k][self.rows:self.rows + s] = v
        self.rows += s
        n_out = max(0, self.rows - self.keep) // batch_size * batch_size
        return self._emit(self.rng.permutation(self.rows)[:n_out])

    def drain(self) -> dict[str, np.ndarray] | None:
        """Every row still held, in random order."""
        if self.data is None:
            return None
        return self._emit(self.rng.permutation(self.rows))

    def _emit(self, picked: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: v[picked] for k, v in self.data.items()}
        remaining = self.rows - len(picked)
        # Rows kept in the tail [remaining, rows) move into the holes picked rows left below it.
        is_picked = np.zeros(self.rows, dtype=bool)
        is_picked[picked] = True
        holes = np.flatnonzero(is_picked[:remaining])
        movers = remaining + np.flatnonzero(~is_picked[remaining:])
        for v in self.data.values():
            v[holes] = v[movers]
        self.rows = remaining
        return out

    def _reserve(self, shard: dict[str, np.ndarray], rows: int) -> None:
        if self.data is not None and len(next(iter(self.data.values()))) >= rows:
            return
        capacity = max(rows, self.keep + _rows(shard))
        grown = {k: np.empty((capacity, *v.shape[1:]), dtype=v.dtype) for k, v in shard.items()}
        if self.data is not None:
            for k, v in self.data.items():
                grown[k][:self.rows] = v[:self.rows]
        self.data = grown
