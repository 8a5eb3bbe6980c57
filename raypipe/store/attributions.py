"""The attribution store: one row per (document, target), same shard/manifest design as activations.

Layout: ``STORE/manifest.json`` (format ``raypipe.attributions/1``, the job config, the shards)
and ``STORE/shards/shard-NNNNNN.parquet``. Columns:

- ``doc_id``; ``target`` (class index; 0 for a generation row); ``target_label`` (class label or
  the explained continuation's text);
- ``units`` ``list<string>``, ``char_start`` / ``char_end`` ``list<int64>``: the explained units;
- ``scores`` ``list<float>``: one score per unit, or for generation the flattened
  (target tokens × units) matrix, with ``shape`` ``list<int32>`` = ``[T, g]`` (``[g]`` otherwise);
- ``target_tokens`` ``list<string>`` (generation), ``first_order`` ``list<float>`` (sobol: the
  first-order indices; ``scores`` holds the total order), ``method``, ``original_score``;
- ``parameters``: JSON of what defines the scores besides model and text (granularity, mode,
  seed, baseline, n_samples, reduction, ...), the same on every row of a store.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.store.layout import MANIFEST_NAME, resolve_store, same_doc_id_type
from raypipe.store.manifest import read_manifest
from raypipe.store.shard_writer import ShardRecord

ATTRIBUTION_FORMAT = "raypipe.attributions/1"
ATTRIBUTION_KEYS = ("doc_id", "target")


def attribution_schema(doc_id_type: pa.DataType = pa.int64()) -> pa.Schema:
    return pa.schema([
        ("doc_id", doc_id_type), ("target", pa.int64()), ("target_label", pa.string()),
        ("units", pa.list_(pa.string())), ("char_start", pa.list_(pa.int64())),
        ("char_end", pa.list_(pa.int64())), ("scores", pa.list_(pa.float32())),
        ("shape", pa.list_(pa.int32())), ("target_tokens", pa.list_(pa.string())),
        ("first_order", pa.list_(pa.float32())), ("method", pa.string()),
        ("original_score", pa.float32()), ("parameters", pa.string()),
    ], metadata={"raypipe.format": ATTRIBUTION_FORMAT})


def build_attribution_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with the schema's keys; missing optional ones are null) → a shard table."""
    strings = any(isinstance(r["doc_id"], str) for r in rows)  # then all ids as strings
    schema = attribution_schema(pa.string() if strings else pa.int64())
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    if strings:
        columns["doc_id"] = [str(d) for d in columns["doc_id"]]
    return pa.table(columns, schema=schema)


class AttributionStore:
    """Read an attribution store: ``AttributionStore(DIR).table()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fs, self._base = resolve_store(path)
        manifest = read_manifest(self._fs, self._base, ATTRIBUTION_FORMAT)
        if manifest is None:
            raise FileNotFoundError(f"no attribution store at {self.path!r}: expected "
                                    f"{self.path}/{MANIFEST_NAME}, as written by `raypipe attribute`")
        self.manifest = manifest
        self.shards = sorted((ShardRecord.from_dict(s) for s in manifest.get("shards", [])),
                             key=lambda r: r.shard_id)

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    def table(self) -> pa.Table:
        """Every row of the listed shards, sorted by (doc_id, target)."""
        if not self.shards:
            return attribution_schema().empty_table()
        tables = []
        for rec in self.shards:
            with self._fs.open_input_file(f"{self._base}/{rec.name}") as f:
                tables.append(pq.read_table(f))
        table = pa.concat_tables(same_doc_id_type(tables), promote_options="default")
        order = pc.sort_indices(table, sort_keys=[("doc_id", "ascending"), ("target", "ascending")])
        return table.take(order)
