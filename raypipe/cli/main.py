"""``raypipe``: extract activations at corpus scale on Ray, then look inside the store."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import textwrap

from raypipe import __version__
from raypipe.cli.arguments import add_config_arguments, config_from_args

EXTRACT_EXAMPLES = """\
examples:
  # every token's activation after block 1 and at an MLP, from a local GPT-2, 2 actors:
  raypipe extract --model ./gpt2 --corpus docs.txt --split-points 1,transformer.h.2.mlp \\
      --granularity token --actors 2 --out runs/gpt2-acts

  # word vectors (mean of their tokens) from a JSONL corpus, float16 on disk, on 4 GPUs:
  raypipe extract --model meta-llama/Llama-3.1-8B --corpus data.jsonl --text-column body \\
      --granularity word --aggregation mean --dtype bfloat16 --store-dtype float16 \\
      --num-gpus 1 --actors 4 --out s3://bucket/acts

  # the same job from a YAML file (keys are the option names), on a cluster:
  ray job submit --working-dir . -- raypipe extract --config job.yaml

Re-running the same command resumes: complete shards are kept, the rest are redone.
"""


ATTRIBUTE_EXAMPLES = """\
examples:
  # which words drive a sentiment classifier's predicted class (KernelSHAP, 64 coalitions):
  raypipe attribute --model ./sst2-classifier --corpus reviews.txt --method kernel_shap \\
      --granularity word --n-samples 64 --out runs/shap

  # both classes, as probabilities, occlusion with the [MASK] token, 2 actors:
  raypipe attribute --model ./clf --corpus reviews.jsonl --method occlusion --target 0,1 \\
      --mode softmax --baseline mask --actors 2 --out runs/occ

  # a causal LM's continuation (given in a column), integrated gradients per word:
  raypipe attribute --model ./gpt2 --corpus prompts.jsonl --target-column answer \\
      --method integrated_gradients --mode log_softmax --out runs/ig

Read the result: from raypipe import AttributionStore; AttributionStore("runs/shap").table()
Look at it:      raypipe show runs/shap --out shap.html
"""


FIT_EXAMPLES = """\
examples:
  # a TopK SAE with 512 concepts, 16 active per unit, 2 passes, on a GPU:
  raypipe fit --store runs/acts --split-point encoder.layer.5 --method topk_sae --concepts 512 \\
      --top-k 16 --epochs 2 --num-gpus 1 --out runs/sae

  # NMF concepts of a ReLU'd split point, fitted on a 1 GB uniform sample of the store:
  raypipe fit --store runs/acts --method nmf --concepts 32 --memory-budget-mb 1024 --out runs/nmf

