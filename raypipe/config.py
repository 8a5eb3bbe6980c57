"""Typed job configs. YAML keys are the field names; an unknown key is an error naming it.

The CLI is generated from these dataclasses (each field's ``help`` metadata is its ``--help``
line), so flags, YAML files and the Python API always accept the same options.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raypipe.granularity import Aggregation, Granularity


class ConfigError(ValueError):
    """A job config names an unknown key or holds an invalid value."""


def _opt(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def paths_as_strings(config: Any) -> None:
    """Fields given as ``os.PathLike`` (a ``pathlib.Path``, as ``get_model_path()`` returns)
    become ``str``, as the CLI and YAML give them: the config's dict, its JSON in the manifest
    and its hash then have one spelling of a path, and a model folder is stamped by its files
    (see `config_hash`) however the caller spelled it."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, os.PathLike):
            setattr(config, f.name, os.fspath(value))


def require_fields(config: Any, *names: str) -> None:
    """Raise ConfigError naming the first of ``names`` that is empty, with its flag."""
    for name in names:
        if getattr(config, name) in ("", None, []):
            raise ConfigError(f"'{name}' is required (--{name.replace('_', '-')})")


def require_at_least_one(config: Any, *names: str) -> None:
    """Raise ConfigError for the first of ``names`` (integer fields) below 1; None means a default."""
    for name in names:
        if getattr(config, name) is not None and int(getattr(config, name)) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")


CPU_REPLICAS_HELP = ("CPU actors: model copies sharing the weights, each forwarding on its own "
                     "thread with --torch-threads / N threads (default: one per thread up to 4 "
                     "threads, else 2; a GPU actor always runs one)")

# Fields that change how a job runs but not what it writes; left out of the config hash so a
# resumed job may use more actors, other GPUs or another batch budget, and may name its store
# ``runs/a``, ``./runs/a`` or by its absolute path (or a copy of it moved elsewhere).
RUNTIME_ONLY = frozenset({"actors", "num_gpus", "num_cpus", "torch_threads", "cpu_replicas",
                          "address", "batch_tokens", "progress", "device_map", "out"})


