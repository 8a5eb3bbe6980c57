"""Split text into sentences with a regular-expression splitter.

No model is downloaded (the workers have no internet), so this is a rule-based splitter in the
spirit of Punkt's orthographic heuristics, tuned for English prose and docstrings:

- a sentence ends at ``.``, ``!``, ``?``, runs of them (``?!``) or an ellipsis (``...``, ``…``),
  plus any closing quotes or brackets right after (``."``, ``?)``), when followed by whitespace
  or the end of a line;
- every line break is a boundary, so blank lines (paragraphs) are too;
- no split after common abbreviations (``e.g.``, ``Mr.``, ``etc.``), dotted abbreviations
  (``U.S.``), single-letter initials (``J. Smith``), inside decimals (``3.14``) or names
  (``example.com``), nor when the next word starts with a lowercase letter (``"Why?" she asked``).
"""

from __future__ import annotations

import re

# Word before a final "." (lowercased, without that ".") that marks an abbreviation, not an end.
ABBREVIATIONS: frozenset[str] = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt rev hon gen col lt sgt capt cmdr gov sen rep
    vs etc cf al approx ca viz resp esp incl excl dept est
    no nos fig figs eq eqs vol vols ed eds ch sec pp op
    inc ltd co corp bros
    jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue tues wed thu thur thurs fri sat sun
    """.split()
)

_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")
# Terminal punctuation, then closing quotes/brackets. Group 1 is the punctuation alone.
_TERMINATOR = re.compile(r"((?:\.\.+|…|[.!?])+)[\"'”’»)\]}]*")
_WORD_BEFORE_DOT = re.compile(r"([^\W\d_][\w.]*)$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, in order.

    ``text[start:end]`` is a sentence without surrounding whitespace; whitespace-only text gives
    ``[]``. The spans do not overlap and only whitespace lies between them.
    """
    spans: list[tuple[int, int]] = []
    line_start = 0
    for brk in _LINE_BREAK.finditer(text):
        spans.extend(_split_line(text, line_start, brk.start()))
        line_start = brk.end()
    spans.extend(_split_line(text, line_start, len(text)))
    return spans


def _split_line(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans of the line ``text[start:end]`` (which holds no line break)."""
    spans: list[tuple[int, int]] = []
    sentence_start = start
    for match in _TERMINATOR.finditer(text, start, end):
        if _is_sentence_end(text, match, start, end):
            spans.extend(_strip(text, sentence_start, match.end()))
            sentence_start = match.end()
    spans.extend(_strip(text, sentence_start, end))
    return spans


def _is_sentence_end(text: str, match: re.Match[str], line_start: int, line_end: int) -> bool:
    after = match.end()
    if after < line_end and not text[after].isspace():
        return False  # 3.14, example.com, e.g.x
    punctuation = match.group(1)
    if punctuation == ".":
        word = _WORD_BEFORE_DOT.search(text, line_start, match.start())
        if word is not None:
            w = word.group(1).lower()
            if w in ABBREVIATIONS or "." in w or len(w) == 1:
                return False  # e.g. / U.S. / J. Smith
    next_word = after
    while next_word < line_end and text[next_word].isspace():
        next_word += 1
    return next_word == line_end or not text[next_word].islower()


def _strip(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` narrowed to exclude whitespace, or ``[]`` if nothing else is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [(start, end)] if start < end else []
