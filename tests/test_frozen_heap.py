"""The collector is paused while a model actor loads, frees the load's garbage after, and
leaves the survivors frozen; a collector that was off stays off."""
from __future__ import annotations

import gc
import weakref

import pytest

from raypipe.frozen_heap import loading_frozen_heap


class _Node:
    pass


def _cycle() -> weakref.ref:
    """A reference cycle nobody holds; only the cyclic collector can free it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def _restore_collector():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable() if enabled else gc.disable()


def test_paused_inside_collected_and_frozen_after():
    gc.enable()
    kept = _Node()
    with loading_frozen_heap():
        assert not gc.isenabled()
        garbage = _cycle()
        gc.collect(0)  # an explicit call still works; the automatic ones are off
        garbage = _cycle()
        for _ in range(100_000):  # enough allocations to set off automatic collections
            _Node()
        assert garbage() is not None  # nothing collected it while paused
    assert gc.isenabled()
    assert garbage() is None  # freed by the collection at the end of the block
    assert gc.get_freeze_count() > 0  # kept (and all else that survived) is frozen
    assert kept is not None


def test_survivors_are_skipped_by_later_collections():
    with loading_frozen_heap():
        kept = [_Node() for _ in range(1000)]
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    gc.collect()
    assert gc.get_freeze_count() == frozen  # a full collection leaves the frozen heap alone
    live = {id(o) for o in gc.get_objects()}  # the generations a collection walks
    assert not any(id(k) in live for k in kept)


def test_a_disabled_collector_stays_disabled_and_failures_still_collect():
    gc.disable()
    with pytest.raises(RuntimeError, match="load failed"):
        with loading_frozen_heap():
            garbage = _cycle()
            raise RuntimeError("load failed")
    assert not gc.isenabled()
    assert garbage() is None
