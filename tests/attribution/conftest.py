"""Models for the attribution tests: tiny saved checkpoints, and a classifier whose answer is known.

Loaded checkpoints are module-scoped (each test module gets its own copy, so one module's use
cannot leak into another's); the presence classifier is trained once per session (~1 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; with several, OpenMP spinning on a shared 2-core
    machine made a 32-wide matmul take ~20 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(path: str, auto_class: str):
    from raypipe.models.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    return load_model_and_tokenizer(path, auto_class=auto_class, device_map="cpu")


def _encode(tokenizer, texts: list[str], padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Padded ``input_ids`` / ``attention_mask`` ``(n, l)`` (rows of different lengths)."""
    tokenizer.padding_side = padding_side
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.fixture(scope="session")
def encode():
    """``encode(tokenizer, texts, padding_side="right") -> {"input_ids", "attention_mask"}``."""
    return _encode


@pytest.fixture(scope="session")
def tiny_bert_classifier_path(models_dir) -> str:
    """A 2-layer, hidden-32 BERT classifier (MiniLM tokenizer) saved with save_pretrained.

    Initialised with std 0.3 instead of BERT's 0.02: at 0.02 a random classifier's logits
    barely move with the input (~1e-5), which would let gradient comparisons pass vacuously.
    """
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tests.models.tiny_models import minilm_path

    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, vocab_size=30522, num_labels=2, initializer_range=0.3,
    )
    directory = models_dir / "bert-classifier-sensitive"
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def bert_classifier(tiny_bert_classifier_path):
    """(model, tokenizer): tiny random BERT with a 2-class head, eval mode."""
    return load(tiny_bert_classifier_path, "AutoModelForSequenceClassification")


@pytest.fixture(scope="module")
def gpt2_lm(tiny_gpt2_path):
    return load(tiny_gpt2_path, "AutoModelForCausalLM")


@pytest.fixture(scope="module")
def llama_lm(tiny_llama_path):
    return load(tiny_llama_path, "AutoModelForCausalLM")


@dataclass(frozen=True)
class PresenceTask:
    """A classifier trained so that class 1 <=> token ``marker`` is in the sequence."""

    model: torch.nn.Module
    marker: int
    cls: int
    sep: int
    pad: int
    content: tuple[int, int]
    """Content token ids are drawn from ``range(*content)`` (the marker is not among them)."""

    def sample(self, n: int, length: int, generator: torch.Generator, with_marker: torch.Tensor):
        """ids ``(n, length)``: CLS, content, SEP; rows with ``with_marker`` carry one marker."""
        ids = torch.randint(*self.content, (n, length), generator=generator)
        where = torch.randint(1, length - 1, (n,), generator=generator)
        rows = torch.nonzero(with_marker).flatten()
        ids[rows, where[rows]] = self.marker
        ids[:, 0], ids[:, -1] = self.cls, self.sep
        return ids


@pytest.fixture(scope="session")
def presence_task() -> PresenceTask:
    """Tiny BERT (vocab 16, hidden 16, 1 layer) trained 300 Adam steps on synthetic sequences.

    A known answer for sanity checks: only the marker token decides the class, so a faithful
    attribution of class 1 ranks the marker first. Reaches 100% accuracy in ~1 s.
    """
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2, pad_token_id=0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    # bos/eos on the config so the baseline keeps CLS / SEP without a tokenizer
    config.bos_token_id, config.eos_token_id = 1, 2
    model = BertForSequenceClassification(config)
    task = PresenceTask(model=model, marker=3, cls=1, sep=2, pad=0, content=(4, 16))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixture: set up before the autouse one_torch_thread
    model.train()
    for _ in range(300):
        labels = torch.rand(64, generator=generator) < 0.5
        ids = task.sample(64, 8, generator, labels)
        loss = model(input_ids=ids, labels=labels.long()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    torch.set_num_threads(threads)
    labels = torch.rand(256, generator=generator) < 0.5
    with torch.no_grad():
        accuracy = (model(input_ids=task.sample(256, 8, generator, labels)).logits.argmax(-1) == labels).float().mean()
    assert accuracy == 1.0, f"presence classifier did not learn its task (accuracy {accuracy:.3f})"
    return task
