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
    (one wrapper per batch size)."""
    from fastest_batch import fastest_batch_size, parse_sizes, spread_sample
    from interpreto import ModelWithSplitPoints
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    granularity = ModelWithSplitPoints.activation_granularities.TOKEN
    run_at = {}
    for b in parse_sizes(args.check_batch_sizes):
        model = ModelWithSplitPoints(args.model, split_point=args.split, automodel=AutoModel,
                                     tokenizer=tokenizer, batch_size=b, device_map="cpu")
        run_at[b] = lambda texts, m=model: m.get_activations(texts, activation_granularity=granularity)
    return fastest_batch_size(run_at, spread_sample(texts, args.check_texts), warm_up=64)


if __name__ == "__main__":
    main()
