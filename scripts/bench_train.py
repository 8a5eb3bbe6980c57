#!/usr/bin/env python
"""Benchmark streaming SAE training from an ActivationStore against training from memory.

One run, one machine, one synthetic data set (planted sparse rows, d=384 like MiniLM by
default), one TopK SAE config (Adam, warmup + cosine schedule, gradient clipping: raypipe's
``TrainConfig`` defaults unless overridden), 1 epoch, torch threads = cores:

1. streaming: ``raypipe.concepts.sae_training.train_sae`` on an on-disk store (float32 by
   default, ``--store-dtype``). Throughput = training rows / seconds of the training loop,
   timed inside the run: the store is an ``ActivationStore`` subclass that notes when the
   loop calls ``iter_batches`` (so the shuffle buffer's first fill counts as streaming cost)
   and when the stream is exhausted (right after the last optimiser step). Start-up (imports,
   SAE construction) and the end (held-out evaluation, checkpoint, plot, save) are excluded.
2. in memory: the same SAE (``build_sae``), optimiser, schedule (``lr_factor``), loss
   (``sae_loss``) and clipping, trained by a plain loop over ``randperm`` batches of the
   training rows, loaded first as one (n, d) float32 tensor (the load is reported apart).
   Ratio streaming / in memory, target >= 0.8.
   The two sides are interleaved step by step (``--interleave step``, the default): the timed
   store hands control to one in-memory step each time ``train_sae``'s loop asks for its next
   batch, and each side's clock counts only its own steps (plus, for streaming, its reading and
   shuffling). On a machine shared with other work the load changes within seconds; this way
   both sides see the same load. ``--interleave run`` alternates whole runs instead (A B, B A,
   ...). Either way ``--repeat`` rounds; the ratio is the median of the rounds' ratios, rows/s
   are medians. Two more lines split the gap: the in-memory loop plus the per-step metric
   bookkeeping ``train_sae`` does (``MetricAccumulator`` and ``DeadLatentTracker`` updates,
   timed apart after each in-memory step), and the reader alone (``iter_batches`` with the same
   shuffle buffer, no training), which bounds what I/O and shuffling can cost.
3. peak memory: peak RSS (each child's own high-water mark ``VmHWM``, see ``own_peak_rss``)
   of a ``train_sae`` subprocess over a full epoch of a store of
   ``--rows`` rows and of a store 10x larger; ratio target <= 1.2. For contrast: the in-memory
   approach on the 10x store (``to_numpy`` the training rows, then ``--contrast-steps`` steps)
   and a floor (same imports and SAE, one step on a random batch, no store). The memory runs
   use ``--mem-threads`` torch threads (default 1): on the shared 2-core machine two OpenMP
   threads ran a step 2-20x slower than one whenever other work was running, and an epoch
   over the 10x store must fit the time budget; the thread count does not change the memory.

Run (from the repository root; the 2 cores are shared, so numbers are noisy):

    .venv/bin/python scripts/bench_train.py --quick                       # smoke run, ~1-2 min
    .venv/bin/python scripts/bench_train.py --json runs/bench_train.json  # ~6-10 min

Disk: the two stores take rows x d x 4 x 11 bytes (1.7 GB at the defaults) in a temporary
directory (``--workdir``), removed at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPLIT = "encoder.layer.5"
PLANTED_PER_ROW = 8  # planted atoms mixed into each synthetic row
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None,
                   help="rows of the throughput store, also the small memory store; the large "
                        "one has 10x (default 100000; --quick 20000)")
    p.add_argument("--dim", type=int, default=384, help="activation size d (default 384)")
    p.add_argument("--concepts", type=int, default=None,
                   help="SAE dictionary size K for the throughput runs (default 1024; --quick 256)")
    p.add_argument("--top-k", type=int, default=32, help="TopK active latents per row (32)")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per step (1024)")
    p.add_argument("--shuffle-buffer", type=int, default=None,
                   help="the store reader's shuffle buffer (default: TrainConfig's, 65536; "
                        "--quick 8192, so that both memory stores exceed it)")
    p.add_argument("--shard-rows", type=int, default=None,
                   help="rows per store shard (default 10000; --quick 2000)")
    p.add_argument("--store-dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the stored activations (default float32)")
    p.add_argument("--repeat", type=int, default=None,
                   help="rounds of the throughput pair (default 3; --quick 2)")
    p.add_argument("--interleave", choices=("step", "run"), default="step",
                   help="step: one in-memory step after each train_sae step, each side timed "
                        "without the other's (default); run: whole runs, alternating order")
    p.add_argument("--mem-concepts", type=int, default=None,
                   help="dictionary size K of the memory runs (default: --concepts)")
    p.add_argument("--mem-threads", type=int, default=1,
                   help="torch threads of the memory runs (default 1, see above)")
    p.add_argument("--contrast-steps", type=int, default=20,
                   help="steps the in-memory contrast trains after its load (default 20)")
    p.add_argument("--skip-memory", action="store_true",
                   help="measure throughput only (no 10x store is written)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads everywhere (default: os.cpu_count())")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the stores go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: a memory run
    args = p.parse_args(argv)
    defaults = {"rows": (100_000, 20_000), "concepts": (1024, 256), "shard_rows": (10_000, 2000),
                "repeat": (3, 2), "shuffle_buffer": (None, 8192)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.mem_concepts is None:
        args.mem_concepts = args.concepts
    return args


def log(msg: str) -> None:
    print(f"[bench_train] {msg}", flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------
# Synthetic store


def planted_rows(atoms: np.ndarray, n: int, rng: np.random.Generator,
                 noise: float = 0.01) -> np.ndarray:
    """``n`` rows (n, d) float32: each a non-negative mix of PLANTED_PER_ROW rows of ``atoms``
    (n_atoms, d) with coefficients in [0.5, 1.5], plus Gaussian noise."""
    idx = rng.integers(0, len(atoms), (n, PLANTED_PER_ROW))
    coef = rng.uniform(0.5, 1.5, (n, PLANTED_PER_ROW)).astype(np.float32)
    x = np.einsum("nk,nkd->nd", coef, atoms[idx])
    x += noise * rng.standard_normal(x.shape, dtype=np.float32)
    return x


def write_synthetic_store(root: Path, rows: int, dim: int, shard_rows: int, dtype: str,
                          n_atoms: int, seed: int = 0):
    """Write ``rows`` planted rows as shards of ``shard_rows`` rows (one split point); open it.

    Shard ``i`` is a function of (seed, i) alone, so a larger store starts with the smaller
    one's shards.
    """
    from raypipe.store import ActivationStore, StoreWriter, build_shard_table, write_shard

    atoms = np.random.default_rng(seed).standard_normal((n_atoms, dim)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    header = {"model": "synthetic-planted", "split_points": [SPLIT], "dtype": dtype,
              "store_dtype": dtype, "hidden_sizes": {SPLIT: dim}, "granularity": "token",
              "config": {"bench_train": True, "rows": rows, "dim": dim, "seed": seed}}
    writer = StoreWriter(root, header, f"bench_train-{rows}-{dim}-{dtype}-{seed}")
    for shard_id, start in enumerate(range(0, rows, shard_rows)):
        stop = min(rows, start + shard_rows)
        rng = np.random.default_rng([seed, shard_id])
        x = planted_rows(atoms, stop - start, rng)
        docs = np.arange(start, stop)
        zeros = np.zeros(stop - start, dtype=np.int64)
        table = build_shard_table(docs, zeros.astype(np.int32), [""] * (stop - start), zeros,
                                  zeros, {SPLIT: x}, dtype)
        writer.record(write_shard(root, shard_id, table, doc_start=start, doc_end=stop))
    writer.finalize({"rows": rows})
    return ActivationStore(root)


def timed_store_class():
    """An ``ActivationStore`` that notes, per ``iter_batches`` call, when it was called, when its
    stream ran out and how many rows it gave (``holdout_partition``'s shallow copies share the
    list). With ``between`` set, a shuffled (training) stream calls it each time the loop comes
    back for the next batch, i.e. right after each optimiser step, and keeps its seconds apart
    in ``paused``."""
    from raypipe.store import ActivationStore

    class TimedStore(ActivationStore):
        def __init__(self, path, between=None) -> None:
            super().__init__(path)
            self.streams: list[dict] = []
            self.between = between

        def iter_batches(self, *args, **kwargs):
            shuffled = kwargs.get("shuffle_buffer") is not None
            record = {"shuffled": shuffled, "rows": 0, "called": time.perf_counter(),
                      "exhausted": None, "paused": 0.0}
            self.streams.append(record)
            return self._timed(super().iter_batches(*args, **kwargs), record,
                               self.between if shuffled else None)

        @staticmethod
        def _timed(batches, record: dict, between):
            for batch in batches:
                record["rows"] += len(batch["activations"])
                yield batch
                if between is not None:
                    start = time.perf_counter()
                    between()
                    record["paused"] += time.perf_counter() - start
            record["exhausted"] = time.perf_counter()

    return TimedStore


# ---------------------------------------------------------------------------------------------
# The two training sides


def make_config(args: argparse.Namespace, n_concepts: int):
    from raypipe.concepts.training_config import TrainConfig

    extra = {} if args.shuffle_buffer is None else {"shuffle_buffer": args.shuffle_buffer}
    return TrainConfig(method="topk_sae", n_concepts=n_concepts, top_k=args.top_k, epochs=1,
                       batch_size=args.batch_size, device="cpu", **extra)


@dataclass
class Run:
    """One measured training pass."""

    side: str  # "streaming", "in_memory", "in_memory_metrics" or "reader"
    rows: int
    loop_seconds: float
    total_seconds: float  # the whole call: start-up and end included
    final_loss: float | None = None
    load_average: float | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.loop_seconds


class InMemoryTrainer:
    """``train_sae``'s SAE, optimiser, schedule, loss and clipping, stepped by a plain loop over
    ``randperm`` batches of ``x`` (n, d) float32; only the steps' own seconds are counted."""

    def __init__(self, x, config) -> None:
        import torch

        from raypipe.concepts.metrics import DeadLatentTracker, MetricAccumulator
        from raypipe.concepts.sae_training import build_sae, lr_factor

        self.x, self.config = x, config
        total_steps = config.epochs * math.ceil(x.shape[0] / config.batch_size)
        torch.manual_seed(config.seed)
        self.sae, _ = build_sae(config, x.shape[1], "cpu")
        self.sae.train()
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total_steps, config.warmup_steps,
                                                config.final_lr_ratio))
        self._order = self._batch_indices(torch.Generator().manual_seed(config.seed))
        self.rows = self.steps = 0
        self.seconds = 0.0
        self.losses: list = []
        # train_sae's per-step bookkeeping, run after each step on its own clock
        self.metrics = MetricAccumulator()
        self.tracker = DeadLatentTracker(config.n_concepts)
        self.metric_seconds = 0.0

    def _batch_indices(self, generator):
        import torch

        n, size = self.x.shape[0], self.config.batch_size
        for _ in range(self.config.epochs):
            perm = torch.randperm(n, generator=generator)
            for first in range(0, n, size):
                yield perm[first:first + size]

    def step(self) -> bool:
        """One optimiser step; False (and nothing done) once every epoch is trained."""
        import torch

        from raypipe.concepts.sae_training import sae_loss

        start = time.perf_counter()
        idx = next(self._order, None)
        if idx is None:
            return False
        xb = self.x[idx]  # (b, d)
        self.optimizer.zero_grad(set_to_none=True)
        pre_codes, codes, x_hat = self.sae(xb)
        loss = sae_loss(self.config.method, self.sae, xb, pre_codes, codes, x_hat, self.config)
        loss.backward()
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.config.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.seconds += time.perf_counter() - start
        start = time.perf_counter()
        self.metrics.update(xb, x_hat.detach(), codes.detach())
        self.tracker.update(codes.detach())
        self.losses.append(loss.detach())
        self.metric_seconds += time.perf_counter() - start
        self.rows += xb.shape[0]
        self.steps += 1
        return True

    def run(self, max_steps: int | None = None) -> None:
        while (max_steps is None or self.steps < max_steps) and self.step():
            pass

    def results(self, total_seconds: float) -> tuple[Run, Run]:
        """``(plain loop, plain loop + train_sae's per-step metrics)``."""
        import torch

        last = float(torch.stack(self.losses[-50:]).mean()) if self.losses else None
        return (Run("in_memory", self.rows, self.seconds, total_seconds, last, load_average()),
                Run("in_memory_metrics", self.rows, self.seconds + self.metric_seconds,
                    total_seconds, last, load_average()))


