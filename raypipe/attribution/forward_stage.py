"""Stage 2 (model actors): packed forwards of perturbed inputs, or gradients, per shard.

The perturbed rows of every document in a shard are sorted by length and packed into
token-budget batches (peers run one document, or one perturbation, per forward). The actor
returns, per document, the scores of its rows for the explained targets; estimation happens
back on CPU tasks. Gradient methods are computed here in full (they need the model) and
aggregated to units.
"""
from __future__ import annotations

import pickle
import time

import numpy as np
import torch

from raypipe.attribution.config import AttributeConfig
from raypipe.attribution.perturb import delete_removed, start_token_id
from raypipe.attribution.perturb_stage import effective_baseline
from raypipe.attribution.scoring import (apply_mode, class_logits, generate_target,
                                         generation_scores, pools_last_token)
from raypipe.batching import pad_batch, plan_micro_batches, resolve_batch_tokens
from raypipe.batching.token_budget import GPU_BATCH_TOKENS, GRADIENT_GPU_BATCH_TOKENS
from raypipe.config import ConfigError
from raypipe.extraction.forward import pad_token_id
from raypipe.frozen_heap import loading_frozen_heap
from raypipe.granularity import aggregate
from raypipe.runtime import actor_lanes, actor_torch_threads, maybe_die
from raypipe.torch_thread import TorchLanes, TorchThread


def task_kind(task: str, model) -> str:
    """classification (a sequence classifier) or generation (a causal LM)."""
    name = type(model).__name__
    kind = task
    if task == "auto":
        if name.endswith("ForSequenceClassification"):
            kind = "classification"
        elif name.endswith(("ForCausalLM", "LMHeadModel")):
            kind = "generation"
        else:
            raise ConfigError(
                f"{name} has neither a classification head nor an LM head: attribute a fine-tuned "
                "classifier or a causal LM, or pass --auto-class AutoModelForSequenceClassification "
                "(its new head is random) and --task classification")
    return kind


