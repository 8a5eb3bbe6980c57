#!/usr/bin/env python
"""Does an extraction's memory stay flat as the corpus grows? Peak RSS of a job over N
documents against the same job over 4N, side by side in one run.

Why: raypipe streams (Ray Data's backpressure between tokenize tasks, the model actors and
the shard writes; rows reduced as each micro-batch ends), so a corpus 4x larger should take
4x the time and disk but not 4x the memory. One-process peers hold every activation in
memory, which grows with the corpus.

What runs: ``raypipe extract`` as a user runs it (the console script, a fresh local Ray),
MiniLM at ``--split-points 1``, TOKEN granularity (one 384-float row per token: the most
rows), fixed ``--docs-per-shard`` so that the 4N job writes ~4x the shards of the N job. The
corpus is rt-polarity (``../shared/data``) cut to N and 4N sentences, repeated when it is too
short. While a job runs, every process of its tree (the driver, Ray's processes, the model
actor, the tokenize workers: a local Ray is started by the driver, so all are its
descendants) is sampled every 0.2 s for its own high-water mark ``VmHWM``; each process's
last seen mark is its peak. Printed per job: the driver's peak, the model actor's peak, the
largest other process, the sum of all peaks (an upper bound of the job's footprint: the
processes did not all peak at once, and shared pages count once per process), the job's wall
time and the store's size on disk. Ratios 4N / N; target <= 1.2 for the actor and the sum.

Run (from the repository root; ~3 minutes at the defaults):

    .venv/bin/python scripts/bench_memory.py
    .venv/bin/python scripts/bench_memory.py --docs 1000 --json runs/bench_memory.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench.corpus import available, read_sentences, write_corpus  # noqa: E402
from bench.raypipe_run import raypipe_env  # noqa: E402

ROOT = HERE.parent
MIB = 1024 * 1024


@dataclass
class MemoryRun:
    docs: int
    wall_seconds: float = 0.0
    driver_mib: float = 0.0
    actor_mib: float = 0.0
    other_max_mib: float = 0.0
    sum_mib: float = 0.0
    processes: int = 0
    store_mib: float = 0.0
    shards: int = 0
    peaks: dict = field(default_factory=dict)  # process name -> peak MiB (largest of that name)
    error: str = ""


def high_water_mark(proc: psutil.Process) -> int | None:
    """The process's own peak resident set (``VmHWM``), bytes; None once it is gone."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_name(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.Error, OSError):
        return "?"
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    return " ".join(Path(c).name for c in cmd[:2]) or proc.name()


