"""The least a local Ray job with a model actor does: start Ray, load the model in one actor, stop.

Run as a fresh process by ``ray_floor.measure_bare_ray_job`` and timed from outside, like
``raypipe extract``. The driver imports Ray alone (raypipe's also imports torch and transformers
to check split points); the actor imports torch and transformers and loads the model (raypipe's
also imports nnsight). No corpus is read, nothing is tokenized, forwarded or written.
"""
from __future__ import annotations

import argparse
import logging
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--auto-class", default="AutoModel", help="transformers class that loads it")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the actor takes one GPU")
    args = p.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)

    gpus = 1 if args.device == "cuda" else 0

    @ray.remote(num_cpus=args.threads, num_gpus=gpus)
    class LoadedModel:
        def __init__(self, path: str, threads: int, auto_class: str, device: str) -> None:
            import torch
            import transformers

            torch.set_num_threads(threads)
            model = getattr(transformers, auto_class).from_pretrained(path).eval()
            self.model = model.to(device)

        def ready(self) -> bool:
            return True

    actor = LoadedModel.remote(args.model, args.threads, args.auto_class, args.device)
    assert ray.get(actor.ready.remote())
    ray.shutdown()
    os._exit(0)  # as raypipe's console script: no interpreter teardown once Ray has stopped


if __name__ == "__main__":
    main()
