"""plan_while_ray_starts: the plan's value with Ray up; a failed plan leaves no Ray behind."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from raypipe.runtime import plan_while_ray_starts


def test_plan_runs_in_another_thread_and_returns_its_value(ray_local):
    seen = {}

    def plan():
        seen["thread"] = threading.current_thread().name
        return 42

    assert plan_while_ray_starts(plan, None, 1, 1.0) == 42
    assert seen["thread"] != threading.current_thread().name
    assert ray_local.is_initialized()


def test_a_failed_plan_raises_its_error_and_shuts_down_the_ray_it_started(tmp_path):
    # A fresh interpreter: the session's Ray must not be the one started (and stopped) here.
    script = textwrap.dedent("""
        import os, ray
        os.environ["RAY_AUTH_MODE"] = "disabled"
        from raypipe.runtime import plan_while_ray_starts
        def plan():
            raise LookupError("no such split point: encoder.layer.99")
        try:
            plan_while_ray_starts(plan, None, 1, 1.0)
        except LookupError as exc:
            print("raised:", exc)
        print("ray up after the error:", ray.is_initialized())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert "raised: no such split point: encoder.layer.99" in done.stdout, done.stderr[-2000:]
    assert "ray up after the error: False" in done.stdout


def test_local_ray_caps_cpu_tasks_and_its_workers_see_the_offline_switches_and_stops(ray_local):
    from raypipe.runtime import cpu_task_concurrency

    assert cpu_task_concurrency(1, 1.0) is None  # the session's Ray was not started by init_ray
    # A local Ray gets no job runtime env (so its prestarted workers are used): the variables a
    # job needs in its workers must reach them by inheritance.
    script = textwrap.dedent("""
        import os
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HOME"] = "/tmp/raypipe-test-hf-home"
        import ray
        from raypipe.runtime import cpu_task_concurrency, init_ray
        init_ray(None, 2, 0.5)
        print("cap:", cpu_task_concurrency(2, 0.5), "cpus:", max(os.cpu_count(), 2))
        seen = ray.get(ray.remote(lambda: (os.environ.get("HF_DATASETS_OFFLINE"),
                                           os.environ.get("HF_HOME"))).remote())
        print("worker env:", seen)
        # stop_ray kills the autoscaler monitor first, then ray.shutdown stops the rest: every
        # process of this Ray (its own and the raylet's workers and agents) must be gone
        import time
        from raypipe.runtime import stop_ray
        def children(pid):
            kids = []
            for entry in os.listdir("/proc"):
                try:
                    if entry.isdigit() and open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1] == str(pid):
                        kids.append(int(entry))
                except OSError:
                    pass
            return kids
        node = ray._private.worker._global_node
        pids = [i.process.pid for infos in node.all_processes.values() for i in infos]
        pids += [k for p in list(pids) for k in children(p)]
        def alive(pid):
            try:
                return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False
        stop_ray()
        deadline = time.time() + 10
        while any(alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        print("processes:", len(pids), "alive after stop:", [p for p in pids if alive(p)],
              "connected:", ray.is_initialized())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    cap, cpus = done.stdout.split("cap:")[1].split("worker env:")[0].split("cpus:")
    assert int(cap) == max(1, int(cpus) - 1), done.stderr[-2000:]   # 2 actors x 0.5 CPU = 1 CPU
    assert "worker env: ('1', '/tmp/raypipe-test-hf-home')" in done.stdout, done.stderr[-2000:]
    n = int(done.stdout.split("processes:")[1].split()[0])
    assert n >= 4 and "alive after stop: [] connected: False" in done.stdout, done.stdout[-2000:]


def test_actor_torch_threads_follow_what_the_actor_reserved(monkeypatch):
    from raypipe import runtime

    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 32)
    assert runtime.actor_torch_threads(None, 1.0, 1) == 32   # a local Ray: the node's cores
    assert runtime.actor_torch_threads(None, 1.0, 4) == 8    # shared among this node's actors
    assert runtime.actor_torch_threads(None, 16.0, 8) == 16  # a cluster: what it reserved
    assert runtime.actor_torch_threads(3, 16.0, 8) == 3      # asked for
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: None)
    assert runtime.actor_torch_threads(None, 0.5, 2) == 1


def test_actor_lanes_split_cpu_threads_and_keep_one_lane_on_gpus():
    from raypipe.runtime import actor_lanes

    assert actor_lanes(None, 2, on_gpu=False) == (2, 1)
    assert actor_lanes(None, 4, on_gpu=False) == (4, 1)
    assert actor_lanes(None, 16, on_gpu=False) == (2, 8)
    assert actor_lanes(None, 1, on_gpu=False) == (1, 1)
    assert actor_lanes(1, 2, on_gpu=False) == (1, 2)
    assert actor_lanes(8, 2, on_gpu=False) == (2, 1)        # at most one lane per thread
    assert actor_lanes(3, 12, on_gpu=False) == (3, 4)
    assert actor_lanes(None, 8, on_gpu=True) == (1, 8)
