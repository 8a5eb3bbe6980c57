"""The manifest: the list of finished shards, and the only thing a reader trusts.

``STORE/manifest.json`` holds ``format`` ("raypipe.activations/1"), ``raypipe_version``,
``config_hash``, ``status`` ("running" or "complete"), every key of the job's header (model,
tokenizer, split points, granularity, dtype, corpus, job config under ``"config"``, ...),
``shards`` (ShardRecord dicts sorted by ``shard_id``), ``rows`` (their total) and ``summary``.

Why a manifest: a shard file can exist without being finished (a crash between the move and
the record, a stray ``.tmp`` file, a shard written by a different config). Listing shards only
after their writer returned, and rewriting the manifest atomically (temporary name, then move),
makes "listed" mean "complete and belonging to this config". Resuming is then a lookup: a job
skips the shard ids the manifest lists whose files are still there with the recorded size
and checksum.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict
from importlib import metadata

import pyarrow.fs as pafs

from raypipe.store.layout import FORMAT, MANIFEST_NAME, resolve_store
from raypipe.store.shard_writer import ShardRecord, file_checksum, jsonable, write_bytes_atomically

log = logging.getLogger("raypipe.store")

RESERVED_KEYS = ("format", "raypipe_version", "config_hash", "status", "shards", "rows", "summary")
_ABSENT = "<absent>"


class StoreExistsError(RuntimeError):
    """The store already holds output of a different job config."""


def read_manifest(fs: pafs.FileSystem, base: str, expected: str = FORMAT) -> dict | None:
    """``base/manifest.json`` → its dict, or None when there is none; checks the format."""
    path = f"{base}/{MANIFEST_NAME}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        raw = stream.read()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it is not a raypipe manifest, or it "
                         "was edited by hand") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    kind = expected.rsplit("/", 1)[0].split(".")[-1]
    if not isinstance(fmt, str) or fmt.rsplit("/", 1)[0] != expected.rsplit("/", 1)[0]:
        raise ValueError(f"{path} has format {fmt!r}, expected {expected!r}: not a raypipe "
                         f"{kind} store")
    if fmt != expected:
        raise ValueError(f"{path} has format {fmt!r}; this raypipe reads {expected!r}: upgrade "
                         "raypipe to read it")
    return manifest


def _flatten(d: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """Two (nested) dicts → ``[(dotted key, old value, new value)]`` where they differ."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _mismatch_message(root: str, old: dict, header: dict, config_hash: str) -> str:
    diffs = config_differences(old.get("config") or {}, header.get("config") or {})
    where = "job config"
    if not diffs:  # the hash also covers e.g. the corpus fingerprint
        diffs = config_differences({k: v for k, v in old.items() if k not in RESERVED_KEYS},
                                   {k: v for k, v in header.items() if k not in RESERVED_KEYS})
        where = "manifest header"
    lines = "\n".join(f"  {k}: {o!r} -> {n!r}" for k, o, n in diffs) or "  (none found)"
    return (f"store {root!r} holds output of config hash {old.get('config_hash')!r}, but this job "
            f"has config hash {config_hash!r}. Differing {where} keys (stored -> this job):\n"
            f"{lines}\nFix: write to a new output directory (a new --out), or delete {root!r} "
            "to start over.")


def _installed_version() -> str:
    try:
        return metadata.version("raypipe")
    except metadata.PackageNotFoundError:
        return "unknown"


