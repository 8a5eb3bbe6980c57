"""Session-scoped tiny models on disk (random weights) and the real MiniLM."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

try:  # `python -m pytest` from the repo root, or any import mode with tests/ importable
    from tests.models import tiny_models
except ImportError:  # pytest's default "prepend" mode puts this folder on sys.path
    import tiny_models


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_models.build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_models.build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return tiny_models.minilm_path()
