"""Stage 1 (CPU tasks): read a shard, tokenize, cut units, make masks and perturbed inputs.

Everything that needs no model happens here, so model actors only run packed forwards: each
distinct perturbed input once (``distinct_masks``), the original included only once.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np

from raypipe.attribution.masks import MaskPlan, distinct_masks, doc_seed, make_masks
from raypipe.attribution.perturb import perturbed_inputs
from raypipe.batching import TokenizedDoc, tokenize_documents
from raypipe.batching.backend import BackendTokenizer, encode_ids
from raypipe.corpus import CorpusSource
from raypipe.granularity import Granularity


@dataclass
class DocWork:
    """One document's attribution work, carried from stage 1 to stage 3."""

    doc: TokenizedDoc
    plan: MaskPlan | None = None                 # perturbation methods
    ids: np.ndarray | None = None                # (r, l) perturbed token ids to score
    attention: np.ndarray | None = None          # (r, l)
    index: np.ndarray | None = None              # (m,) mask row -> [original, ids rows]; None: ids
                                                 # row i is mask row i (no dedup)
    target_ids: np.ndarray | None = None         # generation: the given continuation (T,)
    target_text: str | None = None
    results: dict = field(default_factory=dict)  # filled by the actor


def effective_baseline(baseline: str, tokenizer) -> str | int:
    """``mask`` falls back to ``pad`` for tokenizers without a mask token (GPT-2, Llama)."""
    if baseline == "mask" and getattr(tokenizer, "mask_token_id", None) is None:
        return "pad"
    return int(baseline) if baseline.lstrip("-").isdigit() else baseline


def prepare_shard(batch: dict[str, np.ndarray], *, corpus: CorpusSource,
                  targets: CorpusSource | None, tokenizer: dict, max_length: int,
                  granularity: str, method: str, n_samples: int, seed: int,
                  baseline: str, gradient: bool, vocab_size: int | None = None
                  ) -> dict[str, np.ndarray]:
    """``tokenizer``: ``backend_spec(hf_tokenizer)``; the task runs on the Rust tokenizer alone
    (no transformers or torch import in this worker, see ``raypipe.batching.backend``).
    ``vocab_size``: rows of the model's embedding table, which continuation ids given as ids
    must index (default: the tokenizer's vocabulary)."""
    tokenizer = BackendTokenizer.from_spec(tokenizer)
    base = effective_baseline(baseline, tokenizer)
    payloads = []
    for shard_id, start, stop in zip(batch["shard_id"], batch["doc_start"], batch["doc_end"]):
        read = corpus.read_range(int(start), int(stop))
        docs, stats = tokenize_documents(read.documents, tokenizer, max_length=max_length,
                                         overflow="truncate", granularity=Granularity.parse(granularity))
        continuations, unusable = {}, {}
        if targets is not None:
            read_targets = targets.read_range(int(start), int(stop))
            unusable = dict(read_targets.problems)
            vocab = vocab_size or tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
            for d in read_targets.documents:
                bad = [i for i in d.token_ids or () if not 0 <= i < vocab]
                if bad:  # the model would fail on them (an index error), the job with it
                    unusable[d.position] = (f"token ids {bad[:5]} outside the model's "
                                            f"vocabulary [0, {vocab})")
                else:
                    continuations[d.position] = d
        work = []
        for doc in docs:
            item = DocWork(doc)
            if targets is not None and doc.position not in continuations:
                # a missing or non-text continuation: the document is skipped and reported,
                # never explained with a continuation the model generates instead
                item.results = {"skipped": "no usable continuation: "
                                + str(unusable.get(doc.position, "none read"))}
                work.append(item)
                continue
            if doc.position in continuations:  # text, or ids as given (none re-tokenized)
                given = continuations[doc.position]
                item.target_text = None if given.token_ids is not None else given.text
                item.target_ids = np.asarray(given.token_ids if given.token_ids is not None
                                             else encode_ids(tokenizer, given.text), dtype=np.int64)
            if not gradient:
                item.plan = make_masks(method, len(doc.units), n_samples=n_samples,
                                       seed=doc_seed(seed, doc.doc_id))
                rows, item.index = distinct_masks(item.plan.masks)
                item.ids, item.attention = perturbed_inputs(doc.windows[0], doc.units.members,
                                                            rows, baseline=base, tokenizer=tokenizer)
            work.append(item)
        counters = stats.as_dict() | {"decode_fallbacks": read.decode_fallbacks,
                                      "unreadable": len(read.problems),
                                      "problems": _problems(read.problems, unusable, targets)}
        payloads.append(pickle.dumps({"shard_id": int(shard_id), "doc_start": int(start),
                                      "doc_end": int(stop), "work": work, "stats": counters},
                                     protocol=pickle.HIGHEST_PROTOCOL))
    return {"shard_id": np.asarray(batch["shard_id"]), "payload": np.asarray(payloads, dtype=object)}


def _problems(corpus: list, continuations: dict, targets: CorpusSource | None, most: int = 100) -> list:
    """``(position, message)`` of rows the corpus or its continuation column could not give,
    at most ``most`` (the counts are in the stats)."""
    column = getattr(targets, "text_column", "target")
    out = [(int(p), str(m)) for p, m in corpus[:most]]
    out += [(int(p), f"continuation column {column!r}: {m}")
            for p, m in sorted(continuations.items())[: max(0, most - len(out))]]
    return out
