"""``raypipe show STORE --out report.html``: one self-contained HTML page of an attribution store.

What a reader needs to judge attributions is the text itself, coloured: so each document is
rebuilt from its stored units (the text is not stored; the spans give the spacing) and every
unit is shaded by its score. Classification rows give one card per (document, target) with the
top-ranked units; generation rows give the (continuation tokens × units) matrix plus the text
coloured by each unit's score summed over the continuation.

Colours are scaled per document (full colour = the document's largest |score|), because score
magnitudes vary by orders of magnitude between documents and methods; the page says so.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from raypipe.report.html_parts import (colour_style, definition_list, escape, exact_score,
                                       format_score, highlighted_text, html_document, legend,
                                       symmetric_scale)

TOP_K = 5


def render_attribution_page(store_dir: str, out_path: str, max_docs: int = 200) -> str:
    """Write the HTML page of the attribution store at ``store_dir`` to ``out_path``.

    Shows the first ``max_docs`` documents (in doc_id order) and notes how many were left out.
    Returns ``out_path``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from raypipe.store import AttributionStore

    if max_docs < 1:
        raise ValueError(f"max_docs={max_docs}: show at least 1 document")
    store = AttributionStore(store_dir)
    table = store.table()
    doc_ids = pc.unique(table.column("doc_id")).to_pylist()  # in first-seen, i.e. sorted, order
    shown_ids = doc_ids[:max_docs]
    if len(shown_ids) < len(doc_ids):
        keep = pa.array(shown_ids, type=table.schema.field("doc_id").type)
        table = table.filter(pc.is_in(table.column("doc_id"), value_set=keep))
    by_doc: dict[object, list[dict]] = {}
    for row in table.to_pylist():
        by_doc.setdefault(row["doc_id"], []).append(row)

    manifest = store.manifest
    body = [_header(store_dir, manifest, n_rows=len(store), n_docs=len(doc_ids),
                    n_shown=len(shown_ids))]
    body += [_document_section(doc_id, rows) for doc_id, rows in by_doc.items()]
    if not doc_ids:
        body.append('<p class="note">This store has no rows yet.</p>')
    title = f"raypipe attributions: {manifest.get('model', store_dir)}"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_document(title, "\n".join(body)), encoding="utf-8")
    return os.fspath(out_path)


def _header(store_dir: str, manifest: dict, *, n_rows: int, n_docs: int, n_shown: int) -> str:
    generation = manifest.get("task") == "generation"
    facts = definition_list([
        ("store", store_dir), ("model", manifest.get("model")), ("task", manifest.get("task")),
        ("method", manifest.get("method")), ("granularity", manifest.get("granularity")),
        ("mode", manifest.get("mode")), ("baseline", manifest.get("baseline")),
        ("samples", manifest.get("n_samples")), ("documents", n_docs), ("rows", n_rows),
        ("shown", f"{n_shown} documents"), ("status", manifest.get("status")),
    ])
    scale_note = ("Colours are scaled per document: full blue / red = minus / plus the largest "
                  "|score| in that document (over all its targets). Hover a unit for its exact "
                  "score.")
    if generation:
        scale_note = ("Colours are scaled per document: the matrix by its largest |cell|, the text "
                      "by the largest |score summed over the continuation|. Hover for exact "
                      "scores.")
    parts = [f"<h1>Attributions · {escape(manifest.get('model', ''))}</h1>", facts,
             legend(scale_note)]
    if n_shown < n_docs:
        parts.append(f'<p class="note left-out" data-left-out="{n_docs - n_shown}">Showing the '
                     f"first {n_shown} of {n_docs} documents; {n_docs - n_shown} left out "
                     "(raise --max-docs to show more).</p>")
    return f'<header>{"".join(parts)}</header>'


def _document_section(doc_id: object, rows: list[dict]) -> str:
    cards = []
    if any(len(r["shape"] or []) == 2 for r in rows):
        cards = [_generation_card(r) for r in rows]
    else:
        scale = symmetric_scale([s for r in rows for s in r["scores"]])
        cards = [_classification_card(r, scale) for r in rows]
    return (f'<section class="document" data-doc-id="{escape(doc_id)}">'
            f"<h2>Document {escape(doc_id)}</h2>{''.join(cards)}</section>")


