"""Pieces every raypipe HTML report is built from: escaping, a diverging colour scale, CSS.

Why one module: a report is a single self-contained file (no CDN, no external fonts or scripts,
so it opens offline and from an email attachment), so each page inlines the same stylesheet and
draws colours the same way. The attribution page uses it now; the concept report reuses it, so a
score reads the same colour in both.

Colours: negative → blue, 0 → white, positive → red (the two ends of ColorBrewer's RdBu), with
the intensity linear in ``value / scale`` and clipped at ±1. ``scale`` is chosen by the caller
(per document here), which the legend states.
"""
from __future__ import annotations

import html
import math
import struct
from collections.abc import Sequence

NEGATIVE_RGB = (33, 102, 172)   # blue end of the diverging scale
POSITIVE_RGB = (178, 24, 43)    # red end
MISSING_RGB = (200, 200, 200)   # NaN / absent score
_DARK_TEXT_FROM = 0.55          # |value/scale| above which text is drawn white for contrast


def escape(value: object) -> str:
    """Any value → text safe inside HTML element content and quoted attributes."""
    return html.escape(str(value), quote=True)


def format_score(score: float) -> str:
    """A score as shown to people: signed, 4 significant digits."""
    if math.isnan(score):
        return "nan"
    return "0" if score == 0 else f"{score:+.4g}"


def _as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def exact_score(score: float) -> str:
    """A score for ``data-score``: the shortest text that reads back as the same float32.

    Stores keep float32 scores, so 0.9 comes back as 0.899999976...; shown as "0.9".
    """
    if not math.isfinite(score) or abs(score) > 3.4e38:
        return f"{score:.9g}"
    target = _as_float32(score)
    for digits in range(1, 10):
        text = f"{score:.{digits}g}"
        if _as_float32(float(text)) == target:
            return text
    return f"{score:.9g}"


def symmetric_scale(scores: Sequence[float]) -> float:
    """max |score| over the finite scores, or 1.0 when they are all 0/NaN (all white)."""
    finite = [abs(s) for s in scores if not math.isnan(s)]
    peak = max(finite, default=0.0)
    return peak if peak > 0 else 1.0


def diverging_rgb(score: float, scale: float) -> tuple[int, int, int]:
    """Score → (r, g, b): white at 0, blue at -scale, red at +scale, clipped beyond."""
    if math.isnan(score):
        return MISSING_RGB
    t = max(-1.0, min(1.0, score / scale)) if scale > 0 else 0.0
    end = POSITIVE_RGB if t > 0 else NEGATIVE_RGB
    a = abs(t)
    return tuple(round(255 + (c - 255) * a) for c in end)  # type: ignore[return-value]


def diverging_colour(score: float, scale: float) -> str:
    """Score → a CSS hex colour on the diverging scale."""
    return "#{:02x}{:02x}{:02x}".format(*diverging_rgb(score, scale))


def colour_style(score: float, scale: float) -> str:
    """Inline ``style`` value: background on the scale, white text where the colour is dark."""
    dark = not math.isnan(score) and scale > 0 and abs(score / scale) > _DARK_TEXT_FROM
    return f"background:{diverging_colour(score, scale)}" + (";color:#fff" if dark else "")


def join_units(starts: Sequence[int], ends: Sequence[int]) -> list[str]:
    """The separator shown before each unit: one space where the spans leave a gap.

    The document text is not stored, only each unit's span; a gap between one unit's end and the
    next one's start held whitespace (or text left unexplained), shown as a single space.
    """
    seps, prev_end = [], None
    for start, end in zip(starts, ends):
        seps.append(" " if prev_end is not None and start > prev_end else "")
        prev_end = end if prev_end is None else max(prev_end, end)
    return seps


