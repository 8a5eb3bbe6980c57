"""The report tests render pages in Debian's headless Chromium, or skip saying how to get it."""
from __future__ import annotations

import pytest

from raypipe.report.chromium import ChromiumNotFoundError, find_chromium


@pytest.fixture(scope="module")
def browser() -> str:
    try:
        return find_chromium()
    except ChromiumNotFoundError as exc:
        pytest.skip(f"{exc} (the HTML pages are checked in a real browser)")
