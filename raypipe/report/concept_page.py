"""``raypipe report INTERP --out concepts.html``: one self-contained HTML page to browse concepts.

What a reader needs to judge a concept is where it fires: so each concept gets a card with its
strongest units shown inside their surrounding text, the unit shaded by how strongly it fires.
Cards are ordered by firing frequency (the concepts that explain most of the corpus first);
dead concepts, which never fire, come last under their own heading, since they carry nothing to
read but their count matters when judging the dictionary.

Shading is per concept (full colour = that concept's strongest activation), because activation
magnitudes differ widely between concepts; the page says so. Everything is inlined, the training
curve as a ``data:`` URI, so the page opens offline. The optional search box is the only script
and is hidden until that script runs, so the page reads the same without JavaScript.
"""
from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from raypipe.report.html_parts import (colour_style, definition_list, diverging_colour, escape,
                                       exact_score, format_score, html_document)

TOP_FILE = "top_activations.parquet"
CONCEPTS_FILE = "concepts.parquet"
SUMMARY_FILE = "interpretation.json"
DICTIONARY_FILE = "dictionary.json"
CURVE_FILE = "training_curve.png"

CONCEPT_CSS = """
.context { white-space:pre-wrap; overflow-wrap:anywhere; line-height:1.8; margin:0; }
.contexts { margin:6px 0 0; padding-left:26px; }
.contexts li { margin:4px 0; padding:2px 0; border-bottom:1px solid #eef0f2; }
.contexts .score { float:right; color:var(--muted); font-variant-numeric:tabular-nums;
  margin-left:12px; font-size:12px; line-height:1.8; }
.top-texts { margin:2px 0 4px; } .top-texts code { background:#eef0f2; padding:0 4px;
  border-radius:3px; margin-right:4px; white-space:pre; }
.concept.dead { opacity:.75; } h2 .muted { font-weight:normal; }
.curve { max-width:min(640px, 100%); height:auto; border:1px solid var(--line); background:#fff; }
.search { margin:8px 0 12px; } .search input { font:inherit; padding:4px 8px; width:320px;
  border:1px solid var(--line); border-radius:4px; }
.legend-bar.one-sided { width:160px; }
"""

# Shows the search box and hides cards whose top texts do not contain the query. Reads only the
# data-top-texts attributes the page already has: no data is embedded in the script.
FILTER_SCRIPT = """
(function () {
  var box = document.getElementById("concept-search");
  box.closest(".search").hidden = false;
  var cards = document.querySelectorAll(".concept");
  box.addEventListener("input", function () {
    var q = box.value.trim().toLowerCase();
    cards.forEach(function (card) {
      card.hidden = q !== "" && card.dataset.topTexts.toLowerCase().indexOf(q) < 0;
    });
  });
})();
"""