def highlighted_text(units: Sequence[str], starts: Sequence[int], ends: Sequence[int],
                     scores: Sequence[float], scale: float,
                     notes: Sequence[str] | None = None) -> str:
    """The document rebuilt from its units, each a ``<span class="unit">`` coloured by score.

    Each span carries ``data-index``, ``data-score`` (exact) and a ``title`` tooltip with the
    score (plus ``notes[i]`` where given, e.g. a Sobol first-order index).
    """
    parts = []
    for i, (sep, unit, score) in enumerate(zip(join_units(starts, ends), units, scores)):
        tip = f"{unit}: {format_score(score)}" + (f" ({notes[i]})" if notes and notes[i] else "")
        parts.append(f'{sep}<span class="unit" data-index="{i}" data-score="{exact_score(score)}" '
                     f'style="{colour_style(score, scale)}" title="{escape(tip)}">'
                     f"{escape(unit)}</span>")
    return f'<div class="doc-text">{"".join(parts)}</div>'


def legend(note: str) -> str:
    """The colour legend: a gradient bar from -max to +max, with ``note`` saying what max is."""
    stops = ", ".join(diverging_colour(v / 4, 1.0) for v in range(-4, 5))
    return (f'<div class="legend"><span class="legend-end">−max</span>'
            f'<span class="legend-bar" style="background:linear-gradient(to right, {stops})">'
            f'</span><span class="legend-end">+max</span>'
            f'<span class="legend-note">{escape(note)}</span></div>')


def definition_list(items: Sequence[tuple[str, object]]) -> str:
    """``[(label, value)]`` → a compact ``<dl>`` of facts (values that are None are skipped)."""
    rows = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
                   for k, v in items if v is not None and v != "")
    return f'<dl class="facts">{rows}</dl>'


BASE_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --card:#fff; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; padding:24px 32px; font:14px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; color:var(--fg); background:var(--bg); }
h1 { font-size:22px; margin:0 0 8px; } h2 { font-size:17px; margin:28px 0 8px; }
h3 { font-size:15px; margin:0 0 6px; } h3 .muted { font-weight:normal; }
.muted { color:var(--muted); }
.facts { display:flex; flex-wrap:wrap; gap:4px 20px; margin:8px 0 12px; }
.facts div { display:flex; gap:6px; } .facts dt { color:var(--muted); } .facts dd { margin:0; }
.note { padding:8px 12px; border-left:4px solid #d4a72c; background:#fff8c5; margin:12px 0; }
.legend { display:flex; align-items:center; gap:8px; margin:8px 0 16px; flex-wrap:wrap; }
.legend-bar { display:inline-block; width:240px; height:14px; border:1px solid var(--line); }
.legend-note { color:var(--muted); }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px;
  padding:12px 16px; margin:10px 0; }
.doc-text { line-height:1.9; white-space:normal; overflow-wrap:anywhere; margin:8px 0; }
.unit { padding:1px 1px; border-radius:3px; }
.unit:hover { outline:1px solid var(--fg); }
.top { margin:4px 0 0; padding-left:22px; }
.top li { margin:1px 0; } .top .score { color:var(--muted); font-variant-numeric:tabular-nums; }
.scroll { overflow-x:auto; max-width:100%; }
table.matrix { border-collapse:collapse; font-size:12px; margin-top:4px; }
.caption { color:var(--muted); margin-top:10px; }
table.matrix th { font-weight:normal; color:var(--muted); padding:2px 4px; white-space:pre; }
table.matrix thead th { vertical-align:bottom; }
table.matrix thead th span { writing-mode:vertical-rl; transform:rotate(180deg);
  max-height:120px; overflow:hidden; display:inline-block; }
table.matrix tbody th { text-align:right; }
table.matrix td { width:18px; min-width:18px; height:18px; border:1px solid #fff; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; }
"""


def html_document(title: str, body: str, extra_css: str = "") -> str:
    """A complete, self-contained page: inline CSS, no external resources, no scripts."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{BASE_CSS}{extra_css}</style></head>"
            f"<body>{body}</body></html>\n")
