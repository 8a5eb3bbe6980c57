"""The concept page: built from a hand-written ``raypipe interpret`` output, checked in Chromium.

The three input files are written here with known frequencies, activations and contexts (the
contexts cut by the real ``context_window``), so the card order, the highlighted spans and their
shading are known. Loading the page in headless Chromium is what proves that a ``<script>`` in a
unit's text is shown as text and never run, while the page's own filter script does run.
"""
from __future__ import annotations

import json
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.interpretation.interpret_job import context_window
from raypipe.report.chromium import dump_dom, screenshot
from raypipe.report.concept_page import order_concepts, render_concept_page
from raypipe.report.html_parts import exact_score

INJECTED = '<script>document.title="pwned"</script>'
TITLE = "raypipe concepts: topk on layers.1"
# one document of units, joined by single spaces (char spans leave a gap of 1)
UNITS = ["The", "capital", "of", "France", "is", "Paris", ",", INJECTED, "said", "the",
         "guide", "in", "Lyon", "."]
# concept → (frequency, [(unit index, activation), ...] strongest first)
CONCEPTS = {
    0: (0.10, [(3, 2.0), (12, 1.0)]),                     # places
    1: (0.50, [(7, 4.0), (0, 1.0), (9, 0.5)]),            # the injected unit is its top unit
    2: (0.00, [(0, 0.0), (1, 0.0)]),                      # dead: top-k still holds zero rows
    3: (0.25, [(5, 3.0), (12, 2.5), (3, 0.75)]),
    4: (0.05, [(10, 0.2)]),
}
ORDER = [1, 3, 0, 4, 2]
METRICS = {"r2": 0.8765, "mse": 0.0123, "l0": 32.0, "dead_fraction": 0.2}


def unit_spans() -> tuple[np.ndarray, np.ndarray]:
    starts, ends, pos = [], [], 0
    for unit in UNITS:
        starts.append(pos)
        ends.append(pos + len(unit))
        pos += len(unit) + 1
    return np.array(starts), np.array(ends)