Use it: from raypipe import ConceptModel; m = ConceptModel.load("runs/sae"); m.encode(x)
Re-running the same command after a crash resumes from the last checkpoint.
"""


def build_parser() -> argparse.ArgumentParser:
    from raypipe.config import ExtractConfig

    parser = argparse.ArgumentParser(
        prog="raypipe",
        description="Interpretability at corpus scale on Ray: stream a model's activations at "
                    "chosen split points into a Parquet store.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `raypipe demo`, then `raypipe inspect runs/demo/activations` and open "
               "runs/demo/report.html.")
    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    extract = sub.add_parser(
        "extract", help="stream activations of a corpus into an ActivationStore",
        description=textwrap.dedent("""\
            Run a model over a corpus on a pool of Ray actors and write the activations at the
            chosen split points, one row per unit (token, word, sentence, ...), into a Parquet
            store with a manifest."""),
        epilog=EXTRACT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(extract, ExtractConfig)

    attribute = sub.add_parser(
        "attribute", help="explain a corpus: perturbation or gradient attributions per unit",
        description=textwrap.dedent("""\
            Explain every document of a corpus with an attribution method. Perturbation methods
            make masks on CPU tasks, pack the perturbed inputs of many documents into full
            token-budget batches on the model actors, and estimate scores back on CPU tasks;
            gradient methods run through captum on the input embeddings. Output: a Parquet
            attribution store, one row per (document, target)."""),
        epilog=ATTRIBUTE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.attribution.config import AttributeConfig

    add_config_arguments(attribute, AttributeConfig)

    faith = sub.add_parser(
        "faithfulness", help="insertion / deletion AUC of an attribution store, on the actor pool",
        description="Delete (or insert) units in order of decreasing attribution and score the "
                    "model after each step, as a distributed job over an attribution store; also "
                    "a seeded random order per document for comparison. Lower deletion AUC and "
                    "higher insertion AUC mean more faithful attributions.",
        epilog="example:\n  raypipe faithfulness --store runs/shap --out runs/shap-faith",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.attribution.faithfulness_job import FaithfulnessConfig

    add_config_arguments(faith, FaithfulnessConfig)

    fit = sub.add_parser(
        "fit", help="fit a concept dictionary (SAE, NMF, PCA, ...) on an ActivationStore",
        description=textwrap.dedent("""\
            Fit a concept dictionary on one split point of an ActivationStore, in a Ray trainer
            actor that streams the store (sparse autoencoders train on the stream and checkpoint;
            batch methods fit a uniform reservoir sample within --memory-budget-mb). Output:
            dictionary.safetensors + dictionary.json, loadable with ConceptModel.load(DIR)."""),
        epilog=FIT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.concepts.fit_config import FitConfig

    add_config_arguments(fit, FitConfig)

    interpret = sub.add_parser(
        "interpret", help="top-activating units of every concept over a whole store",
        description="Encode every row of an ActivationStore with a fitted concept model (one Ray "
                    "task per shard, merged exactly) and keep each concept's top-activating units "
                    "with a context window, plus its activation frequency.",
        epilog="example:\n  raypipe interpret --store runs/acts --concepts runs/sae --top-k 20 "
               "--out runs/interp\n  raypipe report runs/interp --out concepts.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.interpretation.interpret_config import InterpretConfig

    add_config_arguments(interpret, InterpretConfig)

    grads = sub.add_parser(
        "concept-gradients", help="gradient of a model output w.r.t. concept activations, per document",
        description="Splice a fitted concept model into the split point (h -> decode(encode(h)) + "
                    "residual) and take the gradient of the chosen output w.r.t. the concept "
                    "activations, over a corpus on the model actor pool (interpreto's "
                    "concept_output_gradient, at corpus scale).",
        epilog="example:\n  raypipe concept-gradients --model ./clf --corpus reviews.txt --concepts "
               "runs/sae --target predicted --out runs/cgrad",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.interpretation.concept_gradient_job import ConceptGradientConfig

    add_config_arguments(grads, ConceptGradientConfig)

    report = sub.add_parser("report", help="write a self-contained HTML concept browser",
                            description="One card per concept: top contexts with the activating "
                                        "unit highlighted, frequency, metrics.")
    report.add_argument("interpretation", help="the --out directory of `raypipe interpret`")
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument("--max-concepts", type=int, default=500, help="cards shown (default 500)")

    show = sub.add_parser("show", help="write a self-contained HTML page of an attribution store",
                          description="Render an attribution store as one offline HTML page: "
                                      "unit heatmaps per (document, target), and for generation "
                                      "the (target token x unit) matrix.")
    show.add_argument("store", help="attribution store directory (the --out of `raypipe attribute`)")
    show.add_argument("--out", required=True, help="HTML file to write")
    show.add_argument("--max-docs", type=int, default=200, help="documents shown (default 200)")

    mine = sub.add_parser(
        "mine", help="concept mining in one job: extract -> fit -> interpret -> report",
        description="Extract activations, fit a concept dictionary, find every concept's top "
                    "units over the whole corpus and write an HTML concept browser. Each stage "
                    "resumes: re-run the same command after a crash.",
        epilog="example:\n  raypipe mine --model ./gpt2 --corpus docs.txt --split-point 6 "
               "--method topk_sae --concepts 512 --out runs/mine\n  ray job submit --working-dir . "
               "-- raypipe mine --config mine.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from raypipe.mining import MineConfig

    add_config_arguments(mine, MineConfig)

    inspect = sub.add_parser("inspect", help="summarise a store: manifest, shards, first rows",
                             description="Print what an ActivationStore holds and how to read it.")
    inspect.add_argument("store", help="store directory")
    inspect.add_argument("--rows", type=int, default=5, help="how many units to show (default 5)")

    demo = sub.add_parser(
        "demo", help="run the embedded default job (concept mining: MiniLM over the stdlib docstrings)",
        description="Concept mining on a local Ray with nothing but the install: MiniLM token "
                    "activations (last block) for the Python standard library's docstrings, a "
                    "TopK SAE, every concept's top tokens, an HTML concept browser.")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--max-docs", type=int, default=4000,
                      help="documents to embed (default 4000 of ~9,800; 0 = all)")
    demo.add_argument("--actors", type=int, default=1, help="model actors (default 1)")
    return parser


_NEGATIVE_LIST = re.compile(r"^-\d+,")


def join_negative_values(argv: list[str]) -> list[str]:
    """``--split-points -2,-1`` → ``--split-points=-2,-1``: argparse takes ``-2,-1`` for an
    option (only a lone ``-2`` passes as a negative number), but counting blocks from the end
    is the natural way to name the last ones. Only that flag takes such lists."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--split-points" and _NEGATIVE_LIST.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "extract":
            return _extract(args)
        if args.command == "attribute":
            return _attribute(args)
        if args.command == "faithfulness":
            from raypipe.attribution.faithfulness_job import FaithfulnessConfig, evaluate_faithfulness

            summary = evaluate_faithfulness(config_from_args(FaithfulnessConfig, args))
            print(json.dumps(summary, indent=1, default=str))
            return 0
        if args.command == "fit":
            return _fit(args)
        if args.command == "interpret":
            from raypipe.interpretation.interpret_job import InterpretConfig, interpret_concepts

            summary = interpret_concepts(config_from_args(InterpretConfig, args))
            print(f"interpreted    {summary['n_concepts']} concepts over {summary['rows']:,} rows "
                  f"({summary['dead_concepts']} never fire)\nwritten        {args.out}/"
                  f"top_activations.parquet, concepts.parquet\nlook at it:    raypipe report "
                  f"{args.out} --out {args.out}/concepts.html")
            return 0
        if args.command == "concept-gradients":
            from raypipe.interpretation.concept_gradient_job import (ConceptGradientConfig,
                                                                     concept_gradients_job)

            summary = concept_gradients_job(config_from_args(ConceptGradientConfig, args))
            print(json.dumps(summary, indent=1, default=str))
            return 0
        if args.command == "report":
            from raypipe.report.concept_page import render_concept_page

            print(render_concept_page(args.interpretation, args.out, max_concepts=args.max_concepts))
            return 0
        if args.command == "show":
            from raypipe.report import render_attribution_page

            print(render_attribution_page(args.store, args.out, max_docs=args.max_docs))
            return 0
        if args.command == "mine":
            from raypipe.mining import MineConfig, mine_concepts

            result = mine_concepts(config_from_args(MineConfig, args))
            print(f"concept report: {result['report']}")
            return 0
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "demo":
            from raypipe.demo import run_demo

            run_demo(out=args.out, max_docs=args.max_docs or None, actors=args.actors)
            return 0
    except KeyboardInterrupt:
        print("raypipe: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line for known user errors
        cause = _task_cause(err)
        if _is_user_error(cause):
            print(f"raypipe {args.command}: error: {cause}", file=sys.stderr)
            return 2
        raise
    return 1


def _extract(args: argparse.Namespace) -> int:
    from raypipe.config import ExtractConfig
    from raypipe.extraction import extract_activations
    from raypipe.extraction.report import print_summary

    config = config_from_args(ExtractConfig, args)
    result = extract_activations(config)
    print_summary(result)
    return 0


def _attribute(args: argparse.Namespace) -> int:
    from raypipe.attribution.config import AttributeConfig
    from raypipe.attribution.pipeline import attribute

    config = config_from_args(AttributeConfig, args)
    r = attribute(config)
    rate = r.run_forward_rows / r.model_seconds if r.model_seconds else 0.0
    print(f"store          {r.store}\n"
          f"task           {r.kind}, method {config.method}, granularity {config.granularity}\n"
          f"documents      {r.documents:,}  (skipped empty: {r.skipped_empty}, "
          f"unreadable: {r.unreadable}, "
          + (f"no usable continuation: {r.skipped_continuations}, " if r.kind == "generation" else "")
          + f"truncated: {r.truncated}, non-UTF-8 decoded: {r.decode_fallbacks})\n"
          f"rows           {r.rows:,} (document, target) rows\n"
          f"shards         {r.shards_written} written, {r.shards_skipped} already complete\n"
          f"forwards       {r.forward_rows:,} distinct sequences scored"
          + (f" ({r.mask_rows - r.forward_rows:,} repeated perturbations reused)"
             if r.mask_rows > r.forward_rows else "") + "\n"
          f"throughput     {rate:,.0f} perturbed sequences/s in the model stage, "
          f"{r.wall_seconds:.1f} s end to end\n"
          + "".join(f"problem        row {p}: {m}\n" for p, m in r.problems[:5])
          + f"\nread it:       from raypipe import AttributionStore; "
          f"AttributionStore({r.store!r}).table()")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from raypipe.concepts.fit_config import FitConfig
    from raypipe.concepts.trainer import fit_concepts

    summary = fit_concepts(config_from_args(FitConfig, args))
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items()
                        if isinstance(v, (int, float)))
    print(f"dictionary     {summary['out']}  ({summary['method']}, {summary['n_concepts']} concepts "
          f"x {summary['dim']} dims, split point {summary['split_point']})\n"
          f"metrics        {metrics}\n"
          f"took           {summary['seconds']:.1f} s\n"
          f"\nuse it:        from raypipe import ConceptModel; "
          f"m = ConceptModel.load({summary['out']!r}); m.encode(x); m.dictionary")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from raypipe.extraction.report import describe_store

    print(describe_store(args.store, rows=args.rows))
    return 0


