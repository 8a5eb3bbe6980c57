"""TorchThread: one worker thread, calls in order, errors raised in the caller."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from raypipe.torch_thread import TorchThread


def test_every_call_runs_on_the_same_other_thread_in_order():
    worker = TorchThread()
    seen, order = set(), []

    def job(i: int) -> int:
        seen.add(threading.get_ident())
        order.append(i)
        return i * i

    with ThreadPoolExecutor(max_workers=4) as callers:  # several callers, as Ray Data's threads
        squares = list(callers.map(lambda i: worker.run(job, i), range(20)))
    assert squares == [i * i for i in range(20)]
    assert len(seen) == 1 and threading.get_ident() not in seen
    futures = [worker.submit(job, i) for i in range(20, 25)]
    assert [f.result() for f in futures] == [i * i for i in range(20, 25)]
    assert order[-5:] == list(range(20, 25))


def test_an_error_on_the_thread_is_raised_in_the_caller_and_the_thread_goes_on():
    worker = TorchThread()

    def fail() -> None:
        raise ValueError("bad shard")

    with pytest.raises(ValueError, match="bad shard"):
        worker.run(fail)
    assert worker.run(lambda: 7) == 7


def test_lanes_run_on_their_own_threads_with_their_thread_count_and_balance_uneven_items():
    import time

    import torch

    from raypipe.torch_thread import TorchLanes

    lanes = TorchLanes(TorchThread(), 3, threads_per_lane=1)
    assert len(lanes.idents) == 3 and threading.get_ident() not in lanes.idents
    assert lanes.map(lambda lane: (lane, torch.get_num_threads()), [(), (), ()]) == \
        [(0, 1), (1, 1), (2, 1)]
    done: dict[int, int] = {}

    def work(lane: int, item: int) -> None:
        time.sleep(0.05 if item == 0 else 0.002)   # one slow item: the others go elsewhere
        done[item] = threading.get_ident()

    lanes.drain(work, list(range(30)))
    assert sorted(done) == list(range(30)) and set(done.values()) <= lanes.idents
    assert sum(1 for t in done.values() if t == done[0]) < 10   # the slow lane took few


def test_lanes_called_from_a_lane_run_its_share_inline_and_raise_the_first_error():
    from raypipe.torch_thread import TorchLanes

    first = TorchThread()
    lanes = TorchLanes(first, 2, threads_per_lane=1)
    # from lane 0 itself (as a shard's scoring does): no deadlock, lane 0's share runs inline
    seen = first.run(lambda: lanes.map(lambda lane: threading.get_ident(), [(), ()]))
    assert seen[0] == first.ident and seen[1] != first.ident

    def fail(lane: int, item: int) -> None:
        if item == 3:
            raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        first.run(lanes.drain, fail, list(range(8)))
    assert lanes.map(lambda lane, x: x * 2, [(1,), (2,)]) == [2, 4]