def run_streaming(store_path: Path, config, out_dir: Path, between=None) -> Run:
    """``train_sae`` on the store; loop seconds from the training ``iter_batches`` call to the
    end of its stream, less the seconds spent in ``between`` (see ``timed_store_class``)."""
    from raypipe.concepts.sae_training import HISTORY_NAME, train_sae

    store = timed_store_class()(store_path, between)
    start = time.perf_counter()
    train_sae(store, SPLIT, config, out_dir, progress=False)
    streams = [s for s in store.streams if s["shuffled"]]
    paused = sum(s["paused"] for s in store.streams)
    total = time.perf_counter() - start - paused
    if not streams or any(s["exhausted"] is None for s in streams):
        raise RuntimeError(f"train_sae did not stream its training rows through iter_batches "
                           f"with a shuffle buffer as expected: {store.streams}")
    history = json.loads((out_dir / HISTORY_NAME).read_text())
    shutil.rmtree(out_dir, ignore_errors=True)
    return Run("streaming", sum(s["rows"] for s in streams),
               sum(s["exhausted"] - s["called"] - s["paused"] for s in streams), total,
               history[-1]["loss"] if history else None, load_average())


def run_in_memory(x, config) -> tuple[Run, Run]:
    start = time.perf_counter()
    trainer = InMemoryTrainer(x, config)
    trainer.run()
    return trainer.results(time.perf_counter() - start)


