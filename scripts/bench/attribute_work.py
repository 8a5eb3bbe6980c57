"""The work of a perturbation attribution job, rebuilt outside raypipe, and a plain loop over it.

``perturbed_sequences`` makes exactly the rows raypipe's model actors run (the same corpus
reader, tokenization, word units, masks, per-document seeds and baseline as
``raypipe/attribution/perturb_stage.py``; per document the original first, then its distinct
perturbed copies, ``distinct_masks``), so the plain loop below forwards the same sequences
raypipe does. (interpreto forwards every mask row: it does not deduplicate.) ``forward_loop`` is
the loop a user would write: rows sorted by length, fixed-size or token-budget batches, padded on
the right, ``model(...).logits`` under ``torch.inference_mode()``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.plain_loop import make_batches


@dataclass
class PerturbedWork:
    """All rows of one method over a corpus: ids and attention masks, one pair per forward row."""

    ids: list[np.ndarray]         # (l,) int64 per row
    attention: list[np.ndarray]   # (l,) int64 per row
    docs: int
    units: int
    pad_id: int
    seconds: float                # time to build them (tokenize + masks + perturb)

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> int:
        return int(sum(len(x) for x in self.ids))


def perturbed_sequences(corpus_path: str, model_dir: str, method: str, n_samples: int,
                        seed: int = 0, baseline: str = "mask") -> PerturbedWork:
    """The rows raypipe forwards for ``method`` on this corpus (original + distinct perturbed
    rows per doc)."""
    from transformers import AutoConfig

    from raypipe.attribution.masks import distinct_masks, doc_seed, make_masks
    from raypipe.attribution.perturb import perturbed_inputs
    from raypipe.attribution.perturb_stage import effective_baseline
    from raypipe.batching import tokenize_documents
    from raypipe.corpus import open_corpus
    from raypipe.extraction.forward import pad_token_id
    from raypipe.extraction.plan import model_max_length
    from raypipe.granularity import Granularity
    from raypipe.models.loading import load_tokenizer

    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_dir, trust_remote_code=False)
    max_length = model_max_length(AutoConfig.from_pretrained(model_dir), tokenizer)
    corpus = open_corpus(corpus_path)
    read = corpus.read_range(0, len(corpus))
    docs, _ = tokenize_documents(read.documents, tokenizer, max_length=max_length,
                                 overflow="truncate", granularity=Granularity.WORD)
    base = effective_baseline(baseline, tokenizer)
    ids, attention, units = [], [], 0
    for doc in docs:
        original = doc.windows[0]
        plan = make_masks(method, len(doc.units), n_samples=n_samples, seed=doc_seed(seed, doc.doc_id))
        distinct, _ = distinct_masks(plan.masks)
        rows, masks = perturbed_inputs(original, doc.units.members, distinct, baseline=base,
                                       tokenizer=tokenizer)
        ids.append(original)
        attention.append(np.ones_like(original))
        ids.extend(rows)
        attention.extend(masks)
        units += len(doc.units)
    return PerturbedWork(ids, attention, len(docs), units, pad_token_id(tokenizer),
                         time.perf_counter() - t0)


def _pad(work: PerturbedWork, rows: list[int], device: torch.device
         ) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(work.ids[i]) for i in rows)
    input_ids = torch.full((len(rows), longest), work.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(work.ids[i])
        input_ids[r, :n] = torch.from_numpy(np.asarray(work.ids[i], dtype=np.int64))
        mask[r, :n] = torch.from_numpy(np.asarray(work.attention[i], dtype=np.int64))
    return input_ids.to(device), mask.to(device)


def forward_loop(model, work: PerturbedWork, batches: list[list[int]]) -> float:
    """Seconds to pad and forward every batch on the model's device, keeping the logits on the
    host as a user would (which also waits for a GPU to finish each batch)."""
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        for rows in batches:
            input_ids, mask = _pad(work, rows, device)
            model(input_ids=input_ids, attention_mask=mask).logits.cpu().numpy()
    return time.perf_counter() - t0


def batches_for(work: PerturbedWork, scheme: tuple[str, int]) -> list[list[int]]:
    return make_batches([len(x) for x in work.ids], scheme)


def choose_scheme(model, work: PerturbedWork, candidates: list[tuple[str, int]],
                  sample: int = 400, rounds: int = 2) -> tuple[tuple[str, int], dict]:
    """The fastest batching scheme on an evenly spread sample of rows (best of ``rounds``)."""
    step = max(1, work.rows // sample)
    keep = list(range(0, work.rows, step))[:sample]
    sub = PerturbedWork([work.ids[i] for i in keep], [work.attention[i] for i in keep],
                        work.docs, work.units, work.pad_id, 0.0)
    forward_loop(model, sub, batches_for(sub, candidates[0])[:1])  # warm-up
    timings = {scheme: float("inf") for scheme in candidates}
    for _ in range(rounds):
        for scheme in candidates:
            timings[scheme] = min(timings[scheme], forward_loop(model, sub, batches_for(sub, scheme)))
    best = min(timings, key=timings.get)
    return best, {f"{k}={v}": round(t, 3) for (k, v), t in timings.items()}