@dataclass
class ExtractConfig:
    """An activation-extraction job: corpus → model actors → ActivationStore."""

    model: str = _opt("", "model: a local folder (save_pretrained) or a hub id", required=True)
    corpus: Any = _opt("", "corpus: a .txt (one document per line), .jsonl, .csv/.tsv, .parquet, a "
                       "datasets.save_to_disk folder, 'hf:NAME', or 'stdlib:docstrings'", required=True)
    out: str = _opt("", "output store directory (local path or a pyarrow URI such as s3://...)",
                    required=True)
    split_points: list = _opt([-1], "comma-separated split points: block indices (0 = first block, "
                              "-1 = last) or module paths such as encoder.layer.3.output")
    granularity: str = _opt("token", "unit of each stored row: all_tokens, token, cls_token, sample, "
                            "word, sentence")
    aggregation: str = _opt("mean", "how tokens of a word/sentence/sample are reduced: mean, max, "
                            "min, sum, signed_max")
    text_column: str = _opt("text", "text column of JSONL/CSV/Parquet/HF corpora")
    id_column: str | None = _opt(None, "column to use as doc_id (default: the 0-based row/line number)")
    corpus_format: str | None = _opt(None, "force the corpus format: text, jsonl, csv, tsv, "
                                     "parquet, hf_saved, hf")
    corpus_split: str = _opt("train", "split of a saved DatasetDict or an hf:NAME corpus")
    max_docs: int | None = _opt(None, "only the first N documents of the corpus")
    dtype: str = _opt("float32", "model compute dtype: float32, float16, bfloat16")
    store_dtype: str | None = _opt(None, "dtype of stored activations (default: same as --dtype)")
    max_length: int | None = _opt(None, "tokens per sequence (default: the model's maximum); more "
                                  "than the model's position table is an error")
    max_length_cap: int | None = _opt(None, "without --max-length: the model's maximum, but at most "
                                      "this many tokens (raypipe mine: 256)")
    overflow: str = _opt("truncate", "documents longer than max_length: 'truncate' (counted and "
                         "reported) or 'window' (consecutive windows, every token kept)")
    padding_side: str = _opt("right", "padding side for batches; right is exact for encoders and "
                             "causal LMs alike")
    auto_class: str | None = _opt(None, "transformers auto class, e.g. AutoModelForCausalLM "
                                  "(default: chosen from the model config)")
    output_index: int = _opt(0, "which element of a tuple-valued module output is the hidden state")
    trust_remote_code: bool = _opt(False, "allow models with custom code (off unless asked)")
    device_map: str | None = _opt(None, "accelerate device_map inside each actor (default: 'auto' "
                                  "when the actor owns GPUs, CPU otherwise)")
    actors: int = _opt(1, "number of model actors (each holds one copy of the model)")
    num_gpus: float = _opt(0.0, "GPUs per model actor (>1 shards the model over them)")
    num_cpus: float = _opt(1.0, "CPUs reserved per model actor")
    torch_threads: int | None = _opt(None, "torch threads per actor (default: --num-cpus, or this "
                                     "node's cores / actors when that is more)")
    cpu_replicas: int | None = _opt(None, CPU_REPLICAS_HELP)
    batch_tokens: int | None = _opt(None, "padded tokens per micro-batch on the model actors "
                                     "(default: 8192 on a GPU, 1024 on CPU)")
    docs_per_shard: int | None = _opt(None, "documents per output shard, the unit of resuming "
                                      "(default: sized from a sample of the corpus, at most 2^18 "
                                      "tokens and 256 MiB of activations a shard, and at least 4 "
                                      "shards per actor)")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else a local Ray)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        if isinstance(self.split_points, (str, int)):
            self.split_points = parse_split_points(self.split_points)
        self.split_points = [int(p) if isinstance(p, str) and _is_int(p) else p
                             for p in self.split_points]
        require_fields(self, "model", "corpus", "out")
        gran = Granularity.parse(self.granularity)
        if gran is Granularity.ALL:
            raise ConfigError("granularity 'all' is the padded (n, l, d) tensor of the in-memory API "
                              "(raypipe.get_activations(model, texts, granularity='all')); a store "
                              "needs rows: use all_tokens (every token, special ones included) or "
                              "token")
        self.granularity = gran.value
        self.aggregation = Aggregation.parse(self.aggregation).value
        for name, allowed in (("dtype", DTYPES), ("overflow", ("truncate", "window")),
                              ("padding_side", ("right", "left"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.store_dtype is None:
            self.store_dtype = self.dtype
        if self.store_dtype not in DTYPES:
            raise ConfigError(f"store_dtype={self.store_dtype!r} is not one of {', '.join(DTYPES)}")
        require_at_least_one(self, "actors", "batch_tokens", "docs_per_shard", "cpu_replicas")
        for name in ("max_length", "max_length_cap"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not isinstance(d["corpus"], str):
            d["corpus"] = f"<python list of {len(self.corpus)} documents>"
        return d

    def config_hash(self, corpus_fingerprint: dict | None = None,
                    resolved: dict | None = None, *, model_files: bool = True) -> str:
        return config_hash(self.to_dict(), corpus_fingerprint, resolved, model_files=model_files)


#: Files of a model folder whose change changes the model's outputs (weights, configs,
#: tokenizer files, remote code), as opposed to a README or a git folder.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt",
                       ".tiktoken", ".py", ".msgpack", ".h5")


def model_stamp(model: str) -> str | None:
    """Which version of ``model`` a job reads, for store identity: a model that changes under
    a store (retrained into the same folder, another revision in the hub cache) must not be
    resumed into it, or one store would mix two models' rows.

    By content, so that a copy, a reinstall or a container rebuild of the same model is the
    same model: a local folder counts by its model files (weights, configs, tokenizer files,
    remote code; not a README): the bytes of each small file, and of each weight file its
    size and its first and last MiB (a retrained tensor changes them; a safetensors header
    alone would not). A hub id counts by the content ids of the same files in its cached
    snapshot (the blob names the snapshot links to), so a new upstream commit that changes
    no model file is the same model. None when a hub id is not cached (e.g. on a cluster node).
    """
    if os.path.isdir(model):
        files = [Path(e.path) for e in os.scandir(model)
                 if e.is_file() and e.name.endswith(MODEL_FILE_SUFFIXES)]
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(path.name.encode() + b"\0" + _content_digest(path) + b"\0")
        return "files:" + digest.hexdigest()[:16]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # an id the hub library rejects: the loader reports it
        return None
    if not isinstance(cached, str):
        return None
    snapshot = Path(cached).parent  # .../snapshots/<commit>/config.json -> ../../blobs/<id>
    blobs = sorted((e.name, os.path.basename(os.readlink(e.path)) if e.is_symlink() else
                    _content_digest(Path(e.path)).hex())
                   for e in os.scandir(snapshot) if e.name.endswith(MODEL_FILE_SUFFIXES))
    return "blobs:" + hashlib.sha256(json.dumps(blobs).encode()).hexdigest()[:16]


_SMALL_FILE = 4 << 20  # bytes: configs and tokenizer files are read whole
_EDGE = 1 << 20        # of a weight file: its first and last MiB, and its size


def _content_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _SMALL_FILE:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            digest.update(fh.read(_EDGE))
    return digest.digest()


# Fields the corpus fingerprint describes better: it names the file by its absolute path (so
# `corpus.txt`, `./corpus.txt` and its absolute path are one corpus) with its size, mtime,
# split and columns.
CORPUS_IDENTITY = frozenset({"corpus", "corpus_split"})


_NOT_GIVEN = object()


def config_hash(config: dict, corpus_fingerprint: dict | None = None,
                resolved: dict | None = None, *, model_files: bool = True) -> str:
    """What decides a store's content, hashed: a re-run with the same hash resumes the store.

    Left out: RUNTIME_ONLY fields, and the corpus's spelling when its fingerprint is given.
    ``resolved`` replaces fields by what the plan resolved them to (split points ``[1]``,
    ``[-5]`` and ``["encoder.layer.1"]`` of a 6-block model are one split point); a model given
    as a local folder counts by its real path (``./m``, ``m``, ``/abs/m``) and every model by
    its files (`model_stamp`, or ``resolved["model_files"]`` when the caller already read
    them); ``model_files=False`` gives the hash of stores written before raypipe recorded them
    (StoreWriter still resumes those).
    """
    resolved = dict(resolved or {})
    stamp = resolved.pop("model_files", _NOT_GIVEN)
    fields = {k: v for k, v in config.items() if k not in RUNTIME_ONLY}
    if corpus_fingerprint:
        fields = {k: v for k, v in fields.items() if k not in CORPUS_IDENTITY}
    model = fields.get("model")
    if isinstance(model, str) and model and os.path.isdir(model):
        fields["model"] = os.path.realpath(model)
    if model_files and isinstance(model, str) and model:
        fields["model_files"] = model_stamp(model) if stamp is _NOT_GIVEN else stamp
    fields.update(resolved)
    payload = {"config": fields, "corpus": corpus_fingerprint or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


DTYPES = ("float32", "float16", "bfloat16")


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def parse_split_points(value: str | int | list) -> list:
    """``"1,encoder.layer.2"`` → ``[1, "encoder.layer.2"]``."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return value
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    return [int(p) if _is_int(p) else p for p in parts]


def config_from_dict(cls: type, values: dict, source: str = "config") -> Any:
    """Build ``cls`` from a dict, rejecting unknown keys with the closest valid names."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key.replace("-", "_"), names, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in {source}.{hint} Valid keys: {', '.join(names)}")
    values = {key: _checked_value(cls, key, value, source) for key, value in values.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"invalid {source}: {err}") from err


def _checked_value(cls: type, key: str, value: Any, source: str) -> Any:
    """A YAML value of a number or flag field must have that type (``docs_per_shard: "100"``
    would otherwise fail deep inside the job, after Ray started); ints pass for floats."""
    if value is None:
        return value
    try:
        kind = typing.get_type_hints(cls).get(key)
    except (NameError, TypeError):  # a hint only a type checker can resolve: leave it to cls
        return value
    options = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    if len(options) != 1 or options[0] not in (int, float, bool):
        return value
    want = options[0]
    if want is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = (isinstance(value, bool) if want is bool
          else isinstance(value, (int, float) if want is float else int) and not isinstance(value, bool))
    if not ok:
        noun = {int: "an integer", float: "a number", bool: "true or false"}[want]
        raise ConfigError(f"{key} in {source} must be {noun}, got {value!r} "
                          f"({type(value).__name__})")
    return float(value) if want is float else value


def load_yaml(path: str | Path) -> dict:
    """Read a job file; its top level must be a mapping of config keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data
