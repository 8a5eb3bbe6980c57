"""How many documents go into one shard, when the user did not say (``docs_per_shard: null``).

A shard is the unit that is tokenized, forwarded, held in an actor's memory as one table,
written and resumed. A fixed document count fits no corpus well: 512 one-line sentences are
~14k tokens (so each shard sorts too few sequences by length, pads more, and pays its dispatch
and write more often: on rt-polarity 2,048-document shards cut the model stage by 4% against
512), while 512 documents of 4,096 tokens at token granularity from a 4,096-wide model hold
~2M rows, 16 GiB a split point in float16, in one table. So the default is sized from the
corpus itself: a fixed, evenly spread sample of its documents is tokenized on the driver, and
the shard gets as many documents as keep it under all three bounds:

- ``SHARD_TOKENS`` tokens: the payload shipped to the actor and the work lost when a shard is
  redone stay small (2^18 tokens is ~1 s of a 125M model on a GPU, ~10 s of an 8B one);
- ``SHARD_BYTES`` of activations: the table the actor holds (twice, with two shards in flight)
  while the shard is built and written;
- at least ``SHARDS_PER_ACTOR`` shards per actor, so that the pool stays busy to the end and
  the progress bar moves.

The sample is the same for the same corpus, so the choice is reproducible; a resumed job takes
the value its store's manifest recorded anyway, so a changed rule never reshuffles an existing
store's shards.
"""
from __future__ import annotations

import math

SHARD_TOKENS = 1 << 18
SHARD_BYTES = 256 << 20
SHARDS_PER_ACTOR = 4
SAMPLE_WINDOWS = 8     # evenly spaced runs of consecutive documents ...
SAMPLE_PER_WINDOW = 32  # ... of this many each: at most 256 documents tokenized on the driver


def docs_per_shard(n_docs: int, tokens_per_doc: float, rows_per_doc: float, row_bytes: int,
                   actors: int, *, shard_tokens: int = SHARD_TOKENS, shard_bytes: int = SHARD_BYTES,
                   shards_per_actor: int = SHARDS_PER_ACTOR) -> int:
    """The largest document count (at least 1) under the three bounds of the module docstring.

    ``tokens_per_doc``/``rows_per_doc``: the sample's means (empty documents count, as 0);
    ``row_bytes``: the bytes of one stored row's activations, all split points together.
    """
    bounds = [math.ceil(n_docs / (shards_per_actor * max(actors, 1)))]
    if tokens_per_doc > 0:
        bounds.append(int(shard_tokens / tokens_per_doc))
    if rows_per_doc * row_bytes > 0:
        bounds.append(int(shard_bytes / (rows_per_doc * row_bytes)))
    return max(1, min(bounds))


def sample_ranges(n_docs: int, windows: int = SAMPLE_WINDOWS,
                  per_window: int = SAMPLE_PER_WINDOW) -> list[tuple[int, int]]:
    """``windows`` runs of ``per_window`` consecutive positions spread evenly over ``[0, n_docs)``
    (the whole corpus when it is that small): few seeks for line-indexed files, and not only
    the corpus's first documents, which are often its headers or its shortest ones."""
    if n_docs <= windows * per_window:
        return [(0, n_docs)] if n_docs else []
    starts = [round(i * (n_docs - per_window) / (windows - 1)) for i in range(windows)]
    return [(s, s + per_window) for s in starts]


def module_width(module, default: int) -> int:
    """The width of what ``module`` outputs, estimated without running it (it lives on the meta
    device): the output size of its last submodule that declares one (a Linear's
    ``out_features``, GPT-2's Conv1D ``nf``, a LayerNorm's shape, an embedding's dimension, a
    norm's 1-D weight), else ``default`` (the model's hidden size)."""
    for sub in reversed(list(module.modules())):
        for name in ("out_features", "nf", "embedding_dim"):
            value = getattr(sub, name, None)
            if isinstance(value, int) and value > 0:
                return value
        shape = getattr(sub, "normalized_shape", None)
        if isinstance(shape, (tuple, list)) and shape:
            return int(shape[-1])
        weight = getattr(sub, "weight", None)
        if weight is not None and getattr(weight, "ndim", 0) == 1 and not list(sub.children()):
            return int(weight.shape[0])
    return default


def hidden_size(model_config) -> int:
    """The model's hidden size from its config (0 when it names none)."""
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0
