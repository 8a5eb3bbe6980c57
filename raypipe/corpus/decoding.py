"""Decode bytes as UTF-8, falling back to a legacy encoding, and never fail.

Real corpora (rt-polarity, old web scrapes) mix UTF-8 with Windows-1252/Latin-1. Crashing on
them loses a whole job; replacing bytes with U+FFFD silently changes the text. Instead each
line/cell is decoded as UTF-8 when valid, else with the fallback encoding, and the caller counts
the fallbacks. Bytes the fallback cannot decode either (cp1252 leaves 0x81, 0x8D, 0x8F, 0x90,
0x9D undefined) are mapped to the Latin-1 character of the same value, which is total.
"""

from __future__ import annotations

import codecs

from raypipe.corpus.documents import CorpusError

_LATIN1_ERRORS = "raypipe.corpus.latin1"


def _latin1_for_undecodable(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: decode the offending bytes as Latin-1 (every byte is valid)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_LATIN1_ERRORS, _latin1_for_undecodable)


def check_encoding(encoding: str) -> str:
    """Return the canonical codec name, or raise ``CorpusError`` naming the bad encoding.

    Checked when a corpus is opened so that a typo fails before any shard is scheduled.
    """
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError) as exc:
        raise CorpusError(
            f"unknown fallback encoding {encoding!r}; pass a Python codec name such as 'cp1252' or 'latin-1'"
        ) from exc


def decode_with_fallback(raw: bytes, fallback_encoding: str) -> tuple[str, bool]:
    """Decode ``raw`` as UTF-8, else with ``fallback_encoding`` (Latin-1 for bytes it lacks).

    Returns ``(text, used_fallback)`` so the caller can count fallbacks.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode(fallback_encoding, errors=_LATIN1_ERRORS), True
