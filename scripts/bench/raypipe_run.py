"""Run ``raypipe extract`` as a user would (a subprocess of the installed CLI) and time it.

The end-to-end time is measured from outside (process start to exit: imports, Ray start-up,
tokenization, model actors, writes, manifest). The steady-state number is the job's own
"model stage" figure: tokens over the seconds the actors spent on shards (forward + reduce +
write), read from the printed summary and from the store's manifest.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_RE = re.compile(r"throughput\s.*?([\d,\.]+)\s+tokens/s in the model stage")


@dataclass
class RaypipeRun:
    split: str
    ok: bool
    wall_seconds: float = 0.0          # measured around the subprocess
    tokens: int = 0
    model_seconds: float = 0.0         # from the manifest summary
    model_tokens_per_second: float = 0.0
    job_wall_seconds: float = 0.0      # the job's own wall time (after imports)
    plan_cached: bool | None = None    # the driver planned from the plan cache
    printed_model_tokens_per_second: float | None = None
    error: str = ""
    command: list = field(default_factory=list)


def raypipe_env(tmp: Path, plan_cache: str = "off") -> dict:
    """``plan_cache``: the job's RAYPIPE_CACHE_DIR (``off``: plan as a first job on a model)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_AUTH_MODE="disabled",
               RAY_TMPDIR=str(tmp), RAYPIPE_CACHE_DIR=plan_cache)
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray: start-up is part of what is timed
    return env


def run_raypipe(raypipe: Path, model: str, corpus: Path, split: str, out: Path, threads: int,
                tmp: Path, extra: list[str] = (), timeout: float = 3600,
                plan_cache: str = "off") -> RaypipeRun:
    """One fresh job (``out`` must not exist, or raypipe would resume it)."""
    cmd = [str(raypipe), "extract", "--model", model, "--corpus", str(corpus),
           "--split-points", split, "--granularity", "token", "--out", str(out),
           "--torch-threads", str(threads), "--no-progress", *extra]
    run = RaypipeRun(split=split, ok=False, command=cmd)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=raypipe_env(tmp, plan_cache), cwd=str(tmp))
    except subprocess.TimeoutExpired:
        run.error = f"timed out after {timeout:.0f} s"
        return run
    except OSError as err:
        run.error = f"cannot start {raypipe}: {err}"
        return run
    run.wall_seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        run.error = f"exit {done.returncode}: " + " | ".join(tail)
        return run
    match = SUMMARY_RE.search(done.stdout)
    if match:
        run.printed_model_tokens_per_second = float(match.group(1).replace(",", ""))
    run = _read_manifest(run, out)
    shutil.rmtree(out, ignore_errors=True)  # a full-corpus store is ~0.5 GB; only its summary is used
    return run


def _read_manifest(run: RaypipeRun, out: Path) -> RaypipeRun:
    try:
        summary = json.loads((out / "manifest.json").read_text())["summary"]
    except (OSError, KeyError, ValueError) as err:
        run.error = f"no usable manifest summary in {out}: {err}"
        return run
    run.tokens = int(summary.get("tokens", 0))
    run.model_seconds = float(summary.get("model_seconds", 0.0))
    run.job_wall_seconds = float(summary.get("wall_seconds", 0.0))
    run.model_tokens_per_second = float(summary.get("model_tokens_per_second", 0.0))
    run.plan_cached = summary.get("plan_cached")
    run.ok = run.tokens > 0 and run.model_seconds > 0
    if not run.ok:
        run.error = f"manifest summary has no tokens/model time: {summary}"
    return run


def best_of(runs: list[RaypipeRun]) -> RaypipeRun:
    """The best of repeated runs: shortest end-to-end and shortest model stage, each on its own."""
    good = [r for r in runs if r.ok]
    if not good:
        return runs[-1]
    best = min(good, key=lambda r: r.wall_seconds)
    fastest_model = min(good, key=lambda r: r.model_seconds)
    return RaypipeRun(**{**best.__dict__, "model_seconds": fastest_model.model_seconds,
                         "model_tokens_per_second": fastest_model.model_tokens_per_second})
