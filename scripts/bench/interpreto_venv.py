"""Create the side venv that holds interpreto (it needs nnsight<0.8, raypipe needs nnsight 0.8).

The venv lives under ``.bench/`` (git-ignored). torch is installed first, pinned to the version
of the main venv, so pip takes the local CPU wheel instead of resolving a CUDA build when
interpreto's own requirements are processed.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

INTERPRETO_VERSION = "0.5.2"
TORCH_VERSION = "2.13.0"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def run_in_venv(venv: Path, script: Path, args: list[str], timeout: float) -> dict:
    """Run one of the side-venv job scripts, hub offline: the JSON object its last stdout line
    holds, or a RuntimeError with why (exit status and its last lines, or the timeout)."""
    import json
    import os

    try:
        done = subprocess.run([str(venv_python(venv)), str(script), *args], capture_output=True,
                              text=True, timeout=timeout,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(str(err)) from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def is_ready(venv: Path) -> bool:
    """True when the venv exists and can import interpreto."""
    python = venv_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import interpreto"], capture_output=True, timeout=300)
    return probe.returncode == 0


def ensure_interpreto_venv(venv: Path, log=print) -> str | None:
    """Make sure ``venv`` can import interpreto; return None when ready, else why it is not."""
    if is_ready(venv):
        return None
    t0 = time.perf_counter()
    log(f"installing interpreto=={INTERPRETO_VERSION} into {venv} (one time, about a minute)")
    python = str(venv_python(venv))
    steps = [] if venv_python(venv).exists() else [["python3", "-m", "venv", str(venv)]]
    steps += [[python, "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}"],
              [python, "-m", "pip", "install", "-q", f"interpreto=={INTERPRETO_VERSION}"]]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"`{' '.join(cmd)}` failed: {err}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(cmd[-3:])}` exited {done.returncode}: {' | '.join(tail)}"
    if not is_ready(venv):
        return "interpreto was installed but does not import"
    log(f"interpreto venv ready in {time.perf_counter() - t0:.0f} s")
    return None


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".bench/interpreto-venv")
    problem = ensure_interpreto_venv(target)
    print(problem or "ready")
    sys.exit(1 if problem else 0)
