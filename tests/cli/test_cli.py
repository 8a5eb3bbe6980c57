"""The command line: help that teaches, config files, clear errors with non-zero exits."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raypipe.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raypipe.cli.main", *args], capture_output=True,
                          text=True, timeout=120)


def test_extract_help_teaches_with_examples():
    out = run_cli("extract", "--help")
    assert out.returncode == 0
    for flag in ("--model", "--corpus", "--split-points", "--granularity", "--aggregation",
                 "--text-column", "--id-column", "--dtype", "--max-length", "--actors",
                 "--num-gpus", "--batch-tokens", "--address", "--config", "examples:",
                 "ray job submit"):
        assert flag in out.stdout, flag


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("model: x\ncorpus: c.txt\nout: o\ngranularty: word\n")
    assert main(["extract", "--config", str(job)]) == 2
    err = capsys.readouterr().err
    assert "granularty" in err and "granularity" in err


def test_bad_granularity_lists_valid_names(capsys):
    assert main(["extract", "--model", "m", "--corpus", "c", "--out", "o",
                 "--granularity", "paragraph"]) == 2
    err = capsys.readouterr().err
    assert "paragraph" in err and "sentence" in err


def test_missing_required_option(capsys):
    assert main(["extract", "--corpus", "c", "--out", "o"]) == 2
    assert "model" in capsys.readouterr().err


def test_flags_override_yaml(tmp_path):
    from raypipe.cli.arguments import config_from_args
    from raypipe.cli.main import build_parser
    from raypipe.config import ExtractConfig

    job = tmp_path / "job.yaml"
    job.write_text("model: m\ncorpus: c.txt\nout: o\nsplit_points: [1, encoder.layer.2]\nactors: 3\n")
    args = build_parser().parse_args(["extract", "--config", str(job), "--actors", "2"])
    config = config_from_args(ExtractConfig, args)
    assert config.actors == 2 and config.split_points == [1, "encoder.layer.2"]


@pytest.mark.ray
def test_extract_then_inspect(ray_local, minilm_path, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("first document here\n\nsecond one, with words\n")
    out = tmp_path / "store"
    assert main(["extract", "--model", minilm_path, "--corpus", str(corpus), "--out", str(out),
                 "--granularity", "word", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "documents      2" in printed and "skipped empty: 1" in printed
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "encoder.layer.5" in shown and "'second'" in shown


@pytest.mark.ray
def test_demo_mines_concepts_offline_and_resumes(ray_local, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-docs", "40"]) == 0
    first = capsys.readouterr().out
    assert "documents      40" in first and "concept report:" in first and "#" in first
    assert (out / "report.html").is_file() and (out / "concepts" / "dictionary.json").is_file()
    assert main(["demo", "--out", str(out), "--max-docs", "40"]) == 0
    # 40 documents, one actor: the default shard size gives 4 shards of 10
    assert "0 written, 4 already complete" in capsys.readouterr().out


def test_console_script_exits_fast_but_delivers_its_output_and_exit_code(tmp_path):
    """`raypipe` leaves with os._exit once main() returns: everything it printed must still
    arrive (stdout is block-buffered in a pipe), and the exit code must be main()'s."""
    import numpy as np

    from raypipe.store import StoreWriter, write_shard
    from tests.store.store_factories import make_header, make_units

    root = str(tmp_path / "store")
    writer = StoreWriter(root, make_header(), "hash-a")
    table, _ = make_units(0, 3, np.random.default_rng(0))
    writer.record(write_shard(root, 0, table, doc_start=0, doc_end=3, stats={"docs": 3}))
    writer.finalize({"shards": 1})
    script = [str(Path(sys.executable).parent / "raypipe")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    done = subprocess.run([*script, "inspect", root], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"rows         {table.num_rows:,} in 1 shards" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].strip(), "the last line arrived"
    missing = subprocess.run([*script, "inspect", str(tmp_path / "nothing")], capture_output=True,
                             text=True, timeout=120, env=env)
    assert missing.returncode == 2 and "no activation store" in missing.stderr


@pytest.mark.ray
def test_unknown_auto_class_is_a_one_line_error(ray_local, minilm_path, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one line\n")
    code = main(["extract", "--model", minilm_path, "--corpus", str(corpus), "--out",
                 str(tmp_path / "out"), "--auto-class", "AutoModelForBogus"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "AutoModelForBogus" in err and "AutoModelForSequenceClassification" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.ray
def test_attribute_show_and_faithfulness_through_the_cli(ray_local, tmp_path, capsys):
    """The attribution commands end to end as a user types them: a real job's store becomes an
    HTML page (checked in Chromium when installed) and a faithfulness summary."""
    import json

    from tests.models.tiny_models import build_tiny_bert_classifier

    model = build_tiny_bert_classifier(tmp_path / "cls")
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("a truly wonderful film\nboring and far too long\n")
    store, page, faith = tmp_path / "occ", tmp_path / "occ.html", tmp_path / "faith"
    assert main(["attribute", "--model", model, "--corpus", str(corpus), "--method", "occlusion",
                 "--granularity", "word", "--out", str(store)]) == 0
    assert main(["show", str(store), "--out", str(page)]) == 0
    html = page.read_text()
    assert "wonderful" in html and "boring" in html and "http" not in html.split("<body")[0]
    assert main(["faithfulness", "--store", str(store), "--out", str(faith)]) == 0
    summary = json.loads((faith / "faithfulness.json").read_text())
    assert summary and (faith / "faithfulness.parquet").exists()
    try:
        from raypipe.report.chromium import dump_dom, find_chromium

        find_chromium()
    except Exception:  # noqa: BLE001 - the page checks in a browser live in tests/report
        return
    dom = dump_dom(page)
    assert "wonderful" in dom and "far" in dom


def test_negative_block_indices_need_no_equals_sign():
    from raypipe.cli.main import build_parser, join_negative_values

    argv = ["extract", "--model", "m", "--corpus", "c", "--out", "o", "--split-points", "-2,-1"]
    assert join_negative_values(argv)[-1] == "--split-points=-2,-1"
    args = build_parser().parse_args(join_negative_values(argv))
    assert args.split_points == "-2,-1"
    for untouched in (["--split-points", "-1", "--seed", "-3"], ["--", "-1,2"],
                      ["--verbose", "-1,2"]):
        assert join_negative_values(untouched) == untouched


@pytest.mark.parametrize("line,message", [
    ('docs_per_shard: "100"', r"docs_per_shard in .* must be an integer, got '100' \(str\)"),
    ("max_length: abc", r"max_length in .* must be an integer, got 'abc'"),
    ("progress: 3", r"progress in .* must be true or false"),
    ("batch_tokens: 1e3", r"batch_tokens in .* must be an integer, got '1e3'"),
])
def test_wrongly_typed_yaml_value_is_a_one_line_error(tmp_path, capsys, line, message):
    import re as _re

    job = tmp_path / "job.yaml"
    job.write_text(f"model: m\ncorpus: c.txt\nout: o\n{line}\n")
    assert main(["extract", "--config", str(job)]) == 2
    assert _re.search(message, capsys.readouterr().err)
