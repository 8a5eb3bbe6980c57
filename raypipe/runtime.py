"""Joining or starting Ray, shared by every job (Ray stays at the edges of the package)."""
from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FAULT_ENV = "RAYPIPE_FAULT_KILL_ONCE"  # "MARKER_PATH:N": test hook, kills an actor once at shard/step N
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", FAULT_ENV)


def init_ray(address: str | None, actors: int, num_cpus: float) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), else start a local Ray sized for the actor pool."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        # Inside `ray job submit` the job's runtime env already reaches every worker, and Ray
        # refuses to merge a second one that sets the same variables.
        runtime_env = ({"env_vars": env} if env and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
                       else None)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True,
                 logging_level=logging.WARNING)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Logical CPUs: room for every actor plus the CPU tasks, or a 2-core laptop with 2 actors
    # would have no CPU left for the other stages and stall.
    cpus = max(os.cpu_count() or 1, math.ceil(actors * num_cpus) + 1)
    # No runtime env here: a local Ray's workers inherit this process's environment (the
    # FORWARDED_ENV variables included), and a job-level runtime env would make Ray start new
    # worker processes for it instead of using the ones it prestarts with the cluster (on 2
    # cores each extra start is ~1 CPU-second beside the starting model actor).
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=True)
    _LOCAL_RAY.update(cpus=cpus, gcs=ray.get_runtime_context().gcs_address)


_LOCAL_RAY: dict = {}  # {"cpus", "gcs"} of the local Ray init_ray started in this process


def _started_here() -> bool:
    """True when the Ray this process is connected to is the local one init_ray started."""
    import ray

    return (ray.is_initialized() and bool(_LOCAL_RAY.get("gcs"))
            and ray.get_runtime_context().gcs_address == _LOCAL_RAY["gcs"])


def stop_ray() -> None:
    """Leave Ray at the end of a command: stop a local Ray started here, or only disconnect
    from a cluster this process joined (``ray.shutdown``).

    A local Ray's autoscaler monitor is killed first. Why: ``ray.shutdown`` stops Ray's
    processes one at a time, the GCS before the monitor, whose SIGTERM handler then reports to
    the dead GCS until Ray's 1 s grace period runs out: 1.0 of the 1.4 s that stopping a local
    Ray took on 2 cores (Ray 2.60). A single-node Ray has nothing to autoscale, and every shard
    and manifest is committed before this is called. Should Ray's internals differ, the
    monitor is simply left to ``ray.shutdown``.
    """
    import ray

    if not ray.is_initialized():
        return
    if _started_here():
        try:
            node = ray._private.worker._global_node
            for info in node.all_processes.get("monitor", []):
                info.process.kill()
                info.process.wait(timeout=5)
        except Exception as err:  # noqa: BLE001 - an optimization only; ray.shutdown still stops it
            logging.getLogger("raypipe").debug("autoscaler monitor left to ray.shutdown: %s", err)
    ray.shutdown()


def cpu_task_concurrency(actors: int, num_cpus: float) -> int | None:
    """How many CPU tasks of one stage may run at once beside the actor pool, or None (Ray
    Data decides) on a cluster this process joined.

    On a Ray started here, each concurrent task is one more worker process that imports
    Python, Ray and the tokenizer (~3 CPU-seconds) while the model actor is starting: on 2
    cores, capping them made a 10k-sentence extraction ~2.5 s faster end to end (A/B,
    2 rounds). The cap is the CPUs the actors leave free. A cluster's CPUs can grow
    (autoscaling), so there Ray Data keeps its own limit.
    """
    if not _started_here():
        return None
    return max(1, math.floor(_LOCAL_RAY["cpus"] - actors * num_cpus))


def plan_while_ray_starts(plan: Callable[[], T], address: str | None, actors: int,
                          num_cpus: float) -> T:
    """``plan()`` in a thread while this thread joins or starts Ray; returns what ``plan`` returns.

    A job's driver-side plan is mostly imports (transformers' model classes for the meta-device
    copy: ~4 s on 2 cores) and Ray's start is mostly waiting for its processes (~4 s): side by
    side they cost the longer of the two. If the plan fails, a Ray started here is shut down
    again before the plan's error is raised, so a bad split point still leaves nothing behind.
    """
    import ray

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = plan()
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome["error"] = exc

    started_here = not ray.is_initialized()
    worker = threading.Thread(target=run, name="raypipe-plan", daemon=True)
    worker.start()
    try:
        init_ray(address, actors, num_cpus)
    finally:
        worker.join()
    if "error" in outcome:
        if started_here and ray.is_initialized():
            ray.shutdown()
        raise outcome["error"]
    return outcome["value"]


def quiet_ray_data(log: logging.Logger) -> None:
    """Our progress bar and summary replace Ray Data's own bars and INFO lines."""
    from ray.data import DataContext

    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False


def fault_hook_args() -> dict:
    """Test hook: pass the fault variable to actors of an already-running Ray too."""
    if FAULT_ENV in os.environ:
        return {"runtime_env": {"env_vars": {FAULT_ENV: os.environ[FAULT_ENV]}}}
    return {}


def maybe_die(shard_id: int) -> None:
    """Kill this process once, at shard (or trainer step) ``shard_id``, when the fault hook asks
    for it (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    marker, _, target = spec.rpartition(":")
    if int(target) == int(shard_id) and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)


def progress_bar(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="doc", desc=desc, disable=not enabled, dynamic_ncols=True)


def actor_torch_threads(torch_threads: int | None, num_cpus: float, actors: int) -> int:
    """Torch threads of a model actor: ``torch_threads`` when given, else the CPUs it reserved
    (``--num-cpus``), or this node's cores shared among ``actors`` when that is more (a local
    Ray: 1 actor on 2 cores takes both). On a cluster, reserve what an actor should use: with
    ``--num-cpus 32`` Ray places actors where 32 CPUs are free and each runs 32 threads."""
    if torch_threads:
        return int(torch_threads)
    return max(1, int(num_cpus), (os.cpu_count() or 1) // max(1, actors))


def actor_lanes(cpu_replicas: int | None, threads: int, on_gpu: bool) -> tuple[int, int]:
    """``(lanes, torch threads per lane)`` of a model actor with ``threads`` torch threads.

    A lane is one model replica (sharing the weights) forwarding on its own thread (see
    raypipe.torch_thread.TorchLanes). On a GPU, one lane with every thread. On CPU,
    ``cpu_replicas`` lanes when given (at most one per thread), else one single-threaded lane
    per thread up to 4 threads (measured faster on 2 cores) and 2 lanes beyond that, the
    threads split evenly between them.
    """
    if on_gpu:
        return 1, threads
    if cpu_replicas is None:
        lanes = threads if threads <= 4 else 2
    else:
        lanes = max(1, min(int(cpu_replicas), threads))
    return lanes, max(1, threads // lanes)