def _score_text(value: float | None) -> str:
    return "n/a" if value is None else format_score(float(value))


def _classification_card(row: dict, scale: float) -> str:
    scores = [float(s) for s in row["scores"]]
    first = row.get("first_order")
    notes = [f"first order {format_score(float(f))}" for f in first] if first else None
    text = highlighted_text(row["units"], row["char_start"], row["char_end"], scores, scale, notes)
    return (f'<div class="card target" data-target="{escape(row["target"])}">'
            f'<h3>Target: {escape(row["target_label"])} <span class="muted">(class '
            f'{escape(row["target"])} · original score {_score_text(row["original_score"])} · '
            f"{escape(row['method'])} · scale ±{format_score(scale).lstrip('+')})</span></h3>"
            f"{text}{_top_units(row['units'], scores, scale)}</div>")


def _top_units(units: Sequence[str], scores: Sequence[float], scale: float,
               what: str = "score") -> str:
    """The TOP_K highest-scoring units (most in favour of the target), best first."""
    ranked = sorted((i for i, s in enumerate(scores) if not math.isnan(s)),
                    key=lambda i: -scores[i])[:TOP_K]
    items = "".join(
        f'<li data-rank="{rank}" data-index="{i}" data-score="{exact_score(scores[i])}">'
        f'<span class="unit" style="{colour_style(scores[i], scale)}">{escape(units[i])}</span> '
        f'<span class="score">{format_score(scores[i])}</span></li>'
        for rank, i in enumerate(ranked, start=1))
    return (f'<div class="muted">Top {len(ranked)} units by {what}</div>'
            f'<ol class="top">{items}</ol>')


def _visible(token: str) -> str:
    """A token as a header: newlines and tabs made visible, so empty-looking rows are readable."""
    return token.replace("\n", "↵").replace("\t", "⇥")


def _generation_card(row: dict) -> str:
    n_tokens, n_units = row["shape"]
    flat = [float(s) for s in row["scores"]]
    matrix = [flat[t * n_units:(t + 1) * n_units] for t in range(n_tokens)]   # (T, g)
    tokens = row["target_tokens"] or [str(t) for t in range(n_tokens)]
    units = row["units"]
    summed = [math.fsum(matrix[t][j] for t in range(n_tokens)) for j in range(n_units)]
    text_scale, cell_scale = symmetric_scale(summed), symmetric_scale(flat)
    text = highlighted_text(units, row["char_start"], row["char_end"], summed, text_scale)
    head = "".join(f'<th title="{escape(u)}"><span>{escape(_visible(u))}</span></th>'
                   for u in units)
    body = "".join(
        f'<tr data-row="{t}"><th>{escape(_visible(tok))}</th>' + "".join(
            f'<td data-row="{t}" data-col="{j}" data-score="{exact_score(s)}" '
            f'style="{colour_style(s, cell_scale)}" '
            f'title="{escape(f"{tok!r} ← {units[j]!r}: {format_score(s)}")}"></td>'
            for j, s in enumerate(matrix[t])) + "</tr>"
        for t, tok in enumerate(tokens))
    return (f'<div class="card generation" data-target="{escape(row["target"])}">'
            f'<h3>Continuation: <code>{escape(row["target_label"])}</code> <span class="muted">'
            f'(original score {_score_text(row["original_score"])} · {escape(row["method"])} · '
            f"{n_tokens} tokens × {n_units} units)</span></h3>"
            f'<div class="muted">Text coloured by each unit\'s score summed over the continuation '
            f"(scale ±{format_score(text_scale).lstrip('+')})</div>{text}"
            f"{_top_units(units, summed, text_scale, 'summed score')}"
            f'<div class="caption">Rows: continuation tokens · columns: units (scale '
            f"±{format_score(cell_scale).lstrip('+')})</div>"
            f'<div class="scroll"><table class="matrix"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div></div>")
