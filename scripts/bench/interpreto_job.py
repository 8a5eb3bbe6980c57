"""Run inside the interpreto venv: time ``ModelWithSplitPoints.get_activations`` on a corpus file.

Prints one JSON line: import_seconds (torch, transformers, interpreto), load_seconds (model +
tokenizer + wrapper), call_seconds (get_activations,
TOKEN granularity, texts in corpus order as a user would pass them), rows and dim of the result.

With ``--check-batch-sizes 16,32,64 --check-texts N`` it instead times the call on N texts
spread over the corpus for each batch size (best of two, after a warm-up call) and prints
``{"best_batch_size", "timings"}``: the benchmark gives interpreto the batch size that is
fastest here, as it gives the plain loop its best batching.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    start = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--split", default="encoder.layer.1")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--check-batch-sizes", default="",
                   help="comma-separated batch sizes to compare instead of the timed call")
    p.add_argument("--check-texts", type=int, default=1000)
    args = p.parse_args()

    import torch
    from interpreto import ModelWithSplitPoints
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads)
    with open(args.corpus, encoding="utf-8") as fh:
        texts = fh.read().split("\n")[:-1]

    if args.check_batch_sizes:
        print(json.dumps(check_batch_sizes(args, texts)))
        return

    t0 = time.perf_counter()
    imports = t0 - start
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    mwsp = ModelWithSplitPoints(args.model, split_point=args.split, automodel=AutoModel,
                                tokenizer=tokenizer, batch_size=args.batch_size, device_map="cpu")
    load = time.perf_counter() - t0

    t0 = time.perf_counter()
    acts, _ = mwsp.get_activations(texts, activation_granularity=ModelWithSplitPoints.activation_granularities.TOKEN)
    call = time.perf_counter() - t0
    if isinstance(acts, dict):  # a mapping split point -> tensor in some versions
        acts = next(iter(acts.values()))
    print(json.dumps({"import_seconds": imports, "load_seconds": load, "call_seconds": call, "rows": int(acts.shape[0]),
                      "dim": int(acts.shape[-1]), "texts": len(texts), "split": args.split,
                      "batch_size": args.batch_size, "threads": torch.get_num_threads()}))


def check_batch_sizes(args, texts: list[str]) -> dict:
    """The fastest of ``--check-batch-sizes`` on ``--check-texts`` texts spread over the corpus
    (corpus order kept, as the timed call keeps it), best of two rounds after a warm-up."""
    from interpreto import ModelWithSplitPoints
    from transformers import AutoModel, AutoTokenizer

    step = max(1, len(texts) // args.check_texts)
    sample = texts[::step][: args.check_texts]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    sizes = [int(b) for b in args.check_batch_sizes.split(",") if b.strip()]
    models = {b: ModelWithSplitPoints(args.model, split_point=args.split, automodel=AutoModel,
                                      tokenizer=tokenizer, batch_size=b, device_map="cpu")
              for b in sizes}
    granularity = ModelWithSplitPoints.activation_granularities.TOKEN
    models[sizes[0]].get_activations(sample[:64], activation_granularity=granularity)  # warm-up
    timings = {b: float("inf") for b in sizes}
    for _ in range(2):
        for b in sizes:
            t0 = time.perf_counter()
            models[b].get_activations(sample, activation_granularity=granularity)
            timings[b] = min(timings[b], time.perf_counter() - t0)
    return {"best_batch_size": min(timings, key=timings.get), "timings": timings,
            "texts": len(sample)}


if __name__ == "__main__":
    main()
