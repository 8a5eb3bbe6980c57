"""The collector is paused while a model actor loads and what the load made is frozen after;
later garbage is collected as usual; a collector that was off stays off."""
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


def test_paused_inside_frozen_after_and_later_garbage_collected():
    gc.enable()
    with loading_frozen_heap():
        assert not gc.isenabled()
        kept = [_Node() for _ in range(1000)]
        garbage = _cycle()
        for _ in range(100_000):  # enough allocations to set off automatic collections
            _Node()
        assert garbage() is not None  # nothing collected it while paused
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    live = {id(o) for o in gc.get_objects()}  # what a collection walks: not the frozen heap
    assert not any(id(k) in live for k in kept)
    gc.collect()
    assert gc.get_freeze_count() == frozen and garbage() is not None  # frozen, never walked
    later = _cycle()
    gc.collect()
    assert later() is None  # garbage made after the load is collected as usual


def test_a_disabled_collector_stays_disabled_on_failure_too():
    gc.disable()
    with pytest.raises(RuntimeError, match="load failed"):
        with loading_frozen_heap():
            raise RuntimeError("load failed")
    assert not gc.isenabled() and gc.get_freeze_count() > 0