def run_interleaved(store_path: Path, x, config, out_dir: Path) -> tuple[Run, Run, Run]:
    """``train_sae`` with one in-memory step after each of its steps: both sides see the same
    moment-to-moment load from other work; each is timed without the other's steps."""
    start = time.perf_counter()
    trainer = InMemoryTrainer(x, config)
    streaming = run_streaming(store_path, config, out_dir, between=trainer.step)
    trainer.run()  # nothing is left when both sides take the same number of steps
    return (streaming,
            *trainer.results(time.perf_counter() - start - streaming.total_seconds))


def run_reader(store_path: Path, config) -> Run:
    """The training stream alone: same view, batch size, shuffle buffer; no training."""
    from raypipe.concepts.sae_training import epoch_seed, holdout_partition
    from raypipe.store import ActivationStore

    train_view, _ = holdout_partition(ActivationStore(store_path), config.holdout_shards)
    rows = 0
    start = time.perf_counter()
    for batch in train_view.iter_batches(SPLIT, config.batch_size,
                                         shuffle_buffer=config.shuffle_buffer,
                                         seed=epoch_seed(config.seed, 0), columns=()):
        rows += len(batch["activations"])
    seconds = time.perf_counter() - start
    return Run("reader", rows, seconds, seconds, None, load_average())


