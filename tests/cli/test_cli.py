"""The command line: help that teaches, config files, clear errors with non-zero exits."""
from __future__ import annotations

import subprocess
import sys

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
    assert "0 written, 1 already complete" in capsys.readouterr().out
