"""How long a job's model stage took: per actor busy time, and its union over an actor pool.

A job reports its model stage's throughput (tokens/s, perturbed sequences/s). Summing the
shards' durations gives actor-seconds: with two actors working side by side that is twice the
stage's wall time, and the throughput printed would be halved. So each shard also reports when
its busy interval ended (``busy_until``, a wall clock readable across the processes of a node),
and the driver takes the length of the union of all intervals: the time during which at least
one actor of the pool was working.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class BusyClock:
    """Wall time during which at least one call of this actor is in progress.

    With overlapping calls the per-shard durations add up to more than the time the actor was
    working; the job's "model stage" throughput needs the union. Each finished call takes the
    busy time accrued since the previous one finished, so the sum over shards is the union.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0  # start of the busy time not yet returned by ``leave``

    def enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def leave(self) -> tuple[float, float]:
        """End one call; returns ``(busy seconds since the previous leave (or since the actor
        became busy), the wall-clock time now)``: the interval is ``[now - busy, now]``."""
        with self._lock:
            now = time.perf_counter()
            self._active -= 1
            busy, self._since = now - self._since, now
            return busy, time.time()


def union_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class StageTime:
    """Accumulates shards' ``(seconds, busy_until)``: actor-seconds and the pool's wall time.

    A shard without ``busy_until`` (a store written before raypipe recorded it) counts as an
    interval of its own, as if no other shard overlapped it.
    """

    def __init__(self) -> None:
        self.actor_seconds = 0.0
        self._intervals: list[tuple[float, float]] = []
        self._unplaced = 0.0

    def add(self, seconds: float, busy_until: float | None) -> None:
        seconds = max(0.0, float(seconds))
        self.actor_seconds += seconds
        if busy_until is None:
            self._unplaced += seconds
        else:
            self._intervals.append((float(busy_until) - seconds, float(busy_until)))

    @property
    def wall_seconds(self) -> float:
        """The union's length, never more than ``actor_seconds``.

        An interval is stored as ``(busy_until - seconds, busy_until)`` on a wall clock near
        1.8e9 s, where a float64 step is ~2e-7 s: ``end - start`` can come back a few 1e-7 s
        longer than ``seconds``. The union of intervals is never longer than their summed
        lengths, so the rounding is clamped away rather than reported as a faster pool.
        """
        return min(union_seconds(self._intervals) + self._unplaced, self.actor_seconds)


class ModelStageTimes:
    """For a job's result dataclass that keeps its shards' busy intervals in ``self.stage``."""

    stage: StageTime

    @property
    def model_seconds(self) -> float:
        """The model stage's wall time: at least one actor busy with a shard."""
        return self.stage.wall_seconds

    @property
    def actor_seconds(self) -> float:
        """The actors' busy seconds summed (equal to ``model_seconds`` with one actor)."""
        return self.stage.actor_seconds
