"""The attribution page: built from small hand-written stores (no model), checked in Chromium.

The stores hold known scores, so the top unit, the colours and the matrix cells are known. The
browser checks load the page in headless Chromium (the DOM after scripts would have run), which
is what proves that a ``<script>`` inside a unit is shown as text and never executed.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from raypipe.report import render_attribution_page
from raypipe.report.chromium import ChromiumNotFoundError, dump_dom, find_chromium, screenshot
from raypipe.report.html_parts import (diverging_colour, exact_score, join_units,
                                       symmetric_scale)
from raypipe.store import ATTRIBUTION_FORMAT, StoreWriter, build_attribution_table, write_shard

INJECTED = '<script>document.title="pwned"</script>'
MODEL = "tiny-sentiment"

# doc 0 holds the injected unit; "great" is its top unit for target 1 ("positive")
CLASSIFICATION_DOCS = {
    0: (["The", "film", "was", "great", INJECTED, "!"],
        {0: [0.1, -0.2, 0.0, -0.9, 0.05, 0.0], 1: [-0.1, 0.2, 0.0, 0.9, -0.05, 0.3]}),
    1: (["Dull", "and", "slow", "."], {0: [0.7, 0.0, 0.4, 0.1], 1: [-0.7, 0.0, -0.4, -0.1]}),
    2: (["Fine", "."], {0: [0.0, 0.0], 1: [0.0, 0.0]}),
    3: (["Bad", "."], {0: [0.5, 0.1], 1: [-0.5, -0.1]}),
}
# generation: 2 continuation tokens x 3 units, row-major
GENERATION_UNITS = ["Paris", "is", "the"]
GENERATION_TOKENS = [" capital", " of"]
GENERATION_MATRIX = [[0.8, -0.1, 0.2], [0.3, 0.05, -0.4]]


def spans(units: list[str]) -> tuple[list[int], list[int]]:
    """Offsets of ``units`` joined by single spaces (no space before punctuation)."""
    starts, ends, pos = [], [], 0
    for i, unit in enumerate(units):
        if i and unit not in ("!", "."):
            pos += 1
        starts.append(pos)
        pos += len(unit)
        ends.append(pos)
    return starts, ends


def write_store(root: Path, task: str, rows: list[dict], method: str) -> str:
    header = {"model": MODEL, "task": task, "method": method, "granularity": "word",
              "mode": "softmax", "n_samples": 16, "baseline": "pad",
              "id2label": {"0": "negative", "1": "positive"}, "config": {"method": method}}
    writer = StoreWriter(str(root), header, config_hash="x", format=ATTRIBUTION_FORMAT)
    rec = write_shard(str(root), 0, build_attribution_table(rows), doc_start=0,
                      doc_end=len({r["doc_id"] for r in rows}), required=("doc_id", "target"))
    writer.record(rec)
    writer.finalize({})
    return str(root)


def make_classification_store(root: Path) -> str:
    rows = []
    for doc_id, (units, by_target) in CLASSIFICATION_DOCS.items():
        starts, ends = spans(units)
        for target, scores in by_target.items():
            rows.append(dict(doc_id=doc_id, target=target,
                             target_label=["negative", "positive"][target], units=units,
                             char_start=starts, char_end=ends, scores=scores,
                             shape=[len(units)], method="kernel_shap",
                             original_score=0.25 + 0.5 * target))
    return write_store(root, "classification", rows, "kernel_shap")


def make_generation_store(root: Path) -> str:
    starts, ends = spans(GENERATION_UNITS)
    rows = [dict(doc_id=0, target=0, target_label=" capital of", units=GENERATION_UNITS,
                 char_start=starts, char_end=ends,
                 scores=[s for r in GENERATION_MATRIX for s in r],
                 shape=[len(GENERATION_TOKENS), len(GENERATION_UNITS)],
                 target_tokens=GENERATION_TOKENS, method="occlusion", original_score=-3.5)]
    return write_store(root, "generation", rows, "occlusion")


class ElementCollector(HTMLParser):
    """Every start tag as (tag, attrs, text directly inside it), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "text": "", **{k: v or "" for k, v in attrs}}
        self.elements.append(el)
        if tag not in ("meta", "br", "img", "link", "input"):
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        if self._open:
            self._open[-1]["text"] += data


def elements(dom: str) -> list[dict]:
    parser = ElementCollector()
    parser.feed(dom)
    return parser.elements


def with_class(els: list[dict], cls: str) -> list[dict]:
    return [e for e in els if cls in e.get("class", "").split()]




@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("report")
    return {
        "classification": render_attribution_page(make_classification_store(tmp / "cls"),
                                                  str(tmp / "cls.html")),
        "generation": render_attribution_page(make_generation_store(tmp / "gen"),
                                              str(tmp / "out" / "gen.html")),
    }


