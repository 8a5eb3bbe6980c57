"""The batch size at which a baseline runs fastest here, for the interpreto side-venv scripts.

The benchmarks give each baseline its best batching, as they give the plain loop its own: a
baseline handicapped by a default batch size would flatter raypipe. Pure Python (it runs in the
side venv, imported as a sibling module by ``interpreto_job.py`` and
``interpreto_attribute_job.py``).
"""
from __future__ import annotations

import time
from collections.abc import Callable


def parse_sizes(text: str) -> list[int]:
    """``"16,32,64"`` -> ``[16, 32, 64]``."""
    return [int(b) for b in text.split(",") if b.strip()]


def spread_sample(texts: list[str], n: int) -> list[str]:
    """``n`` texts spread evenly over the corpus, in corpus order (as the timed call keeps it)."""
    return texts[:: max(1, len(texts) // n)][:n]


def fastest_batch_size(run_at: dict[int, Callable[[list[str]], object]], sample: list[str],
                       warm_up: int) -> dict:
    """Time ``run_at[batch_size](sample)`` for each batch size, best of two rounds after one
    warm-up call on the first ``warm_up`` texts; the fastest batch size wins."""
    next(iter(run_at.values()))(sample[:warm_up])
    timings = {b: float("inf") for b in run_at}
    for _ in range(2):
        for b, run in run_at.items():
            t0 = time.perf_counter()
            run(sample)
            timings[b] = min(timings[b], time.perf_counter() - t0)
    return {"best_batch_size": min(timings, key=timings.get), "timings": timings,
            "texts": len(sample)}