def load_training_rows(store_path: Path, config):
    """The store's training rows (all shards but the held-out ones) as one (n, d) float32
    tensor: exactly the rows ``train_sae`` trains on."""
    import torch

    from raypipe.concepts.sae_training import holdout_partition
    from raypipe.store import ActivationStore

    train_view, _ = holdout_partition(ActivationStore(store_path), config.holdout_shards)
    return torch.from_numpy(train_view.to_numpy(SPLIT))


def measure_throughput(args: argparse.Namespace, store_path: Path, work: Path) -> dict:
    """``args.repeat`` rounds of streaming vs in-memory training (interleaved step by step, or
    whole runs in alternating order), plus the reader alone; medians and the ratio."""
    import torch

    torch.set_num_threads(args.threads)
    config = make_config(args, args.concepts)
    start = time.perf_counter()
    x = load_training_rows(store_path, config)
    load_seconds = time.perf_counter() - start
    log(f"in-memory side: loaded {tuple(x.shape)} float32 in {load_seconds:.2f} s")
    runs: dict[str, list[Run]] = {"streaming": [], "in_memory": [], "in_memory_metrics": [],
                                  "reader": []}
    for i in range(args.repeat):
        if args.interleave == "step":
            measured = run_interleaved(store_path, x, config, work / f"sae-{i}")
        elif i % 2 == 0:
            measured = (run_streaming(store_path, config, work / f"sae-{i}"),
                        *run_in_memory(x, config))
        else:
            in_memory = run_in_memory(x, config)
            measured = (run_streaming(store_path, config, work / f"sae-{i}"), *in_memory)
        for run in (*measured, run_reader(store_path, config)):
            runs[run.side].append(run)
            loss = "" if run.final_loss is None else f", final loss {run.final_loss:.4g}"
            log(f"round {i + 1}/{args.repeat} {run.side:17s}: {run.rows} rows in "
                f"{run.loop_seconds:.2f} s = {run.rows_per_second:,.0f} rows/s (whole call "
                f"{run.total_seconds:.2f} s{loss}, load average {run.load_average})")
    med = {side: statistics.median(r.rows_per_second for r in rs) for side, rs in runs.items()}
    per_round = [s.rows_per_second / m.rows_per_second
                 for s, m in zip(runs["streaming"], runs["in_memory"])]
    per_round_metrics = [s.rows_per_second / m.rows_per_second
                         for s, m in zip(runs["streaming"], runs["in_memory_metrics"])]
    del x
    return {"config": config.to_dict(), "train_rows": runs["streaming"][0].rows,
            "interleave": args.interleave, "load_seconds": load_seconds,
            "median_rows_per_second": med,
            "ratio": statistics.median(per_round), "ratio_per_round": per_round,
            "ratio_of_medians": med["streaming"] / med["in_memory"],
            "ratio_vs_metrics": statistics.median(per_round_metrics),
            "ratio_vs_metrics_per_round": per_round_metrics,
            "runs": {side: [dict(asdict(r), rows_per_second=r.rows_per_second) for r in rs]
                     for side, rs in runs.items()}}