def per_mask_row(scored: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """One document's scores, ``scored`` = [original, distinct rows...], back to one row per
    mask row (``DocWork.index``), or the rows after the original when nothing was deduplicated."""
    return scored[1:] if index is None else scored[index]


class ScoreShard:
    """Callable class for ``map_batches``: a shard's work items in, with model results filled in."""

    def __init__(self, config: dict) -> None:
        import transformers

        transformers.logging.disable_progress_bar()
        self.config = AttributeConfig(**config)
        # model load, forwards and gradients on the lanes, this thread first (raypipe.torch_thread)
        self._torch = TorchThread()
        with loading_frozen_heap():  # see raypipe.frozen_heap
            self._torch.run(self._load)
        self._lanes = TorchLanes(self._torch, len(self.models), self._threads_per_lane)

    def _load(self) -> None:
        from raypipe.models.loading import actor_device_map, load_model_and_tokenizer
        from raypipe.models.replicas import can_share_weights, shared_weight_copy

        threads = actor_torch_threads(self.config.torch_threads, self.config.num_cpus,
                                      self.config.actors)
        device_map = actor_device_map(self.config.num_gpus)
        # gradients keep one lane with every thread (their backward passes would share the
        # replicas' parameters); packed forwards get one lane per model copy (TorchLanes)
        lanes, self._threads_per_lane = actor_lanes(
            1 if self.config.is_gradient else self.config.cpu_replicas, threads,
            on_gpu=device_map != "cpu")
        torch.set_num_threads(self._threads_per_lane)
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.config.model, auto_class=self.config.auto_class, dtype=self.config.dtype,
            device_map=device_map, trust_remote_code=self.config.trust_remote_code)
        self.models = [self.model]
        if lanes > 1 and can_share_weights(self.model):
            self.models += [shared_weight_copy(self.model) for _ in range(lanes - 1)]
        if len(self.models) < lanes:  # a model sharded by a device map: one lane, every thread
            self._threads_per_lane = threads
        self.kind = task_kind(self.config.task, self.model)
        self.pad_id = pad_token_id(self.tokenizer)
        # a left-to-right model (LM, decoder classifier) sees removed units deleted
        # (perturb.delete_removed)
        self.deletes_removed = self.kind == "generation" or pools_last_token(self.model)
        self.start_id = start_token_id(self.tokenizer)
        self.device = next(self.model.parameters()).device
        self.batch_tokens = resolve_batch_tokens(
            self.config.batch_tokens, self.device,
            gpu_default=GRADIENT_GPU_BATCH_TOKENS if self.config.is_gradient else GPU_BATCH_TOKENS)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["payload"]:
            shard = pickle.loads(payload)
            maybe_die(shard["shard_id"])
            self._torch.run(self._score_shard, shard)
            out.append(pickle.dumps(shard, protocol=pickle.HIGHEST_PROTOCOL))
        return {"shard_id": np.asarray(batch["shard_id"]), "payload": np.asarray(out, dtype=object)}

    def _score_shard(self, shard: dict) -> None:
        """On the torch thread: fill in the model results of the shard's work items."""
        t0 = time.perf_counter()
        work = shard["work"]
        if self.config.is_gradient:
            self.gradients(work)
        elif self.kind == "classification":
            self.classify_perturbations(work)
        else:
            self.score_continuations(work)
        # this shard's scoring interval, ending at "busy_until" (see raypipe.busy_time)
        shard["stats"]["model_seconds"] = time.perf_counter() - t0
        shard["stats"]["busy_until"] = time.time()
        shard["stats"]["forward_rows"] = sum(0 if w.ids is None else len(w.ids) + 1 for w in work)
        shard["stats"]["mask_rows"] = sum(0 if w.ids is None else 1 + (
            len(w.ids) if w.index is None else len(w.index)) for w in work)

    # -- perturbation methods --------------------------------------------------------------
    def classify_perturbations(self, work: list) -> None:
        """All rows of all documents, packed: the original first, then its distinct perturbations."""
        seqs = [row for w in work for row in self._rows(w)]
        scores, logits = self._class_scores(seqs)
        start = 0
        for w in work:
            m = len(w.ids) + 1
            targets = self._targets(logits[start])
            w.results = {"targets": targets, "original": scores[start, targets],
                         "scores": per_mask_row(scores[start:start + m], w.index)[:, targets]}
            start += m

    def _rows(self, w) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, attention) of a document's original, then of its distinct perturbed rows."""
        original = w.doc.windows[0]
        rows = [(original, np.ones_like(original))]
        if not self.deletes_removed:
            return rows + list(zip(w.ids, w.attention))
        kept = (delete_removed(ids, att, self.start_id) for ids, att in zip(w.ids, w.attention))
        return rows + [(ids, np.ones_like(ids)) for ids in kept]

    def _score_packed(self, seqs: list[tuple[np.ndarray, np.ndarray]], width: int,
                      score) -> np.ndarray:
        """``(rows, width)`` float32: ``score(model, ids, mask)`` over length-sorted token-budget
        batches of ``seqs`` (ids, attention), back in the order of ``seqs``; the batches are
        shared out among the lanes, each scoring with its own model copy."""
        lengths = [len(ids) for ids, _ in seqs]
        out = np.zeros((len(seqs), width), np.float32)

        def run(lane: int, batch: np.ndarray) -> None:
            ids, mask = pad_batch([seqs[i][0] for i in batch], self.pad_id,
                                  masks=[seqs[i][1] for i in batch])
            out[batch] = score(self.models[lane], ids, mask)   # rows no other batch writes

        self._lanes.drain(run, plan_micro_batches(lengths, self.batch_tokens))
        return out

    def _class_scores(self, seqs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, C)`` mode-transformed scores and raw logits, in the order of ``seqs``."""
        n_classes = int(self.model.config.num_labels)

        def score(model, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                raw = class_logits(model, mask.to(self.device),
                                   input_ids=ids.to(self.device)).float()
            return torch.cat([apply_mode(raw, self.config.mode), raw], 1).cpu().numpy()

        both = self._score_packed(seqs, 2 * n_classes, score)
        return both[:, :n_classes], both[:, n_classes:]

    def _targets(self, original_logits: np.ndarray) -> list[int]:
        targets = self.config.targets or [int(original_logits.argmax())]
        n_classes = len(original_logits)
        bad = [t for t in targets if t >= n_classes]
        if bad:
            raise ValueError(f"target class {bad} out of range: the model has {n_classes} classes")
        return targets

    def score_continuations(self, work: list) -> None:
        """Causal LM: the continuation's scores after every perturbed prompt, the rows of all
        documents packed together (each row with its own document's continuation)."""
        items = [(w, t) for w in work if (t := self._continuation(w)) is not None]
        seqs, targets = [], []
        for w, target_ids in items:
            rows = self._rows(w)
            seqs += rows
            targets += [target_ids] * len(rows)
        scores = self._score_continuation_rows(seqs, targets)
        start = 0
        for w, target_ids in items:
            m = len(w.ids) + 1
            doc_scores = np.stack(scores[start:start + m])          # (m, T)
            w.results = self._generation_result(w, target_ids, doc_scores[0])
            w.results["scores"] = per_mask_row(doc_scores, w.index)
            start += m

    def _score_continuation_rows(self, seqs: list[tuple[np.ndarray, np.ndarray]],
                                 targets: list[np.ndarray]) -> list[np.ndarray]:
        """``(T_i,)`` float32 scores of continuation ``targets[i]`` after prompt ``seqs[i]``.

        Rows whose continuations have the same length are packed together (the rows of many
        documents, length-sorted), so a batch's padded size is exactly ``n x (longest prompt +
        T)`` and stays within the token budget.
        """
        by_length: dict[int, list[int]] = {}
        for i, t in enumerate(targets):
            by_length.setdefault(len(t), []).append(i)
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(seqs)
        batches = []
        for width, rows in by_length.items():
            lengths = [len(seqs[i][0]) + width for i in rows]
            batches += [[rows[b] for b in batch] for batch in plan_micro_batches(lengths, self.batch_tokens)]

        def run(lane: int, batch: list[int]) -> None:
            ids, mask = pad_batch([seqs[i][0] for i in batch], self.pad_id,
                                  masks=[seqs[i][1] for i in batch])
            target = torch.as_tensor(np.stack([targets[i] for i in batch]))   # (n, T)
            scores = generation_scores(self.models[lane], ids, mask, target, self.config.mode)
            for i, row in zip(batch, scores.float().cpu().numpy()):
                out[i] = row                                   # slots no other batch writes

        self._lanes.drain(run, batches)
        return out

    def _continuation(self, w) -> np.ndarray | None:
        """The explained continuation (given, else generated); None, and the document marked
        skipped, when it is empty or the CPU stage already skipped it (its continuation column
        gave nothing usable)."""
        if "skipped" in w.results:
            return None
        target_ids = w.target_ids
        if target_ids is None:
            target_ids = generate_target(self.model, self.tokenizer, torch.as_tensor(w.doc.windows[0]),
                                         self.config.max_new_tokens).cpu().numpy()
        if len(target_ids) == 0:
            w.results = {"skipped": "empty continuation"}
            return None
        return target_ids

    def _generation_result(self, w, target_ids: np.ndarray, original: np.ndarray) -> dict:
        return {"targets": [0], "original": original, "target_ids": target_ids,
                "target_tokens": self.tokenizer.convert_ids_to_tokens(target_ids.tolist()),
                "target_text": w.target_text if w.target_text is not None
                else self.tokenizer.decode(target_ids)}

    # -- gradient methods ------------------------------------------------------------------
    def gradients(self, work: list) -> None:
        from raypipe.attribution.gradients import gradient_attributions

        c = self.config
        # "remove" has no embedding: the closest gradient baseline is the zero embedding
        baseline = "zero" if c.baseline == "remove" else effective_baseline(c.baseline, self.tokenizer)
        common = dict(mode=c.mode, n_samples=c.n_samples, seed=c.seed, baseline=baseline,
                      reduction=c.effective_reduction, tokenizer=self.tokenizer,
                      batch_tokens=self.batch_tokens)
        if self.kind == "generation":
            for w in work:
                target_ids = self._continuation(w)
                if target_ids is None:
                    continue
                original = torch.as_tensor(w.doc.windows[0])
                ones = torch.ones_like(original)[None]
                attr = gradient_attributions(c.method, self.model, original[None], ones, None,
                                             kind="generation", target_ids=torch.as_tensor(target_ids),
                                             **common)[0]                      # (T, l)
                orig = generation_scores(self.model, original[None], ones, torch.as_tensor(target_ids),
                                         c.mode)[0].float().cpu().numpy()
                w.results = self._generation_result(w, target_ids, orig)
                w.results["unit_scores"] = self._to_units(attr, w)
            return
        seqs = [(w.doc.windows[0], np.ones_like(w.doc.windows[0])) for w in work]
        scores, logits = self._class_scores(seqs)
        targets = [self._targets(logits[d]) for d in range(len(work))]
        lengths = [len(w.doc.windows[0]) for w in work]
        per_doc: list[list[torch.Tensor]] = [[] for _ in work]
        for batch in plan_micro_batches(lengths, self.batch_tokens):
            ids, mask = pad_batch([work[i].doc.windows[0] for i in batch], self.pad_id)
            for slot in range(len(targets[batch[0]])):
                target = torch.as_tensor([targets[i][slot] for i in batch])
                attr = gradient_attributions(c.method, self.model, ids, mask, target,
                                             kind="classification", **common)  # (n, l)
                for row, i in enumerate(batch):
                    per_doc[i].append(attr[row, :lengths[i]])
        for d, w in enumerate(work):
            w.results = {"targets": targets[d], "original": scores[d, targets[d]],
                         "unit_scores": self._to_units(torch.stack(per_doc[d]), w)}

    def _to_units(self, token_scores: torch.Tensor, w) -> np.ndarray:
        """``(T, t)`` token scores → ``(T, g)`` unit scores with the configured aggregation."""
        per_target = token_scores.detach().float().cpu().T          # (t, T): units reduce over tokens
        return aggregate(per_target, w.doc.units, self.config.aggregation).T.numpy()

