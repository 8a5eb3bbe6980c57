"""The names of the ways tokens are grouped into units and units are reduced to vectors.

The enum values are the names used on the command line and in job files, so they are part of
the on-disk contract (a store records which granularity and aggregation produced it).
"""

from __future__ import annotations

import enum
from typing import TypeVar

_E = TypeVar("_E", bound=enum.Enum)


def _parse_member(cls: type[_E], value: str | _E) -> _E:
    """Look up ``value`` among ``cls``'s values, ignoring case, surrounding blanks and '-' vs '_'."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{cls.__name__} must be given as a string, got {value!r} of type {type(value).__name__}"
        )
    key = value.strip().lower().replace("-", "_")
    for member in cls:
        if member.value == key:
            return member
    valid = ", ".join(m.value for m in cls)
    raise ValueError(f"unknown {cls.__name__.lower()} {value!r}: choose one of {valid}")


class Granularity(str, enum.Enum):
    """Which tokens form one unit (one row of the activation store)."""

    ALL = "all"
    """The padded (n, l, d) tensor of a batch; in-memory API only, it has no units."""
    ALL_TOKENS = "all_tokens"
    """Every token, special tokens included, one unit each."""
    TOKEN = "token"
    """Every non-special token, one unit each."""
    CLS_TOKEN = "cls_token"
    """The document's first token (position 0 of its first window)."""
    SAMPLE = "sample"
    """The whole document, aggregated over its non-special tokens."""
    WORD = "word"
    """Tokens grouped by the fast tokenizer's document-level word ids."""
    SENTENCE = "sentence"
    """Tokens grouped by the sentence that contains their first character."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Granularity) -> Granularity:
        """``Granularity.parse("Word") is Granularity.WORD``; unknown names raise ValueError."""
        return _parse_member(cls, value)


class Aggregation(str, enum.Enum):
    """How the token vectors of a unit are reduced to one vector, per dimension."""

    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    SIGNED_MAX = "signed_max"
    """The value with the largest magnitude, sign kept (ties go to the positive value)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Aggregation) -> Aggregation:
        """``Aggregation.parse("MEAN") is Aggregation.MEAN``; unknown names raise ValueError."""
        return _parse_member(cls, value)
