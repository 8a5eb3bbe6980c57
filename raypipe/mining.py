"""`raypipe mine`: extract → fit → interpret → report as one resumable job.

Each stage writes into its own folder under ``out`` and is resumable on its own terms: the
extraction skips complete shards, the trainer resumes from its checkpoint (or is skipped when
its dictionary exists), the interpretation is skipped when its summary exists for the same
dictionary, and the report is cheap and always rewritten. So re-running the same command after
any crash finishes the job.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.config import RUNTIME_ONLY, _opt, paths_as_strings, require_fields

log = logging.getLogger("raypipe.mine")


@dataclass
class MineConfig:
    """Concept mining in one command: activations, a dictionary, its interpretation, a report."""

    model: str = _opt("", "model folder or hub id", required=True)
    corpus: Any = _opt("", "corpus (as for extract)", required=True)
    out: str = _opt("", "output folder: activations/, concepts/, interpretation/, report.html",
                    required=True)
    split_point: str = _opt("-1", "one split point: block index or module path")
    granularity: str = _opt("token", "units: token, word, sentence, ...")
    aggregation: str = _opt("mean", "aggregation for word/sentence/sample units")
    text_column: str = _opt("text", "text column of table corpora")
    max_docs: int | None = _opt(None, "only the first N documents")
    max_length: int | None = _opt(None, "tokens per document (default: the model's maximum, at "
                                  "most 256)")
    method: str = _opt("topk_sae", "dictionary method (see `raypipe fit --help`)")
    concepts: int = _opt(128, "number of concepts")
    top_k: int = _opt(8, "active concepts per unit (TopK SAEs)")
    epochs: int = _opt(3, "SAE passes over the activations")
    batch_size: int = _opt(1024, "SAE batch size")
    seed: int = _opt(0, "seed")
    top_activations: int = _opt(20, "top units kept per concept")
    docs_per_shard: int | None = _opt(None, "documents per activation shard, the unit of resuming "
                                      "(default: sized from the corpus, as for raypipe extract)")
    holdout_shards: int | None = _opt(None, "last N activation shards held out for the metrics "
                                      "(default: 1 when there are 2 or more, else 0: in-sample)")
    actors: int = _opt(1, "model actors for the extraction")
    num_gpus: float = _opt(0.0, "GPUs per model actor and for the trainer")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else local)")
    progress: bool = _opt(True, "show progress bars")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        require_fields(self, "model", "corpus", "out")

    @property
    def paths(self) -> dict[str, Path]:
        root = Path(self.out)
        return {"activations": root / "activations", "concepts": root / "concepts",
                "interpretation": root / "interpretation", "report": root / "report.html"}


def mine_concepts(config: MineConfig) -> dict:
    """Run every stage that is not finished yet; returns what the report needs to be found."""
    # The later stages' modules import torch: they load when their stage starts, so that the
    # extraction's Ray starts while its plan thread imports torch (see raypipe.granularity).
    from raypipe.concepts.fit_config import FitConfig
    from raypipe.concepts.overcomplete_import import require_overcomplete
    from raypipe.config import ExtractConfig
    from raypipe.extraction import extract_activations
    from raypipe.interpretation.concept_gradient_job import concepts_fingerprint
    from raypipe.interpretation.interpret_config import InterpretConfig

    require_overcomplete()  # stage 2 needs it: say so before stage 1 runs for minutes
    p = config.paths
    Path(config.out).mkdir(parents=True, exist_ok=True)
    log.info("stage 1/4: extract activations -> %s", p["activations"])
    extracted = extract_activations(ExtractConfig(
        model=config.model, corpus=config.corpus, out=str(p["activations"]),
        split_points=[config.split_point], granularity=config.granularity,
        aggregation=config.aggregation, text_column=config.text_column, max_docs=config.max_docs,
        max_length=config.max_length, max_length_cap=256, docs_per_shard=config.docs_per_shard,
        actors=config.actors,
        num_gpus=config.num_gpus, address=config.address, progress=config.progress))
    holdout = config.holdout_shards
    if holdout is None:
        shards = extracted.shards_written + extracted.shards_skipped
        holdout = 1 if shards >= 2 else 0
        if holdout == 0:
            log.warning("the activations fill one shard: the dictionary's metrics are measured on "
                        "its training rows (lower --docs-per-shard to hold a shard out)")
    fit = FitConfig(store=str(p["activations"]), out=str(p["concepts"]), method=config.method,
                    concepts=config.concepts, top_k=config.top_k, epochs=config.epochs,
                    batch_size=config.batch_size, seed=config.seed, holdout_shards=holdout,
                    num_gpus=config.num_gpus,
                    address=config.address, progress=config.progress)
    log.info("stage 2/4: fit %s with %d concepts -> %s", config.method, config.concepts, p["concepts"])
    from raypipe.store import ActivationStore

    store_checksums = [r.checksum for r in ActivationStore(str(p["activations"])).shards]
    if _done(p["concepts"] / "fit_summary.json", fit.to_dict(),
             {"store_checksums": store_checksums}):
        fitted = json.loads((p["concepts"] / "fit_summary.json").read_text())
    else:
        from raypipe.concepts.trainer import fit_concepts

        fitted = fit_concepts(fit)
    interpret = InterpretConfig(store=str(p["activations"]), concepts=str(p["concepts"]),
                                out=str(p["interpretation"]), top_k=config.top_activations,
                                address=config.address, progress=config.progress)
    log.info("stage 3/4: top-activating units -> %s", p["interpretation"])
    summary_path = p["interpretation"] / "interpretation.json"
    if not _done(summary_path, dataclasses.asdict(interpret),
                 {"concepts_fingerprint": concepts_fingerprint(p["concepts"])}):
        from raypipe.interpretation.interpret_job import interpret_concepts

        interpret_concepts(interpret)
    log.info("stage 4/4: report -> %s", p["report"])
    from raypipe.report.concept_page import render_concept_page

    render_concept_page(str(p["interpretation"]), str(p["report"]))
    return {"report": str(p["report"]), "extraction": extracted, "fit": fitted,
            "interpretation": str(p["interpretation"])}


def _done(path: Path, config: dict, inputs: dict | None = None) -> bool:
    """A stage is finished when its summary exists, was made with the same config and, for a
    stage that reads an earlier stage's output, from the same ``inputs`` (summary keys).

    Runtime-only keys (``RUNTIME_ONLY``: progress, address, num_gpus, ...) do not change a
    stage's output, so they are left out of the comparison: adding ``--progress`` must not refit.
    ``inputs`` matter because a config names the folders it reads, not what is in them: the
    interpretation of a refitted dictionary is stale although its config is unchanged.
    """
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    if not isinstance(saved.get("config"), dict):
        return False
    if _output_fields(saved["config"]) != _output_fields(config):
        return False
    return all(saved.get(key) == value for key, value in (inputs or {}).items())


def _output_fields(config: dict) -> dict:
    """``config`` as JSON would hold it, without the runtime-only keys."""
    plain = json.loads(json.dumps(config, default=str))
    return {k: v for k, v in plain.items() if k not in RUNTIME_ONLY}


def top_concepts(interpretation: str, n: int = 5, min_frequency: float = 0.002
                 ) -> list[tuple[int, float, str]]:
    """``n`` selective concepts to show first: (concept, frequency, top texts).

    Concepts firing on a large share of units tend to track punctuation or position; the most
    readable ones fire rarely but not never, so the rarest concepts above ``min_frequency`` lead.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(Path(interpretation) / "concepts.parquet").to_pylist()
    live = [r for r in table if r["frequency"] >= min_frequency] or \
        [r for r in table if r["frequency"] > 0]
    live.sort(key=lambda r: r["frequency"])
    return [(r["concept"], r["frequency"], r["top_texts"]) for r in live[:n]]