def _task_cause(err: Exception) -> Exception:
    """The exception a Ray task or actor raised (its message without Ray's traceback)."""
    if "ray" in sys.modules:
        from ray.exceptions import RayTaskError

        if isinstance(err, RayTaskError) and isinstance(err.cause, Exception):
            return err.cause
    return err


def _is_user_error(err: Exception) -> bool:
    from raypipe.config import ConfigError
    from raypipe.corpus import CorpusError
    from raypipe.models import ModelLoadError, SplitPointError
    from raypipe.concepts.sae_training import ResumeMismatchError
    from raypipe.concepts.trainer import FitInputError
    from raypipe.store import StoreExistsError

    return isinstance(err, (ConfigError, CorpusError, ModelLoadError, SplitPointError,
                            StoreExistsError, FileNotFoundError, FitInputError,
                            ResumeMismatchError))


def run() -> None:
    """The ``raypipe`` console script: ``main()``, then a quick exit.

    When ``main`` returns, every shard and the manifest are written, closed and renamed into
    place; a normal interpreter exit would then spend ~1.8 s (2 cores) tearing down torch,
    transformers and Ray's threads. So the output and logs are flushed, the driver leaves Ray
    cleanly (``stop_ray``: a local Ray it started is stopped, a joined cluster is only
    disconnected from), and the process leaves with ``os._exit``. An exception escaping
    ``main`` takes the normal exit (with its traceback). Python callers use ``main()``, which
    returns.
    """
    code = main()
    if "ray" in sys.modules:
        from raypipe.runtime import stop_ray

        stop_ray()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