# ---------------------------------------------------------------------------------------------
# Peak memory, one child process per measurement


def child_main(spec: dict) -> None:
    """Run one memory measurement in this (fresh) process; write a small result JSON."""
    import torch

    torch.set_num_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    config = make_config(args, spec["n_concepts"])
    start = time.perf_counter()
    result: dict = {}
    if spec["mode"] == "streaming":
        run = run_streaming(Path(spec["store"]), config, Path(spec["out"]))
        result = {"rows": run.rows, "rows_per_second": run.rows_per_second}
    elif spec["mode"] == "in_memory":
        x = load_training_rows(Path(spec["store"]), config)
        trainer = InMemoryTrainer(x, config)
        trainer.run(max_steps=spec["steps"])
        result = {"loaded_rows": x.shape[0], "rows": trainer.rows}
    elif spec["mode"] == "floor":
        trainer = InMemoryTrainer(torch.randn(config.batch_size, spec["dim"]), config)
        trainer.run()  # one step
        result = {"rows": trainer.rows}
    else:
        raise ValueError(f"unknown child mode {spec['mode']!r}")
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_bytes"] = own_peak_rss()
    Path(spec["result"]).write_text(json.dumps(result))


def own_peak_rss() -> int:
    """This process's peak resident set (bytes): ``VmHWM``, the high-water mark of its own
    address space. Not ``ru_maxrss``: Linux carries that across ``exec``, so a child started by
    a big parent reports at least the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def peak_rss(mode: str, args: argparse.Namespace, work: Path, store: Path | None = None) -> dict:
    """Run a child measurement → its result, with its own peak RSS (``own_peak_rss``) and, for
    reference, ``ru_maxrss`` from ``os.wait4`` (inflated by this process's peak, see there)."""
    tag = f"{mode}-{store.name if store else 'none'}"
    spec = {"mode": mode, "store": str(store) if store else None, "out": str(work / f"out-{tag}"),
            "result": str(work / f"result-{tag}.json"), "threads": args.mem_threads,
            "n_concepts": args.mem_concepts, "steps": args.contrast_steps, "dim": args.dim,
            "args": {k: v for k, v in vars(args).items() if k in ("top_k", "batch_size",
                                                                   "shuffle_buffer")}}
    with open(work / f"log-{tag}.txt", "w") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child",
                                 json.dumps(spec)], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (work / f"log-{tag}.txt").read_text().strip().splitlines()[-8:]
        raise RuntimeError(f"memory child {tag} failed (exit {proc.returncode}):\n" +
                           "\n".join(tail))
    result = json.loads(Path(spec["result"]).read_text())
    shutil.rmtree(spec["out"], ignore_errors=True)
    return {"mode": mode, "store": store.name if store else None,
            "wait4_ru_maxrss_bytes": usage.ru_maxrss * 1024, **result}  # KiB on Linux


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_memory(args: argparse.Namespace, small: Path, large: Path, work: Path) -> dict:
    """Peak RSS of train_sae on the small and the 10x store, the in-memory contrast, a floor."""
    runs = {}
    for key, mode, store in (("floor", "floor", None), ("streaming_1x", "streaming", small),
                             ("streaming_10x", "streaming", large),
                             ("in_memory_10x", "in_memory", large)):
        log(f"memory: {key} ...")
        runs[key] = peak_rss(mode, args, work, store)
        log(f"memory: {key}: peak RSS {runs[key]['peak_rss_bytes'] / MIB:,.0f} MiB "
            f"({runs[key]['seconds']:.1f} s, load average {load_average()})")
    return {"n_concepts": args.mem_concepts, "runs": runs,
            "store_bytes": {"1x": store_bytes(small), "10x": store_bytes(large)},
            "ratio": (runs["streaming_10x"]["peak_rss_bytes"]
                      / runs["streaming_1x"]["peak_rss_bytes"])}


