"""Atomic shard writes, the manifest, resuming and config mismatches."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from raypipe.store import ActivationStore, ShardRecord, StoreExistsError, StoreWriter, write_shard
from raypipe.store import shard_writer

from tests.store.store_factories import DIMS, make_header, make_units


def test_write_shard_record_matches_the_file(tmp_path):
    table, _ = make_units(0, 5, np.random.default_rng(0))
    rec = write_shard(str(tmp_path), 12, table, doc_start=0, doc_end=5,
                      stats={"docs": np.int64(5), "tokens": 40})
    assert rec.name == "shards/shard-000012.parquet"
    data = (tmp_path / rec.name).read_bytes()
    assert rec.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert rec.bytes == len(data) and rec.rows == table.num_rows
    assert rec.stats == {"docs": 5, "tokens": 40}
    assert json.loads(json.dumps(rec.__dict__))["shard_id"] == 12
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard-000012.parquet"]


def test_checksum_hashed_while_writing_covers_every_row_group(tmp_path, monkeypatch):
    """The checksum and size are taken from the bytes as they stream to the file: with
    several row groups (many writes), they still match the file, which reads back whole."""
    monkeypatch.setattr(shard_writer, "ROW_GROUP_BYTES", 4096)
    table, acts = make_units(0, 400, np.random.default_rng(5))
    rec = write_shard(str(tmp_path), 0, table, doc_start=0, doc_end=400)
    data = (tmp_path / rec.name).read_bytes()
    assert pq.ParquetFile(tmp_path / rec.name).metadata.num_row_groups > 10
    assert rec.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert rec.bytes == len(data)
    writer = StoreWriter(str(tmp_path), make_header(), "h")
    writer.record(rec)
    store = ActivationStore(str(tmp_path))
    for path, x in acts.items():
        np.testing.assert_array_equal(store.to_numpy(path), x)


def test_retry_overwrites_the_same_name(tmp_path):
    rng = np.random.default_rng(1)
    first, _ = make_units(0, 5, rng)
    second, _ = make_units(0, 5, rng)
    write_shard(str(tmp_path), 3, first, doc_start=0, doc_end=5)
    rec = write_shard(str(tmp_path), 3, second, doc_start=0, doc_end=5)
    assert os.listdir(tmp_path / "shards") == ["shard-000003.parquet"]
    data = (tmp_path / rec.name).read_bytes()
    assert rec.checksum == "sha256:" + hashlib.sha256(data).hexdigest()


def _crash_after_partial_write(sink, data):
    sink._stream.write(memoryview(data)[: len(data) // 2])
    raise RuntimeError("simulated crash mid-write")


def test_crash_mid_write_leaves_no_visible_shard(tmp_path, monkeypatch):
    root = str(tmp_path)
    writer = StoreWriter(root, make_header(), "h")
    table, _ = make_units(0, 5, np.random.default_rng(2))
    monkeypatch.setattr(shard_writer._HashingSink, "write", _crash_after_partial_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_shard(root, 0, table, doc_start=0, doc_end=5)
    assert os.listdir(tmp_path / "shards") == []  # the partial tmp file was removed

    # a hard crash (no cleanup) leaves only a hidden tmp file, which nothing trusts
    monkeypatch.setattr(shard_writer, "_remove_quietly", lambda fs, path: None)
    with pytest.raises(RuntimeError):
        write_shard(root, 0, table, doc_start=0, doc_end=5)
    left = os.listdir(tmp_path / "shards")
    assert len(left) == 1 and left[0].startswith(".shard-000000.parquet.tmp-")
    assert not writer.is_complete(0) and len(ActivationStore(root)) == 0

    monkeypatch.undo()
    rec = write_shard(root, 0, table, doc_start=0, doc_end=5)  # the retry
    writer.record(rec)
    assert writer.is_complete(0)
    assert len(ActivationStore(root)) == table.num_rows
    assert sorted(f for f in os.listdir(tmp_path / "shards") if not f.startswith(".")) == \
        ["shard-000000.parquet"]


def test_manifest_keys_sorted_shards_and_finalize(tmp_path):
    root = str(tmp_path / "s")
    writer = StoreWriter(root, make_header(), "h1")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["shards"] == [] and manifest["rows"] == 0
    rng = np.random.default_rng(3)
    rows = 0
    for sid in (2, 0, 1):  # finish out of order
        table, _ = make_units(sid * 3, sid * 3 + 3, rng)
        writer.record(write_shard(root, sid, table, doc_start=sid * 3, doc_end=sid * 3 + 3))
        rows += table.num_rows
    writer.finalize({"docs": 9})
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["format"] == "raypipe.activations/1"
    assert manifest["config_hash"] == "h1" and manifest["status"] == "complete"
    assert manifest["raypipe_version"]
    assert manifest["model"] == "tiny-bert" and manifest["config"]["docs_per_shard"] == 3
    assert [s["shard_id"] for s in manifest["shards"]] == [0, 1, 2]
    assert manifest["rows"] == rows and manifest["summary"] == {"docs": 9}
    assert [f for f in os.listdir(tmp_path / "s") if f != "shards"] == ["manifest.json"]


def test_resume_keeps_shards_and_checks_files(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(4)
    writer = StoreWriter(root, make_header(), "same")
    recs = []
    for sid in range(2):
        table, _ = make_units(sid * 3, sid * 3 + 3, rng)
        recs.append(write_shard(root, sid, table, doc_start=sid * 3, doc_end=sid * 3 + 3))
        writer.record(recs[-1])
    resumed = StoreWriter(root, make_header(), "same")
    assert resumed.completed == {0: recs[0], 1: recs[1]}
    assert resumed.is_complete(0) and resumed.is_complete(1) and not resumed.is_complete(2)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "running" and len(manifest["shards"]) == 2

    with open(tmp_path / recs[1].name, "ab") as fh:  # a damaged file no longer counts
        fh.write(b"x")
    os.remove(tmp_path / recs[0].name)
    assert not resumed.is_complete(0) and not resumed.is_complete(1)


def test_resume_redoes_a_shard_damaged_in_place(tmp_path, caplog):
    """Same size, different bytes (a flipped block): the checksum tells, the shard is redone and
    no longer listed once the manifest is next written."""
    root = str(tmp_path)
    rng = np.random.default_rng(5)
    writer = StoreWriter(root, make_header(), "same")
    for sid in range(2):
        table, _ = make_units(sid * 3, sid * 3 + 3, rng)
        writer.record(write_shard(root, sid, table, doc_start=sid * 3, doc_end=sid * 3 + 3))
    path = tmp_path / writer.completed[1].name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    resumed = StoreWriter(root, make_header(), "same")
    with caplog.at_level("WARNING", logger="raypipe.store"):
        assert resumed.is_complete(0) and not resumed.is_complete(1)
    assert "shard-000001.parquet is damaged" in caplog.text
    resumed.finalize({})
    listed = [s["shard_id"] for s in json.loads((tmp_path / "manifest.json").read_text())["shards"]]
    assert listed == [0]


def test_different_config_raises_naming_the_key(tmp_path):
    root = str(tmp_path / "store")
    StoreWriter(root, make_header(), "aaaa1111")
    with pytest.raises(StoreExistsError) as info:
        StoreWriter(root, make_header(granularity="word", docs_per_shard=3), "bbbb2222")
    msg = str(info.value)
    for part in (root, "aaaa1111", "bbbb2222", "granularity: 'token' -> 'word'", "--out", "delete"):
        assert part in msg
    assert "docs_per_shard" not in msg  # unchanged keys are not listed


def test_shard_record_round_trips_through_json():
    rec = ShardRecord(shard_id=1, name="shards/shard-000001.parquet", rows=4, doc_start=3,
                      doc_end=6, checksum="sha256:00", bytes=10, stats={"docs": 3})
    from dataclasses import asdict
    assert ShardRecord.from_dict(json.loads(json.dumps(asdict(rec)))) == rec
    with pytest.raises(ValueError, match="extra"):
        ShardRecord.from_dict({**asdict(rec), "extra": 1})


def test_reopening_a_store_keeps_what_the_job_learnt(tmp_path):
    """A re-run of a finished job (``make demo`` twice) or a resume that dies before its first
    shard must not lose facts recorded while the first run went on, such as hidden sizes."""
    header = {k: v for k, v in make_header().items() if k != "hidden_sizes"}
    first = StoreWriter(str(tmp_path), header, "h")
    first.update_header(hidden_sizes=dict(DIMS))
    first.finalize({"docs": 0})
    again = StoreWriter(str(tmp_path), header, "h")          # no shard arrives this time
    assert again.manifest["hidden_sizes"] == DIMS
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["hidden_sizes"] == DIMS and on_disk["status"] == "running"
    # what the new run's header says wins over the old manifest
    newer = StoreWriter(str(tmp_path), header | {"model": "tiny-bert-renamed"}, "h")
    assert newer.manifest["model"] == "tiny-bert-renamed"


def test_a_store_of_an_earlier_raypipe_resumes_and_then_records_the_model_files(tmp_path):
    """Stores written before the model's files counted in the hash carry the hash without
    them (legacy_hash) and no model_files: they resume, keep their shards and are stamped;
    a store whose legacy hash differs, or that already has model files, is another job."""
    root = str(tmp_path / "store")
    rng = np.random.default_rng(6)
    old = StoreWriter(root, make_header(), "legacy01")
    table, _ = make_units(0, 3, rng)
    old.record(write_shard(root, 0, table, doc_start=0, doc_end=3))
    with pytest.raises(StoreExistsError):
        StoreWriter(root, make_header() | {"model_files": "files:1"}, "new00001", legacy_hash="other000")
    resumed = StoreWriter(root, make_header() | {"model_files": "files:1"}, "new00001",
                          legacy_hash="legacy01")
    assert resumed.is_complete(0)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["config_hash"] == "new00001" and manifest["model_files"] == "files:1"
    with pytest.raises(StoreExistsError):  # stamped now: a changed model is another job
        StoreWriter(root, make_header() | {"model_files": "files:2"}, "new00002", legacy_hash="legacy01")
