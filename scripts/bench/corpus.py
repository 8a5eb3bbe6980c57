"""rt-polarity as one UTF-8 file, one sentence per line.

The source files are Latin-1/cp1252 bytes; their 0x85 bytes are cp1252 ellipses, which a Latin-1
decode would turn into NEL, a character that ``str.splitlines`` treats as a line break. Each line
is therefore split on ``\\n`` as bytes first and decoded on its own (cp1252, Latin-1 for the few
bytes cp1252 leaves undefined).
"""
from __future__ import annotations

from pathlib import Path

FILES = ("rt-polarity.pos", "rt-polarity.neg")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_sentences(folder: Path) -> list[str]:
    """All sentences, positive file first; blank lines dropped, surrounding spaces stripped."""
    sentences = []
    for name in FILES:
        for raw in (folder / name).read_bytes().split(b"\n"):
            text = _decode(raw).strip()
            if text:
                sentences.append(text)
    return sentences


def write_corpus(sentences: list[str], path: Path) -> Path:
    """One sentence per line, UTF-8; sentences must not contain line breaks of their own."""
    lines = [" ".join(s.split()) for s in sentences]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def available(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)
