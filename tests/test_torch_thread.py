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