def tiny_png() -> bytes:
    """A 4x2 red PNG, written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\xb2\x18\x2b" * 4 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_interpretation(root: Path, concepts_dir: str | None = None, context: int = 3) -> str:
    """The three files `raypipe interpret` writes, for CONCEPTS over UNITS."""
    root.mkdir(parents=True, exist_ok=True)
    model_dir = root / "model"
    if concepts_dir is None:
        model_dir.mkdir(exist_ok=True)
        (model_dir / "dictionary.json").write_text(json.dumps(
            {"method": "topk", "dim": 16, "meta": {"metrics": METRICS}}))
        (model_dir / "training_curve.png").write_bytes(tiny_png())
        concepts_dir = str(model_dir)
    starts, ends = unit_spans()
    doc = ["doc-7"] * len(UNITS)
    cols: dict[str, list] = {k: [] for k in ("concept", "rank", "activation", "doc_id", "unit",
                                            "text", "char_start", "char_end", "context",
                                            "highlight_start", "highlight_end")}
    for concept, (_, tops) in CONCEPTS.items():
        for rank, (row, value) in enumerate(tops):
            ctx, h0, h1 = context_window(doc, UNITS, starts, ends, row, context)
            for key, val in (("concept", concept), ("rank", rank), ("activation", value),
                             ("doc_id", doc[row]), ("unit", row), ("text", UNITS[row]),
                             ("char_start", int(starts[row])), ("char_end", int(ends[row])),
                             ("context", ctx), ("highlight_start", h0), ("highlight_end", h1)):
                cols[key].append(val)
    pq.write_table(pa.table(cols), root / "top_activations.parquet")
    ids = sorted(CONCEPTS)
    pq.write_table(pa.table({
        "concept": ids, "frequency": [CONCEPTS[c][0] for c in ids],
        "mean_activation": [CONCEPTS[c][0] * 0.5 for c in ids],
        "top_texts": [", ".join(dict.fromkeys(UNITS[r].lower() for r, v in CONCEPTS[c][1] if v > 0))
                      for c in ids]}), root / "concepts.parquet")
    (root / "interpretation.json").write_text(json.dumps({
        "store": "/data/store", "concepts": concepts_dir, "split_point": "layers.1",
        "method": "topk", "n_concepts": len(CONCEPTS), "rows": 1000, "dead_concepts": 1,
        "metrics": METRICS, "config": {"top_k": 3}}))
    return str(root)


class TreeCollector(HTMLParser):
    """Every start tag with its attributes and ALL text inside it (descendants included)."""

    VOID = ("meta", "br", "img", "link", "input", "hr")

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "text": "", **{k: v or "" for k, v in attrs}}
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data


def parse(dom: str) -> list[dict]:
    collector = TreeCollector()
    collector.feed(dom)
    return collector.elements


def with_class(els: list[dict], cls: str) -> list[dict]:
    return [e for e in els if cls in e.get("class", "").split()]




@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("concepts")
    return render_concept_page(write_interpretation(tmp / "interp"), str(tmp / "out" / "c.html"))


@pytest.fixture(scope="module")
def dom(browser, page) -> list[dict]:
    return parse(dump_dom(page))


def test_order_is_by_frequency_with_dead_concepts_last():
    rows = [{"concept": 0, "frequency": 0.0}, {"concept": 1, "frequency": 0.2},
            {"concept": 2, "frequency": float("nan")}, {"concept": 3, "frequency": 0.9},
            {"concept": 4, "frequency": 0.2}]
    assert [c["concept"] for c in order_concepts(rows)] == [3, 1, 4, 0, 2]


def test_page_is_self_contained_and_escapes_text(page):
    html = Path(page).read_text(encoding="utf-8")
    assert html.lower().count("<script") == 1             # our filter script, nothing injected
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert 'src="data:image/png;base64,' in html          # training curve inlined


def test_max_concepts_leaves_the_least_frequent_out_with_a_note(tmp_path):
    out = render_concept_page(write_interpretation(tmp_path / "i"), str(tmp_path / "p.html"),
                              max_concepts=2, contexts_per_concept=1)
    els = parse(Path(out).read_text(encoding="utf-8"))
    assert [e["data-concept"] for e in with_class(els, "concept")] == ["1", "3"]
    assert len([e for e in els if e["tag"] == "mark"]) == 2   # one context each
    (note,) = with_class(els, "left-out")
    assert note["data-left-out"] == "3" and "3 left out" in note["text"]


def test_missing_concept_model_dir_is_skipped(tmp_path):
    out = render_concept_page(write_interpretation(tmp_path / "i", str(tmp_path / "moved")),
                              str(tmp_path / "p.html"))
    html = Path(out).read_text(encoding="utf-8")
    assert "data:image/png" not in html and "(not found)" in html
    assert len(with_class(parse(html), "concept")) == len(CONCEPTS)


def test_cards_are_ordered_by_frequency_with_dead_last(dom):
    cards = with_class(dom, "concept")
    assert [int(c["data-concept"]) for c in cards] == ORDER
    assert [float(c["data-frequency"]) for c in cards] == pytest.approx(
        [CONCEPTS[c][0] for c in ORDER])
    assert with_class(dom, "dead") == [cards[-1]]
    assert "No unit activates" in cards[-1]["text"]
    heading = next(e for e in dom if e.get("id") == "dead-concepts")
    assert dom.index(heading) < dom.index(cards[-1]) and dom.index(heading) > dom.index(cards[-2])
    assert "Concept 1" in cards[0]["text"] and "50%" in cards[0]["text"]


def test_highlights_wrap_exactly_the_unit_text(dom):
    starts, ends = unit_spans()
    marks = [e for e in dom if e["tag"] == "mark"]
    contexts = with_class(dom, "context")
    expected = [(c, row, value) for c in ORDER for row, value in CONCEPTS[c][1] if value > 0]
    assert len(marks) == len(contexts) == len(expected)
    for mark, ctx, (concept, row, value) in zip(marks, contexts, expected):
        assert mark["text"] == UNITS[row]
        full, h0, h1 = context_window(["d"] * len(UNITS), UNITS, starts, ends, row, 3)
        assert ctx["text"] == full and ctx["text"].index(mark["text"]) <= h0
        assert ctx["text"][h0:h1] == mark["text"]
        assert mark["data-activation"] == exact_score(value)
        assert exact_score(value) in mark["title"]
    # shading is per concept: each concept's top unit is full red, weaker ones lighter
    assert "background:#b2182b" in marks[0]["style"]     # concept 1, activation 4.0 of 4.0
    assert "background:#b2182b" not in marks[1]["style"]


def test_injected_unit_is_text_and_only_our_script_ran(dom):
    title = next(e for e in dom if e["tag"] == "title")["text"]
    assert title == TITLE
    scripts = [e for e in dom if e["tag"] == "script"]
    assert len(scripts) == 1 and "concept-search" in scripts[0]["text"]
    first = next(e for e in dom if e["tag"] == "mark")
    assert first["text"] == INJECTED
    search = with_class(dom, "search")[0]
    assert "hidden" not in search                           # the filter script ran


def test_header_shows_metrics_and_facts(dom):
    dts = [e["text"] for e in dom if e["tag"] == "dt"]
    dds = [e["text"] for e in dom if e["tag"] == "dd"]
    facts = dict(zip(dts, dds))
    assert facts["r2"] == "0.8765" and facts["mse"] == "0.0123" and facts["l0"] == "32"
    assert facts["method"] == "topk" and facts["split point"] == "layers.1"
    assert facts["dead concepts"] == "1" and facts["rows"] == "1000"
    assert any(e["tag"] == "img" and e["src"].startswith("data:image/png;base64,") for e in dom)


def test_screenshot(browser, page, tmp_path):
    png = Path(screenshot(page, tmp_path / "concepts.png", width=1100, height=1400))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
