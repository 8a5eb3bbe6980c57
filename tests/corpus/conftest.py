"""Shared checks for corpus sources."""

from __future__ import annotations

import json
import pickle

import pytest

from raypipe.corpus import CorpusSource, ReadResult


def _check_range(source: CorpusSource, start: int, stop: int) -> ReadResult:
    """Read a range and check the invariants every source promises: every clamped position is
    accounted for exactly once, in order, and a pickled copy reads the same."""
    result = source.read_range(start, stop)
    lo, hi = min(start, len(source)), min(stop, len(source))
    positions = sorted([d.position for d in result.documents] + [p for p, _ in result.problems])
    assert positions == list(range(lo, hi))
    assert [d.position for d in result.documents] == sorted(d.position for d in result.documents)
    copy = pickle.loads(pickle.dumps(source))
    assert copy.read_range(start, stop) == result
    json.dumps(source.describe())
    assert source.describe()["count"] == len(source)
    return result


@pytest.fixture
def check_range():
    """``check_range(source, start, stop) -> ReadResult`` with the contract asserted."""
    return _check_range
