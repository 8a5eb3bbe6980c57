"""An estimate of the least an end-to-end extraction on Ray takes here: Ray's start, one model
load, the forward, the writes.

Why: the README's speed-up target (end to end at least 1.5x interpreto's in-memory call) counts
Ray's start-up, the actor's model load and the store's writes on raypipe's side only. Two pieces
are measured on their own, as work no Ray-based extractor that writes its rows can skip:

- ``bare_ray_job``: a fresh process that starts a local Ray, loads the model in one actor and
  stops (``bare_ray_job.py``): no pipeline, no tokenization, no forward, no write;
- ``write``: the rows of a TOKEN-granularity store (one float32 vector per token), as
  raypipe's layout keeps them (a fixed-size binary column, uncompressed Parquet) plus the
  sha256 of the file, written with pyarrow and hashlib alone.

floor = bare Ray job + the plain loop's forward + the write: an estimate, not a proof. The
pieces are timed apart (one round each, on a machine whose lines move 10-20% between runs),
and a design could overlap some of the write with the forward (raypipe does); but the forward
already keeps both cores busy, so overlapping cannot shorten the sum by much, and raypipe's own
fixed costs (the driver's split-point check, Ray Data's start, tokenization, nnsight's import)
come on top. interpreto / floor then estimates the most the target ratio could reach on this
machine.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def best_bare_ray_job(model_dir: str, threads: int, tmp: Path, repeat: int, log,
                      auto_class: str = "AutoModel", device: str = "cpu") -> float | None:
    """The shortest of ``repeat`` bare Ray jobs, in seconds (None when none finished); a round
    that fails or times out is logged and skipped, the others still count."""
    best = None
    for i in range(repeat):
        try:
            seconds = measure_bare_ray_job(model_dir, threads, tmp, auto_class, device)
        except RuntimeError as err:
            log(f"bare Ray job, round {i + 1}/{repeat}: {err}")
            continue
        best = seconds if best is None else min(best, seconds)
        log(f"bare Ray job, round {i + 1}/{repeat}: {seconds:.2f} s "
            f"(load average {os.getloadavg()[0]:.2f})")
    return best


def measure_bare_ray_job(model_dir: str, threads: int, tmp: Path, auto_class: str = "AutoModel",
                         device: str = "cpu") -> float:
    """Wall seconds of ``bare_ray_job.py`` as a fresh process with a fresh local Ray, as
    ``raypipe_run`` starts raypipe (a RuntimeError if it fails)."""
    from bench.raypipe_run import raypipe_env

    cmd = [sys.executable, str(HERE / "bare_ray_job.py"), "--model", model_dir,
           "--threads", str(threads), "--auto-class", auto_class, "--device", device]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env=raypipe_env(tmp), cwd=str(tmp))
    except subprocess.TimeoutExpired:
        raise RuntimeError("bare Ray job timed out after 600 s (more --threads than cores?)") from None
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"bare Ray job failed (exit {done.returncode}): {tail}")
    return seconds


def measure_write(rows: int, width: int, folder: Path, seed: int = 0) -> float:
    """Seconds to write ``rows`` float32 vectors of ``width`` as one uncompressed Parquet file
    with a fixed-size binary column, and to sha256 its bytes (the data is made beforehand)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    item = width * 4
    data = np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32)
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(item), rows,
                                                  [None, pa.py_buffer(data)])
    table = pa.table({"x": column})
    path = folder / "floor.parquet"
    t0 = time.perf_counter()
    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False,
                   row_group_size=max(1, (64 << 20) // item))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    seconds = time.perf_counter() - t0
    os.remove(path)
    return seconds
