"""One OS thread for every torch op of a model actor.

Ray Data builds a callable class on one thread and runs its calls on another (a thread pool
inside the actor, even with one call at a time), so a plain actor loads its model on one thread
and forwards on a second. On a CPU each OS thread that runs torch ops starts its own OpenMP
team, and once two teams exist in a process the forwards of either were measured 20-40% slower
on 2 cores (1.75 instead of 1.99 cores busy); a forward loop run entirely on one side thread is
as fast as on the main thread. On a GPU one thread also keeps one stream of device work.

So a model actor creates a ``TorchThread`` first and runs its model load and every call's torch
work through it; work without torch (Parquet writes, checksums, pickling) stays on the caller's
thread and can overlap the next forward. On a CPU, ``TorchLanes`` extends this to one such
thread per model copy (each single-threaded, or with its share of the threads).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class TorchThread:
    """A single worker thread; ``run`` blocks the caller until its function has run there."""

    def __init__(self, name: str = "raypipe-torch") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                                        initializer=self._mark)
        self._ident: int | None = None

    def _mark(self) -> None:
        self._ident = threading.get_ident()

    @property
    def ident(self) -> int | None:
        """``threading.get_ident()`` of the thread, once it has run something."""
        return self._ident

    def is_current(self) -> bool:
        """Whether the caller runs on this torch thread (work queued there would wait forever)."""
        return self._ident == threading.get_ident()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)`` behind the work already queued; calls run in order."""
        return self._pool.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the torch thread; its exception is raised here."""
        return self.submit(fn, *args, **kwargs).result()


class TorchLanes:
    """``n`` torch threads ("lanes") of one CPU model actor, each running its own model replica.

    Why: one forward with 2 OpenMP threads stalls whenever either thread is preempted (on 2
    cores Ray's own processes wake every few milliseconds), while two single-threaded forwards
    side by side only slow the one that was preempted. On all of rt-polarity (MiniLM, full
    depth, 2 cores, 3 alternating pairs) the model stage took 61.7 / 58.9 / 69.0 s with two
    lanes of one thread against 76.8 / 72.3 / 74.1 s with one lane of two threads. GPUs keep
    one lane (one stream of device work).

    Lane 0 is the thread the model was loaded on; ``torch.set_num_threads`` is applied on every
    lane itself, since the OpenMP thread count is a per-thread setting.
    """

    def __init__(self, first: TorchThread, n: int, threads_per_lane: int) -> None:
        import torch

        self.threads = [first] + [TorchThread(name=f"raypipe-torch-{i}") for i in range(1, n)]
        for lane in self.threads:
            lane.run(torch.set_num_threads, threads_per_lane)

    def __len__(self) -> int:
        return len(self.threads)

    @property
    def idents(self) -> set[int | None]:
        """The lanes' ``threading.get_ident()`` values."""
        return {t.ident for t in self.threads}

    def run(self, lane: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on lane ``lane``, behind the work already queued there."""
        return self.threads[lane].run(fn, *args, **kwargs)

    def map(self, fn: Callable[..., T], per_lane: list[tuple]) -> list[T]:
        """``fn(lane, *per_lane[lane])`` on every lane at once; their results in lane order
        (the first exception raised, after every lane has finished). A lane whose thread is
        the caller's runs its share inline."""
        return [f.result() for f in self._start([(fn, i, *args) for i, args in enumerate(per_lane)])]

    def drain(self, fn: Callable[[int, Any], None], items: list) -> None:
        """``fn(lane, item)`` for every item, each lane taking the next item as it becomes free
        (uneven items balance themselves); the first exception is raised after all stopped."""
        import queue

        todo: queue.SimpleQueue = queue.SimpleQueue()
        for item in items:
            todo.put(item)
        failed: list[BaseException] = []

        def worker(lane: int) -> None:
            while not failed:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    fn(lane, item)
                except BaseException as exc:
                    failed.append(exc)
                    raise

        self._start([(worker, i) for i in range(min(len(self.threads), max(1, len(items))))])
        if failed:
            raise failed[0]

    def _start(self, calls: list[tuple]) -> list[Future]:
        """Each ``(fn, lane, *args)`` on its lane, the caller's own lane last and inline; returns
        once all have finished."""
        futures: list[Future | None] = [None] * len(calls)
        inline = []
        for k, (fn, lane, *args) in enumerate(calls):
            if self.threads[lane].is_current():
                inline.append(k)
            else:
                futures[k] = self.threads[lane].submit(fn, lane, *args)
        for k in inline:
            fn, lane, *args = calls[k]
            future: Future = Future()
            try:
                future.set_result(fn(lane, *args))
            except BaseException as exc:  # kept for the caller, like a submitted call's
                future.set_exception(exc)
            futures[k] = future
        for future in futures:
            future.exception()
        return futures
