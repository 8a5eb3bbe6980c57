"""Reading a store back: order, batches, shuffling, HF/Ray datasets, verification."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from raypipe.store import ActivationStore, StoreWriter, decode_activations, write_shard

from tests.store.store_factories import DIMS, SPLITS, make_header, make_units


def test_missing_manifest_says_what_to_expect(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json") as info:
        ActivationStore(tmp_path / "nowhere")
    assert "--out" in str(info.value)


def test_to_numpy_matches_written_vectors_in_units_order(small_store):
    root, expected, records = small_store
    store = ActivationStore(root)
    assert store.split_points == list(SPLITS)
    assert len(store) == sum(r.rows for r in records) == len(expected[SPLITS[0]])
    units = store.units()
    keys = list(zip(units.column("doc_id").to_pylist(), units.column("unit").to_pylist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert units.column("text").to_pylist() == [f"d{d}u{u}" for d, u in keys]
    for i, p in enumerate(SPLITS):
        x = store.to_numpy(p)
        assert x.dtype == np.float32 and x.shape == (len(store), DIMS[p])
        np.testing.assert_array_equal(x, expected[p])
        np.testing.assert_array_equal(store.to_numpy(i), x)
    t = store.to_torch(-1, dtype=torch.float64)
    assert t.dtype == torch.float64
    np.testing.assert_array_equal(t.numpy(), expected[SPLITS[1]])


def test_split_selection_errors_list_valid_ones(small_store):
    store = ActivationStore(small_store[0])
    with pytest.raises(KeyError, match="encoder.layer.1"):
        store.to_numpy("encoder.layer.9")
    with pytest.raises(KeyError, match="2 split points"):
        store.to_numpy()
    with pytest.raises(KeyError, match="valid"):
        store.to_numpy(5)
    with pytest.raises(KeyError, match="char_start"):
        store.iter_batches(0, columns=("doc_idx",))


def _collect(store, **kw):
    batches = list(store.iter_batches(**kw))
    acts = np.concatenate([b["activations"] for b in batches])
    keys = [(int(d), int(u)) for b in batches for d, u in zip(b["doc_id"], b["unit"])]
    return batches, acts, keys


@pytest.mark.parametrize("shuffle_buffer", [None, 0, 7, 1000])
def test_iter_batches_yields_every_row_once(small_store, shuffle_buffer):
    root, expected, _ = small_store
    store = ActivationStore(root)
    order = list(zip(store.units().column("doc_id").to_pylist(),
                     store.units().column("unit").to_pylist()))
    batches, acts, keys = _collect(store, split=SPLITS[0], batch_size=4,
                                   shuffle_buffer=shuffle_buffer, seed=3)
    assert sorted(keys) == order  # every row exactly once
    assert all(len(b["activations"]) == 4 for b in batches[:-1])
    assert set(batches[0]) == {"activations", "doc_id", "unit"}
    row_of = {k: i for i, k in enumerate(order)}
    np.testing.assert_array_equal(acts, expected[SPLITS[0]][[row_of[k] for k in keys]])
    if shuffle_buffer is None:
        assert keys == order
    else:
        assert keys != order


def test_shuffle_is_seed_deterministic(small_store):
    store = ActivationStore(small_store[0])
    _, a1, k1 = _collect(store, split=1, batch_size=5, shuffle_buffer=6, seed=11)
    _, a2, k2 = _collect(store, split=1, batch_size=5, shuffle_buffer=6, seed=11)
    _, _, k3 = _collect(store, split=1, batch_size=5, shuffle_buffer=6, seed=12)
    assert k1 == k2 and k1 != k3
    np.testing.assert_array_equal(a1, a2)


def test_drop_last_and_text_column(small_store):
    store = ActivationStore(small_store[0])
    n = len(store)
    batches = list(store.iter_batches(0, batch_size=4, drop_last=True, columns=("text",)))
    assert len(batches) == n // 4 and all(len(b["text"]) == 4 for b in batches)
    assert batches[0]["text"][0] == "d0u0"


def test_to_hf_dataset(small_store):
    root, expected, _ = small_store
    ds = ActivationStore(root).to_hf_dataset(SPLITS[1])
    assert len(ds) == len(expected[SPLITS[1]])
    assert set(ds.column_names) == {"doc_id", "unit", "text", "char_start", "char_end",
                                    "activations"}
    row = ds[5]
    np.testing.assert_array_equal(np.array(row["activations"], np.float32), expected[SPLITS[1]][5])


def test_verify_catches_corruption_and_ignores_unlisted_files(small_store):
    root, _, records = small_store
    store = ActivationStore(root)
    assert store.verify() == []
    stray = os.path.join(root, "shards/shard-000099.parquet")  # a file no manifest lists
    shutil.copy(os.path.join(root, records[0].name), stray)
    assert ActivationStore(root).verify() == [] and len(ActivationStore(root)) == len(store)

    path = os.path.join(root, records[2].name)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    open(path, "wb").write(bytes(data))
    problems = store.verify()
    assert len(problems) == 1 and records[2].name in problems[0] and "checksum" in problems[0]

    os.remove(os.path.join(root, records[1].name))
    problems = store.verify()
    assert len(problems) == 2 and "missing" in problems[0]


def test_resumed_store_reads_only_listed_shards(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(9)
    writer = StoreWriter(root, make_header(), "h")
    table, acts = make_units(0, 3, rng)
    writer.record(write_shard(root, 0, table, doc_start=0, doc_end=3))
    unlisted, _ = make_units(3, 6, rng)
    write_shard(root, 1, unlisted, doc_start=3, doc_end=6)  # crashed before being recorded
    store = ActivationStore(root)
    assert len(store) == table.num_rows
    np.testing.assert_array_equal(store.to_numpy(SPLITS[0]), acts[SPLITS[0]])


@pytest.mark.ray
def test_to_ray_dataset_row_count(small_store, ray_local):
    root, expected, _ = small_store
    ds = ActivationStore(root).to_ray_dataset()
    # block order is not guaranteed: compare after sorting by (doc_id, unit)
    table = pa.concat_tables(ray_local.get(ds.to_arrow_refs())).sort_by(
        [("doc_id", "ascending"), ("unit", "ascending")])
    assert table.num_rows == len(expected[SPLITS[0]])
    np.testing.assert_array_equal(
        decode_activations(table.column(SPLITS[0]), "float32", DIMS[SPLITS[0]]),
        expected[SPLITS[0]])


def test_file_uri_root_round_trip(tmp_path):
    """A URI root goes through pyarrow.fs end to end (the path s3:// stores take)."""
    uri = (tmp_path / "uri-store").as_uri()
    assert uri.startswith("file:///")
    table, acts = make_units(0, 4, np.random.default_rng(10), dtype="bfloat16")
    writer = StoreWriter(uri, make_header(), "h")
    writer.record(write_shard(uri, 0, table, doc_start=0, doc_end=4))
    writer.finalize({})
    assert writer.is_complete(0)
    store = ActivationStore(uri)
    want = torch.from_numpy(acts[SPLITS[0]]).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(store.to_numpy(SPLITS[0]), want)
    assert store.verify() == []


def test_store_without_shards(tmp_path):
    StoreWriter(tmp_path, make_header(), "h")
    store = ActivationStore(tmp_path)
    assert len(store) == 0 and store.split_points == list(SPLITS)
    assert store.to_numpy(SPLITS[1]).shape == (0, DIMS[SPLITS[1]])
    assert store.units().num_rows == 0
    assert list(store.iter_batches(0)) == [] and store.verify() == []


def test_shuffle_buffer_emits_a_uniform_subset_and_keeps_every_other_row():
    from raypipe.store.reader import _ShuffleBuffer

    shards = [{"activations": np.arange(s * 25, s * 25 + 25, dtype=np.float32)[:, None],
               "doc_id": np.arange(s * 25, s * 25 + 25)} for s in range(4)]
    counts = np.zeros(75)
    for seed in range(1500):
        buffer = _ShuffleBuffer(keep=60, rng=np.random.default_rng(seed))
        seen = []
        for i, shard in enumerate(shards[:3]):
            out = buffer.add(shard, batch_size=10)
            seen.extend(out["doc_id"].tolist())
            held = buffer.data["doc_id"][:buffer.rows].tolist()
            # nothing lost, nothing duplicated: emitted + held = every row added so far
            assert sorted(seen + held) == list(range(25 * (i + 1)))
            assert np.array_equal(buffer.data["activations"][:buffer.rows, 0], held)
        assert len(seen) == 10  # 75 rows held, 60 kept: one batch of 10 due
        counts[seen] += 1
    expected = 1500 * 10 / 75
    assert np.all(np.abs(counts - expected) < 0.35 * expected)  # every row equally likely
    assert abs(counts[:25].mean() - counts[50:].mean()) < 0.06 * expected  # old rows as new


def mixed_id_store(tmp_path, shards=(("zeta", "alpha"), (7, "beta"), ())):
    """A store whose ids follow corpus order, not id order; by default they mix ints and
    strings within a shard (a JSONL id field) and across shards, with a shard of empty
    documents (no ids to type). Returns the root and ``[(doc_id as str, unit, {split:
    vector})]`` in store order."""
    from raypipe.store import build_shard_table

    rng = np.random.default_rng(3)
    root = str(tmp_path / "store")
    writer = StoreWriter(root, make_header(), "h")
    rows = []                                             # (doc_id as str, unit, {split: vector})
    for shard_id, ids in enumerate(shards):
        doc_id = [d for d in ids for _ in range(2)]
        unit = [u for _ in ids for u in range(2)]
        acts = {p: rng.standard_normal((len(doc_id), d)).astype(np.float32) for p, d in DIMS.items()}
        table = build_shard_table(doc_id, unit, [f"{d}/{u}" for d, u in zip(doc_id, unit)],
                                  np.zeros(len(unit), int), np.ones(len(unit), int), acts, "float32")
        writer.record(write_shard(root, shard_id, table, doc_start=2 * shard_id,
                                  doc_end=2 * shard_id + len(ids)))
        rows += [(str(d), u, {p: acts[p][i] for p in SPLITS})
                 for i, (d, u) in enumerate(zip(doc_id, unit))]
    writer.finalize({})
    return root, rows


def test_id_column_stores_are_read_sorted_by_id_with_vectors_in_the_same_order(tmp_path):
    """units() and to_numpy() agree, sorted by (doc_id, unit), with every id read as a string."""
    root, rows = mixed_id_store(tmp_path)
    store = ActivationStore(root)
    units = store.units()
    assert units.schema.field("doc_id").type == pa.string()
    keys = list(zip(units.column("doc_id").to_pylist(), units.column("unit").to_pylist()))
    expected = sorted(rows, key=lambda r: (r[0], r[1]))
    assert keys == [(d, u) for d, u, _ in expected]
    assert keys[0] == ("7", 0) and keys[-1] == ("zeta", 1)
    assert units.column("text").to_pylist() == [f"{d}/{u}" for d, u in keys]
    for p in SPLITS:
        np.testing.assert_array_equal(store.to_numpy(p), np.stack([r[2][p] for r in expected]))
    # store order stays available for row indices of per-shard jobs
    assert store.store_order_units().column("doc_id").to_pylist()[:2] == ["zeta", "zeta"]


@pytest.mark.ray
def test_to_ray_dataset_reads_mixed_id_shards_as_strings(tmp_path, ray_local):
    store = ActivationStore(mixed_id_store(tmp_path)[0])
    table = pa.concat_tables(ray_local.get(store.to_ray_dataset().to_arrow_refs()))
    assert table.schema.field("doc_id").type == pa.string()
    assert sorted(table.column("doc_id").to_pylist()) == sorted(
        store.units().column("doc_id").to_pylist())


def test_integer_ids_out_of_corpus_order_are_sorted_too(tmp_path):
    root, rows = mixed_id_store(tmp_path, shards=((5, 2), (9, 1)))
    store = ActivationStore(root)
    units = store.units()
    assert units.schema.field("doc_id").type == pa.int64()
    assert units.column("doc_id").to_pylist() == [1, 1, 2, 2, 5, 5, 9, 9]
    expected = sorted(rows, key=lambda r: (int(r[0]), r[1]))
    np.testing.assert_array_equal(store.to_numpy(SPLITS[0]),
                                  np.stack([r[2][SPLITS[0]] for r in expected]))


def test_documents_sharing_an_id_stay_apart_in_corpus_order(tmp_path):
    """Two documents given the same id by an id column: sorting by (doc_id, unit) alone
    interleaved them (A0 B0 A1 B1); each keeps its units together, first document first."""
    root, rows = mixed_id_store(tmp_path, shards=((7, 3), (7,)))
    store = ActivationStore(root)
    units = store.units()
    assert list(zip(units.column("doc_id").to_pylist(), units.column("unit").to_pylist())) == [
        (3, 0), (3, 1), (7, 0), (7, 1), (7, 0), (7, 1)]
    first_seven = [r for r in rows if r[0] == "7"]
    np.testing.assert_array_equal(store.to_numpy(SPLITS[0])[2:],
                                  np.stack([r[2][SPLITS[0]] for r in first_seven]))


def test_duplicate_doc_ids_counts_ids_naming_several_documents(tmp_path):
    root, _ = mixed_id_store(tmp_path, shards=((7, 3), (7, 9), (3,)))
    n, ids = ActivationStore(root).duplicate_doc_ids()
    assert n == 2 and sorted(ids) == [3, 7]
    assert ActivationStore(mixed_id_store(tmp_path / "u", shards=((1, 2), (3,)))[0]
                           ).duplicate_doc_ids() == (0, [])