@pytest.fixture(scope="module")
def classification_dom(browser, pages) -> str:
    return dump_dom(pages["classification"])


def test_colour_scale_is_white_at_zero_and_saturates_at_the_ends():
    assert diverging_colour(0.0, 1.0) == "#ffffff"
    assert diverging_colour(1.0, 1.0) == "#b2182b"      # red end
    assert diverging_colour(-2.0, 1.0) == "#2166ac"     # blue end, clipped
    assert diverging_colour(float("nan"), 1.0) == "#c8c8c8"
    assert symmetric_scale([0.0, float("nan")]) == 1.0
    assert symmetric_scale([0.2, -0.5]) == 0.5


def test_units_are_joined_with_a_space_where_their_spans_leave_a_gap():
    starts, ends = spans(["Hello", "world", "!"])
    assert join_units(starts, ends) == ["", " ", ""]


def test_page_is_self_contained_and_escapes_units(pages):
    html = Path(pages["classification"]).read_text(encoding="utf-8")
    assert "<script" not in html.lower()                     # no script of ours, none injected
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched: works offline
    assert "scaled per document" in html


def test_max_docs_leaves_documents_out_with_a_note(tmp_path):
    out = render_attribution_page(make_classification_store(tmp_path / "s"),
                                  str(tmp_path / "p.html"), max_docs=2)
    els = elements(Path(out).read_text(encoding="utf-8"))
    assert [e["data-doc-id"] for e in with_class(els, "document")] == ["0", "1"]
    (note,) = with_class(els, "left-out")
    assert note["data-left-out"] == "2" and "2 left out" in note["text"]


def test_classification_dom_shows_units_scores_and_top_unit(classification_dom):
    els = elements(classification_dom)
    assert [e["data-doc-id"] for e in with_class(els, "document")] == ["0", "1", "2", "3"]
    cards = with_class(els, "target")
    assert len(cards) == 8 and cards[1]["data-target"] == "1"
    # the injected unit is shown as text, not run: the page title is unchanged
    title = next(e for e in els if e["tag"] == "title")["text"]
    assert title == f"raypipe attributions: {MODEL}"
    assert not any(e["tag"] == "script" for e in els)
    units = [e for e in with_class(els, "unit") if "data-index" in e]
    doc0_target1 = units[6:12]
    assert [u["text"] for u in doc0_target1] == CLASSIFICATION_DOCS[0][0]
    assert INJECTED in doc0_target1[4]["text"]
    scores = CLASSIFICATION_DOCS[0][1][1]
    assert [float(u["data-score"]) for u in doc0_target1] == pytest.approx(scores)
    # doc 0 is scaled by its largest |score| (0.9): "great" is full red for target 1
    assert "background:#b2182b" in doc0_target1[3]["style"]
    assert "+0.9" in doc0_target1[3]["title"]
    top = [e for e in els if e["tag"] == "li" and "data-rank" in e]
    assert top[5]["data-rank"] == "1" and top[5]["data-index"] == "3"   # card 2: great
    assert top[5]["data-score"] == exact_score(0.9)


def test_generation_dom_shows_the_matrix(browser, pages):
    els = elements(dump_dom(pages["generation"]))
    cells = [e for e in els if e["tag"] == "td" and "data-col" in e]
    assert len(cells) == len(GENERATION_TOKENS) * len(GENERATION_UNITS)
    for cell in cells:
        expected = GENERATION_MATRIX[int(cell["data-row"])][int(cell["data-col"])]
        assert float(cell["data-score"]) == pytest.approx(expected)
    strongest = next(c for c in cells if c["data-row"] == "0" and c["data-col"] == "0")
    assert "background:#b2182b" in strongest["style"]                 # 0.8 = the max |cell|
    row_heads = [e["text"] for e in els if e["tag"] == "th" and e["text"].startswith(" ")]
    assert row_heads == GENERATION_TOKENS
    # the text is coloured by the summed column: Paris 1.1, is -0.05, the -0.2
    units = [e for e in with_class(els, "unit") if "data-index" in e]
    assert [u["text"] for u in units] == GENERATION_UNITS
    assert [float(u["data-score"]) for u in units] == pytest.approx([1.1, -0.05, -0.2])
    top = [e for e in els if e["tag"] == "li" and "data-rank" in e]
    assert top[0]["data-index"] == "0"


def test_screenshot_writes_a_png(browser, pages, tmp_path):
    png = screenshot(pages["classification"], tmp_path / "page.png", width=900, height=700)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_chromium_names_the_install_command(monkeypatch):
    monkeypatch.delenv("RAYPIPE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ChromiumNotFoundError, match="apt-get install chromium"):
        find_chromium()
