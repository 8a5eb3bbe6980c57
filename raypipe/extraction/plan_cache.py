"""What planning learns about a model, remembered between jobs on the same model.

Why: resolving split points builds a weightless copy of the model, which means importing torch
and transformers' model classes on the driver: ~4.5 s of one core on a 2-core machine, at the
moment Ray is starting and the model actor is importing the same libraries. A user runs many
jobs on one model (other corpora, other granularities, a resumed store); from the second on,
the model facts the plan needs (resolved split points, model type, maximum length, the Rust
tokenizer, the stored row width) are read from one small JSON file instead, and the driver
never imports torch to plan. Measured on all of rt-polarity at split 1 (MiniLM, 2 cores, 4
alternating pairs): 1.7-4.8 s shorter end to end, median 3.3 (scripts/BENCHMARKS.md).

An entry is keyed by everything the facts depend on: the model's files by content
(``model_stamp``: a retrained or replaced model is another key), the options that change the
resolution (auto class, split points as given, padding side, max length and its cap), and the
versions of raypipe and transformers. Only plans that succeeded are stored, so a bad split
point or length is always checked afresh and fails with its full message. Nothing is cached
for a hub id whose files are not in the local hub cache (no stamp) or with
``trust_remote_code`` (remote code can come from another repository than the model's).

Where: ``$RAYPIPE_CACHE_DIR/plans`` when set (set it to ``off`` to disable), else
``$XDG_CACHE_HOME/raypipe/plans``, else ``~/.cache/raypipe/plans``. Entries are small (the
tokenizer's JSON dominates) and written atomically; an unreadable or unwritable cache is
ignored (the plan is made the slow way). Deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger("raypipe.plan")

CACHE_ENV = "RAYPIPE_CACHE_DIR"
DISABLED = frozenset({"off", "0", "false", "no", "none"})
FORMAT = 1  # bump when ModelFacts or what it is computed from changes meaning


@dataclass(frozen=True)
class ModelFacts:
    """The model-dependent part of an extraction plan (see ``plan.model_facts``)."""

    split_points: list[str]  # resolved module paths, in named_modules order
    model_type: str
    max_length: int          # resolved from --max-length / the model and --max-length-cap
    tokenizer_spec: dict     # backend_spec(tokenizer): what the tokenize tasks load
    row_width: int           # activation elements per stored row, over all split points


def cache_dir() -> Path | None:
    """The plans folder, or None when disabled (``RAYPIPE_CACHE_DIR=off``)."""
    root = os.environ.get(CACHE_ENV)
    if root is not None:
        if root.strip().lower() in DISABLED or not root.strip():
            return None
        return Path(root).expanduser() / "plans"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "raypipe" / "plans"


def facts_key(config, stamp: str | None) -> str | None:
    """The entry name for ``config``'s model facts, or None when they must not be cached."""
    from raypipe import __version__

    if not stamp or config.trust_remote_code:
        return None
    model = os.path.realpath(config.model) if os.path.isdir(config.model) else config.model
    fields = {
        "format": FORMAT, "raypipe": __version__, "transformers": _version("transformers"),
        "tokenizers": _version("tokenizers"), "model": model, "model_files": stamp,
        "auto_class": config.auto_class, "split_points": [str(p) for p in config.split_points],
        "padding_side": config.padding_side, "max_length": config.max_length,
        "max_length_cap": config.max_length_cap,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def load_facts(key: str | None) -> ModelFacts | None:
    """The cached facts under ``key``, or None (no cache, no entry, or an unreadable one)."""
    folder = cache_dir()
    if key is None or folder is None:
        return None
    path = folder / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        facts = ModelFacts(**data)
        _check(facts)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:  # a torn or foreign file: plan afresh
        log.debug("ignoring plan cache entry %s: %s", path, err)
        return None
    log.debug("model facts from the plan cache: %s", path)
    return facts


def save_facts(key: str | None, facts: ModelFacts) -> None:
    """Store ``facts`` under ``key`` (atomically); a cache that cannot be written is skipped."""
    folder = cache_dir()
    if key is None or folder is None:
        return
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(facts), fh)
        os.replace(tmp, folder / f"{key}.json")
        tmp = None
    except (OSError, TypeError, ValueError) as err:
        log.debug("plan cache not written (%s): %s", folder, err)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _check(facts: ModelFacts) -> None:
    """Raise ValueError unless ``facts`` has the shape ``plan.model_facts`` gives."""
    if not (isinstance(facts.split_points, list) and facts.split_points
            and all(isinstance(p, str) for p in facts.split_points)
            and isinstance(facts.model_type, str)
            and isinstance(facts.max_length, int) and facts.max_length > 0
            and isinstance(facts.tokenizer_spec, dict) and "json" in facts.tokenizer_spec
            and isinstance(facts.row_width, int) and facts.row_width >= 0):
        raise ValueError("entry does not hold model facts")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"
