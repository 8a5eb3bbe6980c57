"""Reports: self-contained HTML pages of what a store holds, for people to read.

``render_attribution_page`` backs ``raypipe show STORE --out report.html``. The pages inline
their CSS and make no network requests, so they open offline; ``raypipe.report.chromium``
renders them headless for tests and screenshots.
"""
from raypipe.report.attribution_page import render_attribution_page

__all__ = ["render_attribution_page"]
