"""A job's driver starts Ray before it imports torch (the plan thread imports it meanwhile).

On 2 cores, torch + transformers take ~1.3 s to import; when the driver's first imports pulled
them in, Ray's start waited for them (a 100-sentence job took ~1.9 s longer). These modules
must stay importable without torch, and ``raypipe --help`` must not load it.
"""
from __future__ import annotations

import subprocess
import sys

DRIVER_MODULES = [
    "raypipe", "raypipe.cli.main", "raypipe.config", "raypipe.store", "raypipe.granularity",
    "raypipe.extraction.pipeline", "raypipe.extraction.report", "raypipe.extraction.plan",
    "raypipe.extraction.extract_stage", "raypipe.extraction.tokenize_stage", "ray.data", "raypipe.attribution.pipeline",
    "raypipe.attribution.config", "raypipe.mining", "raypipe.concepts.fit_config",
    "raypipe.interpretation.interpret_config", "raypipe.runtime",
]


def _loads_torch(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_driver_modules_do_not_import_torch():
    assert _loads_torch("\n".join(f"import {m}" for m in DRIVER_MODULES)) == "False"


def test_help_does_not_import_torch():
    code = ("import contextlib, io\nfrom raypipe.cli.main import build_parser\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        build_parser().parse_args(['extract', '--help'])\n"
            "    except SystemExit:\n        pass")
    assert _loads_torch(code) == "False"


def test_lazy_aggregate_is_the_function():
    from raypipe.granularity import aggregate
    from raypipe.granularity.aggregation import aggregate as direct

    assert aggregate is direct
