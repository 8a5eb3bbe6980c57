"""One OS thread for every torch op of a model actor.

Ray Data builds a callable class on one thread and runs its calls on another (a thread pool
inside the actor, even with one call at a time), so a plain actor loads its model on one thread
and forwards on a second. On a CPU each OS thread that runs torch ops starts its own OpenMP
team, and once two teams exist in a process the forwards of either were measured 20-40% slower
on 2 cores (1.75 instead of 1.99 cores busy); a forward loop run entirely on one side thread is
as fast as on the main thread. On a GPU one thread also keeps one stream of device work.

So a model actor creates a ``TorchThread`` first and runs its model load and every call's torch
work through it; work without torch (Parquet writes, checksums, pickling) stays on the caller's
thread and can overlap the next forward.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class TorchThread:
    """A single worker thread; ``run`` blocks the caller until its function has run there."""

    def __init__(self, name: str = "raypipe-torch") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)`` behind the work already queued; calls run in order."""
        return self._pool.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the torch thread; its exception is raised here."""
        return self.submit(fn, *args, **kwargs).result()
