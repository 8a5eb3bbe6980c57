"""The ``small_store`` fixture: a finished 4-shard store with known vectors."""
from __future__ import annotations

import numpy as np
import pytest

from raypipe.store import StoreWriter, write_shard
from tests.store.store_factories import SPLITS, make_header, make_units


@pytest.fixture
def small_store(tmp_path):
    """A finished store of 4 shards x 3 docs (doc_end 11: the last shard is short).

    Returns (root, {split: float32 (rows, d)} in store order, list of ShardRecord).
    """
    rng = np.random.default_rng(7)
    root = str(tmp_path / "store")
    writer = StoreWriter(root, make_header(), "hash-a")
    expected = {p: [] for p in SPLITS}
    records = []
    for shard_id, (a, b) in enumerate([(0, 3), (3, 6), (6, 9), (9, 11)]):
        table, acts = make_units(a, b, rng)
        rec = write_shard(root, shard_id, table, doc_start=a, doc_end=b, stats={"docs": b - a})
        writer.record(rec)
        records.append(rec)
        for p in SPLITS:
            expected[p].append(acts[p])
    writer.finalize({"shards": 4})
    return root, {p: np.concatenate(v) for p, v in expected.items()}, records
