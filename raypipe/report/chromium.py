"""Render a report page in headless Chromium: its DOM after scripts ran, or a screenshot.

Why: a report is only correct if a browser shows it right (escaping, layout), so tests load the
page in a real browser rather than parse the HTML string. Debian's ``chromium`` package is used
as is; the flags keep it from reaching the network (background, component-update and sync
traffic, which a closed network refuses) and from touching a user profile.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ENV = "RAYPIPE_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio")


class ChromiumNotFoundError(RuntimeError):
    """No Chromium binary on this machine."""


def find_chromium() -> str:
    """Path of the Chromium binary: ``$RAYPIPE_CHROMIUM``, else the first of CANDIDATES on PATH."""
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        if shutil.which(override):
            return shutil.which(override)  # type: ignore[return-value]
        raise ChromiumNotFoundError(f"{CHROMIUM_ENV}={override!r} is not an executable; point it "
                                    "at a Chromium binary or unset it")
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise ChromiumNotFoundError(
        f"no Chromium found (looked for {', '.join(CANDIDATES)} on PATH): install it with "
        f"`apt-get install chromium` (Debian/Ubuntu), or set {CHROMIUM_ENV}=/path/to/chrome")


def _run_headless(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    with tempfile.TemporaryDirectory(prefix="rp-chromium-") as profile:
        cmd = [binary, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"headless Chromium took more than {timeout:.0f}s: "
                               f"{' '.join(cmd)}") from None
    if done.returncode != 0:
        raise RuntimeError(f"headless Chromium exited with {done.returncode}: {' '.join(cmd)}\n"
                           f"{done.stderr[-2000:]}")
    return done


def dump_dom(html_path: str | os.PathLike, timeout: float = 60.0) -> str:
    """The page's DOM, serialized after load (so after any script on it ran)."""
    uri = Path(html_path).resolve().as_uri()
    return _run_headless(["--dump-dom", uri], timeout).stdout


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1280,
               height: int = 1600, timeout: float = 60.0) -> str:
    """Save a ``width`` x ``height`` PNG of the top of the page; returns ``png_path``."""
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    uri = Path(html_path).resolve().as_uri()
    _run_headless([f"--screenshot={png}", f"--window-size={width},{height}", uri], timeout)
    if not png.is_file():
        raise RuntimeError(f"headless Chromium wrote no screenshot at {png}")
    return str(png)