def render_concept_page(interpretation_dir: str, out_path: str, max_concepts: int = 500,
                        contexts_per_concept: int = 10) -> str:
    """Write the HTML concept browser of a ``raypipe interpret`` output dir to ``out_path``.

    Shows up to ``max_concepts`` concepts (most frequent first, dead ones last) with up to
    ``contexts_per_concept`` top contexts each, and notes how many concepts were left out.
    Returns ``out_path``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if max_concepts < 1:
        raise ValueError(f"max_concepts={max_concepts}: show at least 1 concept")
    if contexts_per_concept < 0:
        raise ValueError(f"contexts_per_concept={contexts_per_concept}: must be >= 0")
    root = Path(interpretation_dir)
    missing = [f for f in (SUMMARY_FILE, CONCEPTS_FILE, TOP_FILE) if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a `raypipe interpret` output: missing "
                                f"{', '.join(missing)}; write one with `raypipe interpret --out`")
    summary = json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8"))
    concepts = order_concepts(pq.read_table(root / CONCEPTS_FILE).to_pylist())
    shown = concepts[:max_concepts]

    top = pq.read_table(root / TOP_FILE)
    if len(shown) < len(concepts):
        keep = pa.array([c["concept"] for c in shown], type=top.schema.field("concept").type)
        top = top.filter(pc.is_in(top.column("concept"), value_set=keep))
    contexts: dict[int, list[dict]] = {}
    for row in top.to_pylist():
        contexts.setdefault(int(row["concept"]), []).append(row)

    model_dir = _concept_model_dir(summary.get("concepts"))
    body = [_header(summary, model_dir, n_concepts=len(concepts), n_shown=len(shown))]
    dead_heading_done = False
    for concept in shown:
        if is_dead(concept) and not dead_heading_done:
            body.append('<h2 id="dead-concepts">Dead concepts <span class="muted">(never fire on '
                        "any row; listed last)</span></h2>")
            dead_heading_done = True
        rows = sorted(contexts.get(int(concept["concept"]), []), key=lambda r: r["rank"])
        body.append(_concept_card(concept, rows, contexts_per_concept))
    if not concepts:
        body.append('<p class="note">This interpretation has no concepts.</p>')
    body.append(f"<script>{FILTER_SCRIPT}</script>")
    title = f"raypipe concepts: {summary.get('method', '')} on {summary.get('split_point', '')}"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_document(title, "\n".join(body), CONCEPT_CSS), encoding="utf-8")
    return os.fspath(out_path)


def is_dead(concept: dict) -> bool:
    """A concept that never fired (frequency 0, or unknown)."""
    freq = concept.get("frequency")
    return freq is None or math.isnan(freq) or freq <= 0


def order_concepts(concepts: list[dict]) -> list[dict]:
    """Most frequent first, dead concepts last; ties by concept id so the order is stable."""
    return sorted(concepts, key=lambda c: (is_dead(c), -(0.0 if is_dead(c) else c["frequency"]),
                                           c["concept"]))


def _concept_model_dir(path: str | None) -> Path | None:
    """The concept model dir named in interpretation.json, or None if it was moved or deleted."""
    if not path:
        return None
    model_dir = Path(path)
    return model_dir if model_dir.is_dir() else None


def flatten_metrics(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    """``{"r2": 0.91, "sub": {"a": 1}}`` → ``[("r2", "0.91"), ("sub.a", "1")]`` for display."""
    items: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += flatten_metrics(value, f"{name}.")
        elif isinstance(value, float):
            items.append((name, f"{value:.4g}"))
        else:
            items.append((name, str(value)))
    return items


def _header(summary: dict, model_dir: Path | None, *, n_concepts: int, n_shown: int) -> str:
    dictionary: dict = {}
    if model_dir is not None and (model_dir / DICTIONARY_FILE).is_file():
        try:
            dictionary = json.loads((model_dir / DICTIONARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            dictionary = {}
    metrics = summary.get("metrics") or dictionary.get("meta", {}).get("metrics") or {}
    facts = definition_list([
        ("method", summary.get("method") or dictionary.get("method")),
        ("split point", summary.get("split_point")), ("concepts", summary.get("n_concepts")),
        ("rows", summary.get("rows")), ("dead concepts", summary.get("dead_concepts")),
        ("dim", dictionary.get("dim")), ("store", summary.get("store")),
        ("concept model", summary.get("concepts")
         if model_dir is not None else f"{summary.get('concepts')} (not found)"),
    ])
    parts = [f"<h1>Concepts · {escape(summary.get('method', ''))} on "
             f"<code>{escape(summary.get('split_point', ''))}</code></h1>", facts]
    if metrics:
        parts.append('<h2>Metrics</h2><div class="metrics">'
                     f"{definition_list(flatten_metrics(metrics))}</div>")
    curve = _curve_image(model_dir)
    if curve:
        parts.append(f"<h2>Training curve</h2>{curve}")
    parts.append(_legend())
    if n_shown < n_concepts:
        parts.append(f'<p class="note left-out" data-left-out="{n_concepts - n_shown}">Showing '
                     f"{n_shown} of {n_concepts} concepts; {n_concepts - n_shown} left out (the "
                     "least frequent; raise --max-concepts to show more).</p>")
    parts.append('<div class="search" hidden><label>Filter by top texts: <input type="search" '
                 'id="concept-search" placeholder="e.g. paris"></label></div>')
    return f'<header>{"".join(parts)}</header>'


def _curve_image(model_dir: Path | None) -> str:
    """The training curve PNG inlined as a data URI (the page must not point at other files)."""
    if model_dir is None or not (model_dir / CURVE_FILE).is_file():
        return ""
    data = base64.b64encode((model_dir / CURVE_FILE).read_bytes()).decode("ascii")
    return f'<img class="curve" alt="training curve" src="data:image/png;base64,{data}">'


def _legend() -> str:
    """A one-sided legend (0 → max): activations of a top unit are positive."""
    stops = ", ".join(diverging_colour(v / 4, 1.0) for v in range(0, 5))
    return ('<div class="legend"><span class="legend-end">0</span>'
            f'<span class="legend-bar one-sided" style="background:linear-gradient(to right, '
            f'{stops})"></span><span class="legend-end">max</span><span class="legend-note">'
            "Units are shaded per concept: full red = that concept's strongest activation. "
            "Hover a unit for its exact activation.</span></div>")


def _concept_card(concept: dict, rows: list[dict], limit: int) -> str:
    cid, dead = int(concept["concept"]), is_dead(concept)
    freq = concept.get("frequency")
    freq_text = "n/a" if freq is None or math.isnan(freq) else f"{100 * freq:.3g}%"
    mean = concept.get("mean_activation")
    mean_text = "n/a" if mean is None else format_score(float(mean)).lstrip("+")
    top_texts = concept.get("top_texts") or ""
    firing = [r for r in rows if r["activation"] is not None and r["activation"] > 0][:limit]
    scale = max((float(r["activation"]) for r in firing), default=1.0)
    head = (f'<h3>Concept {cid} <span class="muted">(fires on {freq_text} of rows · mean '
            f"activation {mean_text}" + (f" · max {_plain(scale)}" if firing else "") +
            ")</span></h3>")
    texts = "".join(f"<code>{escape(t)}</code>" for t in _split_texts(top_texts))
    texts_html = (f'<div class="top-texts"><span class="muted">Top texts: </span>{texts}</div>'
                  if texts else "")
    if firing:
        items = "".join(_context_item(r, scale) for r in firing)
        contexts = f'<ol class="contexts">{items}</ol>'
    else:
        contexts = '<div class="muted">No unit activates this concept.</div>'
    return (f'<section class="card concept{" dead" if dead else ""}" data-concept="{cid}" '
            f'data-frequency="{exact_score(float(freq or 0.0))}" '
            f'data-top-texts="{escape(top_texts)}">{head}{texts_html}{contexts}</section>')


def _plain(value: float) -> str:
    return format_score(value).lstrip("+")


def _split_texts(top_texts: str) -> Iterable[str]:
    return [t for t in (p.strip() for p in top_texts.split(",")) if t]


def _context_item(row: dict, scale: float) -> str:
    """One context with its activating unit wrapped in a shaded ``<mark class="unit">``."""
    context, h0, h1 = row["context"] or "", int(row["highlight_start"]), int(row["highlight_end"])
    h0, h1 = max(0, min(h0, len(context))), max(0, min(h1, len(context)))
    value = float(row["activation"])
    tip = (f"{row['text']}: activation {exact_score(value)} "
           f"(doc {row['doc_id']}, unit {row['unit']})")
    mark = (f'<mark class="unit" data-activation="{exact_score(value)}" '
            f'style="{colour_style(value, scale)}" title="{escape(tip)}">'
            f"{escape(context[h0:h1])}</mark>")
    return (f'<li data-rank="{int(row["rank"])}" data-doc-id="{escape(row["doc_id"])}">'
            f'<span class="score">{_plain(value)} · doc {escape(row["doc_id"])}</span>'
            f'<p class="context">{escape(context[:h0])}{mark}{escape(context[h1:])}</p></li>')
