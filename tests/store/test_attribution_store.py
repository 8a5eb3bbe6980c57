"""AttributionStore.table(): every shard's rows, sorted by (doc_id, target), whatever the ids."""
from __future__ import annotations

import pyarrow as pa

from raypipe.store import (ATTRIBUTION_FORMAT, AttributionStore, StoreWriter,
                           build_attribution_table, write_shard)
from raypipe.store.attributions import ATTRIBUTION_KEYS


def row(doc_id, target: int) -> dict:
    return {"doc_id": doc_id, "target": target, "units": ["a", "b"], "char_start": [0, 2],
            "char_end": [1, 3], "scores": [float(target), 0.5], "shape": [2], "method": "occlusion"}


def test_table_sorts_mixed_and_empty_id_shards(tmp_path):
    root = str(tmp_path / "attr")
    writer = StoreWriter(root, {"model": "m"}, "h", format=ATTRIBUTION_FORMAT)
    shards = [[row("zeta", 1), row("zeta", 0)], [row(7, 0), row("beta", 0)], []]
    for shard_id, rows in enumerate(shards):
        table = build_attribution_table(rows)  # an empty shard: int64 ids, no rows
        writer.record(write_shard(root, shard_id, table, doc_start=2 * shard_id,
                                  doc_end=2 * shard_id + 2, required=ATTRIBUTION_KEYS))
    writer.finalize({})
    table = AttributionStore(root).table()
    assert table.schema.field("doc_id").type == pa.string()
    assert [(r["doc_id"], r["target"]) for r in table.to_pylist()] == [
        ("7", 0), ("beta", 0), ("zeta", 0), ("zeta", 1)]
    assert table.column("scores").to_pylist()[-1] == [1.0, 0.5]