def measure(raypipe: Path, model: str, corpus: Path, docs: int, docs_per_shard: int,
            threads: int, work: Path, timeout: float) -> MemoryRun:
    out = work / f"store-{docs}"
    cmd = [str(raypipe), "extract", "--model", model, "--corpus", str(corpus),
           "--split-points", "1", "--granularity", "token", "--out", str(out),
           "--docs-per-shard", str(docs_per_shard), "--torch-threads", str(threads),
           "--no-progress"]
    run = MemoryRun(docs=docs)
    peaks: dict[int, tuple[str, int]] = {}
    t0 = time.perf_counter()
    with open(work / f"log-{docs}.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=raypipe_env(work),
                                cwd=str(work))
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                run.error = f"timed out after {timeout:.0f} s"
                break
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                mark = high_water_mark(p)
                if mark is not None:  # the name is read again: Ray renames a worker
                    name = process_name(p)  # (ray::IDLE, then ray::MapWorker(...)) as it works
                    old_name, old_mark = peaks.get(p.pid, ("?", 0))
                    if name == "?" or "IDLE" in name or "default_worker" in name:
                        name = old_name if old_name != "?" else name
                    peaks[p.pid] = (name, max(mark, old_mark))
            time.sleep(0.2)
    run.wall_seconds = time.perf_counter() - t0
    if proc.returncode not in (0, None) and not run.error:
        tail = (work / f"log-{docs}.txt").read_text().strip().splitlines()[-5:]
        run.error = f"exit {proc.returncode}: " + " | ".join(tail)
    driver = peaks.pop(proc.pid, ("driver", 0))[1]
    actor = [m for n, m in peaks.values() if "ExtractShard" in n or "MapWorker" in n]
    others = [m for n, m in peaks.values() if not ("ExtractShard" in n or "MapWorker" in n)]
    run.driver_mib = driver / MIB
    run.actor_mib = max(actor, default=0) / MIB
    run.other_max_mib = max(others, default=0) / MIB
    run.sum_mib = (driver + sum(m for _, m in peaks.values())) / MIB
    run.processes = len(peaks) + 1
    by_name: dict[str, float] = {}
    for name, mark in peaks.values():
        by_name[name] = max(by_name.get(name, 0.0), round(mark / MIB, 1))
    run.peaks = dict(sorted(by_name.items(), key=lambda kv: -kv[1]))
    if out.exists():
        run.store_mib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / MIB
        run.shards = len(list((out / "shards").glob("*.parquet")))
        shutil.rmtree(out, ignore_errors=True)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rt-polarity",
                        help="rt-polarity folder (default: ../shared/data/rt-polarity)")
    parser.add_argument("--docs", type=int, default=2500, help="N: the small job's documents")
    parser.add_argument("--factor", type=int, default=4, help="the large job has N x factor")
    parser.add_argument("--docs-per-shard", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the actor")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not available(args.data):
        print(f"bench_memory: rt-polarity not found in {args.data}; nothing to measure.")
        return 0
    from raypipe.demo import minilm_path

    raypipe = Path(sys.executable).with_name("raypipe")
    sentences = read_sentences(args.data)
    runs = []
    with tempfile.TemporaryDirectory(prefix="raypipe-bench-memory-") as tmp:
        work = Path(tmp)
        for docs in (args.docs, args.docs * args.factor):
            text = (sentences * (docs // len(sentences) + 1))[:docs]
            corpus = write_corpus(text, work / f"corpus-{docs}.txt")
            print(f"bench_memory: raypipe extract over {docs:,} documents ...", flush=True)
            runs.append(measure(raypipe, minilm_path(), corpus, docs, args.docs_per_shard,
                                args.threads, work, args.timeout))
    small, large = runs
    for r in runs:
        if r.error:
            print(f"  {r.docs:,} documents: FAILED: {r.error}")
    rows = [("documents", "docs", "{:,.0f}"), ("shards written", "shards", "{:,.0f}"),
            ("store on disk, MiB", "store_mib", "{:,.0f}"), ("wall time, s", "wall_seconds", "{:.1f}"),
            ("processes seen", "processes", "{:,.0f}"), ("driver peak RSS, MiB", "driver_mib", "{:,.0f}"),
            ("model actor peak RSS, MiB", "actor_mib", "{:,.0f}"),
            ("largest other process, MiB", "other_max_mib", "{:,.0f}"),
            ("sum of all peaks, MiB", "sum_mib", "{:,.0f}")]
    print(f"\n{'':34}{'N':>12}{'N x ' + str(args.factor):>12}{'ratio':>9}")
    for label, key, fmt in rows:
        a, b = getattr(small, key), getattr(large, key)
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{label:34}{fmt.format(a):>12}{fmt.format(b):>12}{ratio:>9}")
    for label, key in (("model actor", "actor_mib"), ("sum of all peaks", "sum_mib")):
        a, b = getattr(small, key), getattr(large, key)
        if a:
            verdict = "met" if b / a <= 1.2 else "NOT met"
            print(f"memory flat ({label}): {b / a:.2f} (target <= 1.2: {verdict})")
    print("\nlargest processes of the N x factor job (MiB):")
    for name, mib in list(large.peaks.items())[:8]:
        print(f"  {mib:8,.0f}  {name}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0 if not any(r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
