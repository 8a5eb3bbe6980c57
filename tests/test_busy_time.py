import itertools
import random

import pytest

from raypipe import busy_time
from raypipe.busy_time import BusyClock, StageTime, union_seconds


def test_busy_clock_counts_overlapping_calls_once(monkeypatch):
    now = iter([0.0, 3.0, 5.0, 10.0, 11.0])  # the clock is read when busy starts and at leave
    monkeypatch.setattr(busy_time.time, "perf_counter", lambda: next(now))
    walls = itertools.count(100.0)
    monkeypatch.setattr(busy_time.time, "time", lambda: next(walls))
    clock = BusyClock()
    clock.enter()             # t=0: busy from here
    clock.enter()             # a second call while busy: nothing to read
    first = clock.leave()     # t=3
    second = clock.leave()    # t=5: idle from here
    clock.enter()             # t=10
    third = clock.leave()     # t=11
    assert [b for b, _ in (first, second, third)] == [3.0, 2.0, 1.0]  # sum 6 = |[0,5] u [10,11]|
    assert [w for _, w in (first, second, third)] == [100.0, 101.0, 102.0]


def test_union_seconds_counts_overlaps_once():
    assert union_seconds([]) == 0.0
    assert union_seconds([(0, 5), (10, 11)]) == 6
    assert union_seconds([(0, 5), (3, 8), (1, 2)]) == 8      # nested and overlapping
    assert union_seconds([(4, 6), (0, 4)]) == 6              # touching, unsorted


def test_union_seconds_equals_a_brute_force_grid():
    rng = random.Random(0)
    for _ in range(50):
        intervals = [(a, a + rng.randint(0, 6)) for a in (rng.randint(0, 30) for _ in range(8))]
        covered = {t for a, b in intervals for t in range(a, b)}  # unit cells [t, t+1)
        assert union_seconds(intervals) == len(covered)


def test_stage_time_of_two_actors_side_by_side():
    stage = StageTime()
    # actor A busy [0, 10] in two shards, actor B [2, 12] in one: the pool worked 12 s
    stage.add(6.0, 6.0)
    stage.add(4.0, 10.0)
    stage.add(10.0, 12.0)
    assert stage.actor_seconds == 20.0
    assert stage.wall_seconds == 12.0
    stage.add(3.0, None)  # a shard recorded before busy_until existed: counted on its own
    assert stage.actor_seconds == 23.0
    assert stage.wall_seconds == pytest.approx(15.0)


def test_stage_time_never_exceeds_actor_seconds_on_a_real_wall_clock():
    # CI once saw 0.18205595 > 0.18205583: (until - d, until) near 1.8e9 s rounds ~1e-7 s longer
    rng = random.Random(1)
    for _ in range(2000):
        stage = StageTime()
        for _ in range(rng.randint(1, 3)):
            stage.add(rng.random(), 1.8e9 + rng.random() * 1e5)
        assert 0 < stage.wall_seconds <= stage.actor_seconds