# ---------------------------------------------------------------------------------------------
# Report


def fmt_rows(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def markdown(args: argparse.Namespace, results: dict) -> str:
    tp = results["throughput"]
    med = tp["median_rows_per_second"]
    rounds = ", ".join(f"{r:.2f}" for r in tp["ratio_per_round"])
    cfg = (f"TopK SAE d={args.dim}, K={args.concepts}, top_k={args.top_k}, batch "
           f"{args.batch_size}, 1 epoch, Adam + warmup/cosine + clip, shuffle buffer "
           f"{tp['config']['shuffle_buffer']:,}, {args.threads} torch threads, CPU")
    lines = [f"Streaming SAE training ({cfg}); {args.store_dtype} store of "
             f"{fmt_rows(args.rows)} rows in {args.shard_rows:,}-row shards (last shard held "
             f"out: {tp['train_rows']:,} training rows); medians of {args.repeat} "
             "rounds.", "",
             "| measure | value | target |", "|---|---:|---:|",
             f"| streaming `train_sae` (training loop) | {med['streaming']:,.0f} rows/s | |",
             f"| in memory, plain `randperm` loop | {med['in_memory']:,.0f} rows/s | |",
             f"| **streaming / in memory**, median of the rounds' ratios ({rounds}) | "
             f"**{tp['ratio']:.2f}** | ≥ 0.8 |",
             f"| in memory + `train_sae`'s per-step metrics (MetricAccumulator, "
             f"DeadLatentTracker) | {med['in_memory_metrics']:,.0f} rows/s | |",
             f"| streaming / (in memory + metrics): the cost of streaming itself "
             f"({', '.join(f'{r:.2f}' for r in tp['ratio_vs_metrics_per_round'])}) | "
             f"{tp['ratio_vs_metrics']:.2f} | |",
             f"| reader alone (`iter_batches`, same shuffle) | {med['reader']:,.0f} rows/s | |"]
    if "memory" in results:
        mem = results["memory"]
        runs = mem["runs"]
        mb = {k: v / 1e6 for k, v in mem["store_bytes"].items()}
        big = 10 * args.rows
        lines += [f"| peak RSS, `train_sae` on {fmt_rows(args.rows)} rows ({mb['1x']:,.0f} MB "
                  f"on disk) | {runs['streaming_1x']['peak_rss_bytes'] / MIB:,.0f} MiB | |",
                  f"| peak RSS, `train_sae` on {fmt_rows(big)} rows ({mb['10x']:,.0f} MB on "
                  f"disk) | {runs['streaming_10x']['peak_rss_bytes'] / MIB:,.0f} MiB | |",
                  f"| **peak RSS 10× / 1×** | **{mem['ratio']:.2f}** | ≤ 1.2 |",
                  f"| peak RSS, in-memory approach on {fmt_rows(big)} rows (contrast) | "
                  f"{runs['in_memory_10x']['peak_rss_bytes'] / MIB:,.0f} MiB | |",
                  f"| peak RSS floor (imports + SAE, no store) | "
                  f"{runs['floor']['peak_rss_bytes'] / MIB:,.0f} MiB | |"]
    how = ("the two sides interleaved step by step, each timing only its own steps"
           if tp["interleave"] == "step" else "whole runs in alternating order")
    lines += ["", f"Throughput: {how}; streaming = training rows / seconds from the loop's "
              f"`iter_batches` call to its stream's end (start-up, held-out evaluation and "
              f"saving excluded; the in-memory load, {tp['load_seconds']:.1f} s, likewise)."]
    if "memory" in results:
        lines += [f"Memory: one child process per line, its own high-water mark (VmHWM); "
                  f"full epoch, K={results['memory']['n_concepts']}, {args.mem_threads} torch "
                  f"thread(s); the in-memory contrast loads the training rows as one float32 "
                  f"tensor, then trains {args.contrast_steps} steps."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in vars(args).items() if k != "child"},
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version()},
                     "load_average_start": load_average()}
    log(f"work directory {work}; load average {results['load_average_start']} on "
        f"{os.cpu_count()} cores")
    try:
        import torch

        results["machine"]["torch"] = torch.__version__
        start = time.perf_counter()
        small = work / "store-1x"
        write_synthetic_store(small, args.rows, args.dim, args.shard_rows, args.store_dtype,
                              n_atoms=args.concepts)
        log(f"wrote {args.rows:,} rows ({store_bytes(small) / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - start:.1f} s")
        results["throughput"] = measure_throughput(args, small, work)
        if not args.skip_memory:
            start = time.perf_counter()
            large = work / "store-10x"
            write_synthetic_store(large, 10 * args.rows, args.dim, args.shard_rows,
                                  args.store_dtype, n_atoms=args.concepts)
            log(f"wrote {10 * args.rows:,} rows ({store_bytes(large) / 1e6:,.0f} MB) in "
                f"{time.perf_counter() - start:.1f} s")
            results["memory"] = measure_memory(args, small, large, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = load_average()
    table = markdown(args, results)
    results["markdown"] = table
    print("\n" + table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
