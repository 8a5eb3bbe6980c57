"""What a job will do, decided on the driver before any Ray work starts.

Split points are resolved on a weightless copy of the model (accelerate's
``init_empty_weights``), so a wrong split point or an unknown model fails in a second, with the
valid choices listed, instead of after actors have loaded weights — and the driver never holds
the weights of a large model. What that copy tells (``ModelFacts``) is remembered per model and
options (see plan_cache), so a later job on the same model plans without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from raypipe.config import ConfigError, ExtractConfig, model_stamp
from raypipe.corpus import CorpusSource, open_corpus
from raypipe.extraction.plan_cache import ModelFacts, facts_key, load_facts, save_facts


@dataclass
class ExtractPlan:
    corpus: CorpusSource
    n_docs: int
    split_points: list[str]
    max_length: int
    tokenizer_name: str
    model_type: str
    tokenizer_spec: dict  # backend_spec(tokenizer): what the tokenize tasks load
    shards: list[tuple[int, int, int]]  # (shard_id, doc_start, doc_end)
    docs_per_shard: int = 0  # as given, or sized from the corpus (see shard_sizing)
    facts_cached: bool = False  # the model facts came from the plan cache
    model_files: str | None = None  # model_stamp(model), read once for the cache key and manifest


def plan_extraction(config: ExtractConfig) -> ExtractPlan:
    corpus = open_corpus(config.corpus, text_column=config.text_column, id_column=config.id_column,
                         format=config.corpus_format, split=config.corpus_split)
    n_docs = len(corpus) if config.max_docs is None else min(len(corpus), config.max_docs)
    stamp = model_stamp(config.model)
    key = facts_key(config, stamp)
    facts = load_facts(key)
    cached = facts is not None
    if facts is None:
        facts = model_facts(config)
        save_facts(key, facts)
    step = config.docs_per_shard or _recorded_docs_per_shard(config.out) or _sized_docs_per_shard(
        config, corpus, n_docs, facts)
    shards = [(i, start, min(start + step, n_docs)) for i, start in enumerate(range(0, n_docs, step))]
    return ExtractPlan(corpus, n_docs, facts.split_points, facts.max_length, config.model,
                       facts.model_type, facts.tokenizer_spec, shards, step, facts_cached=cached,
                       model_files=stamp)


def model_facts(config: ExtractConfig) -> ModelFacts:
    """Resolve and check the model-dependent settings on a weightless copy of the model.

    Raises:
        ModelLoadError: an unknown model. SplitPointError: a wrong split point (the message
            lists the closest valid ones). ConfigError: left padding for an encoder, or a
            ``max_length`` beyond the position table.
    """
    from raypipe.batching.backend import backend_spec
    from raypipe.extraction.shard_sizing import hidden_size, module_width
    from raypipe.models import resolve_split_points
    from raypipe.models.loading import is_causal_config
    from raypipe.models.meta_model import load_meta_model

    meta, tokenizer = load_meta_model(config.model, auto_class=config.auto_class,
                                      trust_remote_code=config.trust_remote_code)
    split_points = resolve_split_points(meta, config.split_points)
    if config.padding_side == "left" and not is_causal_config(meta.config):
        raise ConfigError(
            f"padding_side='left' with {type(meta).__name__}: an encoder counts positions from the "
            "first slot, so left padding would shift every real token's position; use right "
            "padding (the default), which is exact for encoders and causal LMs alike")
    max_length = resolve_max_length(config.max_length, meta, tokenizer)
    if config.max_length is None and config.max_length_cap is not None:
        max_length = min(max_length, config.max_length_cap)
    width = hidden_size(meta.config)
    row_width = sum(module_width(meta.get_submodule(p), width) for p in split_points)
    return ModelFacts(split_points=split_points, model_type=getattr(meta.config, "model_type", "?"),
                      max_length=max_length, tokenizer_spec=backend_spec(tokenizer),
                      row_width=row_width)


def _recorded_docs_per_shard(out: str) -> int | None:
    """What an existing store at ``out`` was cut by, so that resuming it with the default
    keeps its shards whatever a newer sizing rule would choose (None: no store yet)."""
    from raypipe.store.layout import resolve_store
    from raypipe.store.manifest import read_manifest

    try:
        manifest = read_manifest(*resolve_store(out))
    except (OSError, ValueError):
        return None  # no readable store: StoreWriter reports a foreign manifest itself
    value = (manifest or {}).get("docs_per_shard")
    return value if isinstance(value, int) and value > 0 else None


def _sized_docs_per_shard(config: ExtractConfig, corpus, n_docs: int, facts: ModelFacts) -> int:
    """``docs_per_shard`` from a sample of the corpus, tokenized as the tokenize tasks will
    (see shard_sizing)."""
    from raypipe.batching import tokenize_documents
    from raypipe.batching.backend import BackendTokenizer
    from raypipe.extraction.shard_sizing import docs_per_shard, sample_ranges
    from raypipe.granularity import Granularity
    from raypipe.store.layout import check_dtype

    ranges = sample_ranges(n_docs)
    if not ranges:
        return 1
    granularity = Granularity.parse(config.granularity)
    tokenizer = BackendTokenizer.from_spec(facts.tokenizer_spec)
    docs = tokens = rows = 0
    for start, stop in ranges:
        read = corpus.read_range(start, stop)
        tokenized, _ = tokenize_documents(read.documents, tokenizer, max_length=facts.max_length,
                                          overflow=config.overflow, granularity=granularity)
        docs += stop - start
        tokens += sum(d.n_tokens for d in tokenized)
        rows += sum(len(d.units.members) for d in tokenized)
    row_bytes = check_dtype(config.store_dtype)[0] * facts.row_width
    return docs_per_shard(n_docs, tokens / docs, rows / docs, row_bytes, config.actors)


def model_max_length(model_config, tokenizer) -> int:
    """The longest sequence the model takes: its position table, capped by the tokenizer."""
    limits = [getattr(model_config, name, None) for name in
              ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")]
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    return min(limits) if limits else 512


def position_table_size(model) -> int | None:
    """Rows of the model's learned absolute position table (BERT, GPT-2, RoBERTa...), net of a
    padding offset (RoBERTa counts positions from ``padding_idx + 1``); None for models whose
    positions are computed (rotary, ALiBi), which take longer inputs without an index error."""
    import torch

    sizes = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Embedding) and ("position" in leaf or leaf == "wpe"):
            offset = 0 if module.padding_idx is None else module.padding_idx + 1
            sizes.append(module.num_embeddings - offset)
    return min(sizes) if sizes else None


def resolve_max_length(requested: int | None, model, tokenizer) -> int:
    """``requested`` (checked against the model's position table), else the model's maximum.

    Raises:
        ConfigError: ``requested`` exceeds the position table, which would fail with an index
            error inside every actor (or silently wrap on some devices).
    """
    if requested is None:
        return model_max_length(model.config, tokenizer)
    table = position_table_size(model)
    if table is not None and requested > table:
        raise ConfigError(f"max_length={requested} is longer than {type(model).__name__}'s "
                          f"position table ({table} positions); use --max-length {table} or less, "
                          "or --overflow window to keep every token of longer documents")
    return requested