class StoreWriter:
    """Driver-side owner of the manifest: creates it, resumes from it, records finished shards.

    ``header`` is everything the manifest records besides the shard list (raypipe version,
    model id, tokenizer, split points, granularity, aggregation, dtype, hidden sizes, corpus,
    job config under ``"config"``, ...). A store with the same ``config_hash`` is resumed (its
    shards are kept); another hash raises StoreExistsError rather than mixing two jobs' rows.
    """

    def __init__(self, root: str | os.PathLike, header: dict, config_hash: str, *,
                 format: str = FORMAT, legacy_hash: str | None = None) -> None:
        clash = sorted(set(header) & (set(RESERVED_KEYS) - {"raypipe_version"}))
        if clash:
            raise ValueError(f"header keys {clash} are reserved for the manifest itself; rename "
                             "them")
        self.root = os.fspath(root)
        self._fs, self._base = resolve_store(root)
        self._lock = threading.Lock()
        old = read_manifest(self._fs, self._base, format)
        if (old is not None and legacy_hash is not None and "model_files" not in old
                and old.get("config_hash") == legacy_hash):
            # written before the model's files counted in the hash: the same job, resumed; its
            # manifest records them (and the new hash) from now on
            log.info("%s: a store of an earlier raypipe; resuming it and recording the model's "
                     "files", self.root)
            old = dict(old, config_hash=config_hash)
        if old is not None and old.get("config_hash") != config_hash:
            raise StoreExistsError(_mismatch_message(self.root, old, header, config_hash))
        self.completed: dict[int, ShardRecord] = {}
        if old is not None:
            for entry in old.get("shards", []):
                rec = ShardRecord.from_dict(entry)
                self.completed[rec.shard_id] = rec
        self._head = {"format": format,
                      "raypipe_version": header.get("raypipe_version") or _installed_version(),
                      "config_hash": config_hash, "status": "running"}
        self._header = {k: v for k, v in header.items() if k != "raypipe_version"}
        if old is not None:  # same job: keep what it learnt while running (e.g. hidden sizes)
            learnt = {k: v for k, v in old.items() if k not in RESERVED_KEYS and k not in header}
            self._header = learnt | self._header
        self._summary: dict | None = None
        self._fs.create_dir(self._base, recursive=True)
        with self._lock:
            self._write()

    def is_complete(self, shard_id: int) -> bool:
        """True when the manifest lists the shard and its file is still the one recorded: same
        size and same sha256. A listed shard that is missing or damaged (a disk error, a stray
        copy) is redone rather than kept; hashing reads it once, at disk speed, far cheaper than
        the forward passes that made it."""
        rec = self.completed.get(shard_id)
        if rec is None:
            return False
        path = f"{self._base}/{rec.name}"
        info = self._fs.get_file_info(path)
        if info.type != pafs.FileType.File or info.size != rec.bytes:
            reason = "missing" if info.type != pafs.FileType.File else "of a different size"
        elif rec.checksum and file_checksum(self._fs, path) != rec.checksum:
            reason = "damaged (its sha256 differs from the manifest's)"
        else:
            return True
        log.warning("%s: listed shard %s is %s; it is redone", self.root, rec.name, reason)
        del self.completed[shard_id]
        return False

    def record(self, rec: ShardRecord) -> None:
        """List a finished shard (replacing an older record of the same id) and save."""
        with self._lock:
            self.completed[rec.shard_id] = rec
            self._write()

    def update_header(self, **fields) -> None:
        """Add facts learnt while the job runs (e.g. hidden sizes reported by the actors)."""
        clash = sorted(set(fields) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"header keys {clash} are reserved for the manifest itself")
        with self._lock:
            self._header.update(fields)

    def finalize(self, summary: dict) -> None:
        """Mark the store complete and keep the job's ``summary`` (counters, timings)."""
        with self._lock:
            self._head["status"] = "complete"
            self._summary = dict(summary)
            self._write()

    @property
    def manifest(self) -> dict:
        """The manifest as it is written to disk now."""
        shards = [asdict(self.completed[i]) for i in sorted(self.completed)]
        return {**self._head, **self._header, "shards": shards,
                "rows": sum(s["rows"] for s in shards), "summary": self._summary}

    def _write(self) -> None:
        blob = json.dumps(self.manifest, indent=1, default=jsonable).encode()
        write_bytes_atomically(self._fs, f"{self._base}/{MANIFEST_NAME}", blob)
