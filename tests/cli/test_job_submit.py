"""A raypipe job file submitted with `ray job submit` to a real local Ray cluster; the cluster/ examples.

The cluster is started with `ray start --head` in its own process session, on loopback ports
outside Ray's worker range, with a private temp dir, and ended by killing every process of that
session (never `ray stop`, which would end every Ray of this user).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent  # the venv's bin: `ray` and the `raypipe` console script
RAY = BIN / "ray"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray runs the model actors; raypipe writes the shards.",
    "Activations at two split points, one row per word",
    "short",
    "A fifth document, so that three shards are written.",
]
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# --- the example files under cluster/ ------------------------------------------------------------

def _load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", ["job.yaml", "ray-cluster.yaml", "rayjob.yaml"])
def test_cluster_yaml_parses(name):
    assert isinstance(_load(name), dict)


def test_cluster_job_yaml_is_a_valid_extract_config():
    from raypipe.config import ExtractConfig, config_from_dict

    job = _load("job.yaml")
    valid = {f.name for f in dataclasses.fields(ExtractConfig)}
    assert set(job) <= valid, f"unknown keys in cluster/job.yaml: {sorted(set(job) - valid)}"
    config = config_from_dict(ExtractConfig, job, source="cluster/job.yaml")  # values validate too
    assert config.out.startswith("s3://") and config.num_gpus == 1


def test_cluster_launcher_yaml():
    config = _load("ray-cluster.yaml")
    assert config["provider"]["type"] == "aws"
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert "GPU" not in head.get("resources", {})
    assert any(w["resources"].get("GPU") == 1 and w["min_workers"] == 0 and w["max_workers"] == 4
               for w in workers)
    setup = "\n".join(config["setup_commands"])
    assert "pip install" in setup and "--no-deps overcomplete" in setup
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # private API of the launcher: check its schema where it is there
        return
    validate_config(prepare_config(config))


def test_kuberay_rayjob_yaml():
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"] == "raypipe extract --config cluster/job.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and runtime_env["pip"]
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    gpu_limits = [c["resources"]["limits"].get("nvidia.com/gpu")
                  for group in cluster["workerGroupSpecs"]
                  for c in group["template"]["spec"]["containers"]]
    assert 1 in gpu_limits


# --- a real local cluster ------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, outside Ray's worker port range (10002-19999)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if not 10002 <= port <= 19999:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _session_processes(sid: int) -> list:
    import psutil

    procs = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (OSError, psutil.Error):  # gone meanwhile
            pass
    return procs


def _end_session(sid: int, timeout: float = 60.0) -> None:
    """Terminate, then kill, every process of session ``sid``; return once all are gone."""
    import psutil

    deadline = time.monotonic() + timeout
    sig_kill = False
    while procs := _session_processes(sid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} still alive: {[p.pid for p in procs]}")
        for proc in procs:
            try:
                proc.kill() if sig_kill else proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        sig_kill = sig_kill or bool(alive)  # SIGTERM first; whatever outlives it gets SIGKILL


def _wait_for_dashboard(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray dashboard at {url} did not come up in {timeout:.0f} s")
        time.sleep(0.5)


def _cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(JOB_ENV)
    env["RAY_AUTH_MODE"] = "disabled"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's shell finds `raypipe`
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster started by `ray start --head`; yields the dashboard (job) URL."""
    if not RAY.exists():
        pytest.skip(f"no `ray` executable beside {sys.executable}")
    temp_dir = tempfile.mkdtemp(prefix="rpj-", dir="/tmp")  # short: Ray puts sockets under it
    (gcs, dashboard, agent_http, agent_grpc, runtime_env_agent, metrics, node_manager,
     object_manager, client_server) = _free_ports(9)
    cmd = [str(RAY), "start", "--head", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
           f"--ray-client-server-port={client_server}", "--include-dashboard=true",
           "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=_cluster_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sid = head.pid  # session leader: every Ray daemon it starts stays in this session
    try:
        out, _ = head.communicate(timeout=120)
        if head.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed ({head.returncode}):\n{out}")
        url = f"http://127.0.0.1:{dashboard}"
        _wait_for_dashboard(url)
        yield url
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        _end_session(sid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _expected_word_rows(model_path: str, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    return sum(len({w for w in tok(t).word_ids() if w is not None}) for t in texts)


def _submit(address: str, workdir, argv: list[str]) -> str:
    """`ray job submit --working-dir WORKDIR -- ARGV`; fails the test with the job's logs,
    else returns them."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    submission_id = f"raypipe-test-{uuid.uuid4().hex[:8]}"
    submit = [str(RAY), "job", "submit", "--address", address, "--submission-id", submission_id,
              "--working-dir", str(workdir), "--runtime-env-json", json.dumps({"env_vars": JOB_ENV}),
              "--", *argv]
    try:
        done = subprocess.run(submit, env=_cluster_env(), capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired:
        JobSubmissionClient(address).stop_job(submission_id)
        raise
    client = JobSubmissionClient(address)
    status = client.get_job_status(submission_id)
    assert status == JobStatus.SUCCEEDED, (
        f"job {submission_id} ended {status}; `ray job submit` exited {done.returncode}\n"
        f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-3000:]}\n"
        f"--- job logs ---\n{client.get_job_logs(submission_id)[-6000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return client.get_job_logs(submission_id)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_job_submit_runs_concept_mining(ray_cluster, tiny_bert_path, tmp_path):
    """`raypipe mine` as one submitted job: every stage's output lands where the config says."""
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "docs.txt").write_text("\n".join(CORPUS * 4) + "\n")
    out = tmp_path / "mine"
    (workdir / "mine.yaml").write_text(yaml.safe_dump({
        "model": tiny_bert_path, "corpus": "docs.txt", "out": str(out), "split_point": "1",
        "method": "topk_sae", "concepts": 8, "top_k": 2, "epochs": 1, "batch_size": 32,
        "docs_per_shard": 6, "top_activations": 3, "progress": False}))
    _submit(ray_cluster, workdir, ["raypipe", "mine", "--config", "mine.yaml"])
    assert json.loads((out / "activations" / "manifest.json").read_text())["status"] == "complete"
    assert (out / "concepts" / "dictionary.safetensors").is_file()
    assert (out / "interpretation" / "top_activations.parquet").is_file()
    assert "<html" in (out / "report.html").read_text().lower()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_job_submit_runs_a_job_file(ray_cluster, minilm_path, tmp_path):
    from raypipe import ActivationStore

    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    out = tmp_path / "store"
    (workdir / "job.yaml").write_text(yaml.safe_dump({
        "model": minilm_path,
        "corpus": "corpus.txt",  # relative: read from the job's working dir
        "out": str(out),
        "split_points": [1, -1],
        "granularity": "word",
        "aggregation": "mean",
        "actors": 1,
        "num_cpus": 1,
        "docs_per_shard": 2,
        "progress": False,
    }))
    logs = _submit(ray_cluster, workdir, ["raypipe", "extract", "--config", "job.yaml"])
    assert "look inside:" in logs, "the summary, printed just before the quick exit, arrived"

    manifest = json.loads((out / "manifest.json").read_text())
    expected = _expected_word_rows(minilm_path, CORPUS)
    assert manifest["status"] == "complete"
    assert manifest["rows"] == expected
    store = ActivationStore(out)
    assert len(store) == expected and len(store.shards) == 3
    assert len(store.split_points) == 2 and store.dim(-1) == 384
    assert store.to_numpy(-1).shape == (expected, 384)
    assert sorted(set(store.units().column("doc_id").to_pylist())) == list(range(len(CORPUS)))
