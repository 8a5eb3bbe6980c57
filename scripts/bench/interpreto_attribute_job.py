"""Run inside the interpreto venv: time an interpreto attribution explainer on a corpus file.

Prints one JSON line: import_seconds (torch, transformers, interpreto), load_seconds (classifier
+ tokenizer + explainer), call_seconds (``explainer(texts)``: every text of the corpus in one
call, the predicted class explained, WORD granularity), forward_rows / forward_calls (rows and
batches the classifier's forward saw during the call, counted by a forward pre-hook) and the
batch size used (interpreto's own default unless ``--batch-size`` is given).

With ``--check-batch-sizes 4,16,32 --check-texts N`` it instead times the explainer on N texts
spread over the corpus at each batch size and prints the fastest (the benchmark gives interpreto
its best batch size, as the plain loop gets its best batching).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EXPLAINERS = {"occlusion": "Occlusion", "kernel_shap": "KernelShap"}


def main() -> None:
    start = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--method", choices=sorted(EXPLAINERS), required=True)
    p.add_argument("--n-samples", type=int, default=64, help="KernelShap n_perturbations")
    p.add_argument("--batch-size", type=int, default=None, help="default: interpreto's own")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu", help="cpu or cuda: the explainer's device")
    p.add_argument("--check-batch-sizes", default="",
                   help="comma-separated batch sizes: time each on --check-texts texts instead")
    p.add_argument("--check-texts", type=int, default=40)
    args = p.parse_args()

    import interpreto
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    with open(args.corpus, encoding="utf-8") as fh:
        texts = fh.read().split("\n")[:-1]
    imports = time.perf_counter() - start

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval().to(args.device)
    cls = getattr(interpreto, EXPLAINERS[args.method])
    default_batch = inspect.signature(cls.__init__).parameters["batch_size"].default
    if args.check_batch_sizes:
        print(json.dumps(check_batch_sizes(args, cls, model, tokenizer, texts)))
        return
    explainer = make_explainer(args, cls, model, tokenizer, args.batch_size)
    load = time.perf_counter() - t0

    seen = {"rows": 0, "calls": 0}

    def count(_module, _args, kw):
        ids = kw.get("input_ids")
        if ids is None and _args:
            ids = _args[0]
        if ids is not None:
            seen["rows"] += int(ids.shape[0])
            seen["calls"] += 1

    model.register_forward_pre_hook(count, with_kwargs=True)
    t0 = time.perf_counter()
    outputs = explainer(texts)
    call = time.perf_counter() - t0
    units = [int(o.attributions.shape[-1]) for o in outputs]
    print(json.dumps({
        "method": args.method, "explainer": cls.__name__, "interpreto": version("interpreto"),
        "import_seconds": imports, "load_seconds": load, "call_seconds": call,
        "forward_rows": seen["rows"], "forward_calls": seen["calls"], "texts": len(texts),
        "explained": len(outputs), "units": sum(units),
        "batch_size": args.batch_size if args.batch_size is not None else default_batch,
        "default_batch_size": default_batch,
        "n_perturbations": args.n_samples if args.method == "kernel_shap" else None,
        "threads": torch.get_num_threads(), "device": args.device}))


def make_explainer(args, cls, model, tokenizer, batch_size: int | None):
    """interpreto's explainer as the benchmark runs it (``batch_size`` None: its default)."""
    import interpreto
    import torch

    kwargs = {"granularity": interpreto.Granularity.WORD, "device": torch.device(args.device)}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if args.method == "kernel_shap":
        kwargs["n_perturbations"] = args.n_samples
    return cls(model, tokenizer, **kwargs)


def check_batch_sizes(args, cls, model, tokenizer, texts: list[str]) -> dict:
    """The fastest of ``--check-batch-sizes`` on ``--check-texts`` texts spread over the corpus
    (one explainer per batch size)."""
    from fastest_batch import fastest_batch_size, parse_sizes, spread_sample

    run_at = {b: make_explainer(args, cls, model, tokenizer, b)
              for b in parse_sizes(args.check_batch_sizes)}
    return dict(fastest_batch_size(run_at, spread_sample(texts, args.check_texts), warm_up=4),
                method=args.method)


if __name__ == "__main__":
    main()
