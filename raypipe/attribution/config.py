"""The attribution job's typed config (YAML keys = field names = ``raypipe attribute`` flags)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raypipe.config import (CPU_REPLICAS_HELP, DTYPES, ConfigError, _opt, config_hash,
                            paths_as_strings, require_at_least_one, require_fields)
from raypipe.granularity import Aggregation, Granularity

PERTURBATION = ("occlusion", "feature_ablation", "lime", "kernel_shap", "sobol")
GRADIENT = ("saliency", "input_x_gradient", "integrated_gradients", "smooth_grad", "gradient_shap")
METHODS = PERTURBATION + GRADIENT
TASKS = ("auto", "classification", "generation")


@dataclass
class AttributeConfig:
    """An attribution job: corpus → masks (CPU) → packed forwards (actors) → scores (CPU)."""

    model: str = _opt("", "classifier (sequence classification) or causal LM: folder or hub id",
                      required=True)
    corpus: Any = _opt("", "corpus, as for extract (.txt, .jsonl, .csv, .parquet, ...)", required=True)
    out: str = _opt("", "output attribution store directory", required=True)
    method: str = _opt("occlusion", "occlusion, feature_ablation, lime, kernel_shap, sobol, saliency, "
                       "input_x_gradient, integrated_gradients, smooth_grad, gradient_shap")
    granularity: str = _opt("word", "explained units: all_tokens, token, word, sentence")
    target: str = _opt("predicted", "classification target: 'predicted', a class index, or several "
                       "comma-separated (e.g. 0,2)")
    target_column: str | None = _opt(None, "generation: column holding the continuation to explain: "
                                     "text, or token ids (a JSONL array, a Parquet list<int>); "
                                     "default: the model's greedy continuation")
    max_new_tokens: int = _opt(8, "generation: tokens to generate when no target column is given")
    task: str = _opt("auto", "classification or generation (auto: from the model's architecture)")
    mode: str = _opt("logits", "score explained: logits, softmax, log_softmax")
    n_samples: int = _opt(64, "perturbations per document: lime scores n + the original, "
                          "kernel_shap n coalitions (all 2^g when that is fewer: exact), sobol "
                          "n rounded up to a power of 2, times g + 2 rows for g units; or "
                          "steps / samples of integrated_gradients, smooth_grad, gradient_shap")
    seed: int = _opt(0, "seed: the same config gives the same scores whatever the actors/batches")
    baseline: str = _opt("mask", "what replaces a removed unit: mask, pad, unk, remove (an "
                         "encoder: dropped from the attention mask; a causal model: its tokens "
                         "deleted), or a token id; 'mask' falls back to pad without one; for "
                         "gradient methods the baseline token's embedding, 'remove' = zeros")
    reduction: str = _opt("auto", "gradient methods: reduction over the embedding dim: sum (signed; "
                          "IG completeness), l2, abs_sum; auto = l2 for saliency and smooth_grad "
                          "(LayerNorm makes their plain gradient sum to ~0), sum otherwise")
    aggregation: str = _opt("sum", "gradient methods: token scores → unit scores (sum, mean, max, "
                            "min, signed_max)")
    text_column: str = _opt("text", "text column of JSONL/CSV/Parquet corpora")
    id_column: str | None = _opt(None, "column to use as doc_id")
    corpus_split: str = _opt("train", "split of a saved DatasetDict or an hf:NAME corpus")
    max_docs: int | None = _opt(None, "only the first N documents")
    max_length: int | None = _opt(None, "tokens per document (longer ones are truncated and counted)")
    dtype: str = _opt("float32", "model dtype: float32, float16, bfloat16")
    auto_class: str | None = _opt(None, "transformers auto class (default: from the config)")
    trust_remote_code: bool = _opt(False, "allow models with custom code")
    actors: int = _opt(1, "model actors")
    num_gpus: float = _opt(0.0, "GPUs per model actor")
    num_cpus: float = _opt(1.0, "CPUs reserved per model actor")
    torch_threads: int | None = _opt(None, "torch threads per actor (default: --num-cpus, or this "
                                     "node's cores / actors when that is more)")
    cpu_replicas: int | None = _opt(None, CPU_REPLICAS_HELP + "; perturbation methods only, "
                                    "gradient methods run one")
    batch_tokens: int | None = _opt(None, "padded tokens per packed forward batch "
                                     "(default: 8192 on a GPU, 1024 on CPU)")
    docs_per_shard: int = _opt(64, "documents per output shard (the unit of resuming)")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else a local Ray)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        require_fields(self, "model", "corpus", "out")
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not one of {', '.join(METHODS)}")
        gran = Granularity.parse(self.granularity)
        if gran not in (Granularity.ALL_TOKENS, Granularity.TOKEN, Granularity.WORD,
                        Granularity.SENTENCE):
            raise ConfigError(f"granularity={self.granularity!r}: attributions explain all_tokens, "
                              "token, word or sentence units")
        self.granularity = gran.value
        self.aggregation = Aggregation.parse(self.aggregation).value
        for name, allowed in (("task", TASKS), ("mode", ("logits", "softmax", "log_softmax")),
                              ("reduction", ("auto", "sum", "l2", "abs_sum")), ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        self.baseline = str(self.baseline)
        if self.baseline not in ("mask", "pad", "unk", "remove") and not self.baseline.lstrip("-").isdigit():
            raise ConfigError(f"baseline={self.baseline!r}: use mask, pad, unk, remove or a token id")
        self.target = str(self.target)
        if self.targets is not None and any(t < 0 for t in self.targets):
            raise ConfigError(f"target={self.target!r}: class indices must be >= 0")
        require_at_least_one(self, "n_samples", "actors", "batch_tokens", "docs_per_shard",
                             "max_new_tokens", "cpu_replicas")

    @property
    def effective_reduction(self) -> str:
        """``auto``: a LayerNorm after the embeddings ignores shifts of all coordinates, so a
        plain gradient sums to ~0 over the embedding dim (BERT, GPT-2); its L2 norm is the
        usual saliency. Methods that multiply by the input keep the signed sum."""
        if self.reduction != "auto":
            return self.reduction
        return "l2" if self.method in ("saliency", "smooth_grad") else "sum"

    @property
    def is_gradient(self) -> bool:
        return self.method in GRADIENT

    @property
    def targets(self) -> list[int] | None:
        """Class indices to explain, or None for the predicted class."""
        if self.target.strip().lower() == "predicted":
            return None
        try:
            return [int(t) for t in self.target.split(",") if t.strip()]
        except ValueError as err:
            raise ConfigError(f"target={self.target!r}: use 'predicted', an index or 0,2") from err

    def parameters(self, **resolved) -> dict:
        """What defines the scores besides the model and the text: stored on every row of the
        store (``parameters``, JSON), so rows of several stores stay self-describing.
        ``resolved``: values the plan settled (the model's max_length, the baseline a
        tokenizer without a mask token falls back to) replace the configured ones."""
        keys = ["granularity", "mode", "seed", "baseline", "max_length", "target"]
        if self.method in ("lime", "kernel_shap", "sobol", "integrated_gradients", "smooth_grad",
                           "gradient_shap"):
            keys.append("n_samples")
        if self.target_column or self.task == "generation":
            keys += ["target_column", "max_new_tokens"]
        out = {k: getattr(self, k) for k in keys}
        if self.is_gradient:
            out.update(reduction=self.effective_reduction, aggregation=self.aggregation)
        out.update({k: v for k, v in resolved.items() if k in out})
        return out

    def to_dict(self) -> dict:
        import dataclasses

        d = dataclasses.asdict(self)
        if not isinstance(d["corpus"], str):
            d["corpus"] = f"<python list of {len(self.corpus)} documents>"
        return d

    def config_hash(self, corpus_fingerprint: dict | None = None, *,
                    model_files: bool = True) -> str:
        return config_hash(self.to_dict(), corpus_fingerprint, model_files=model_files)
