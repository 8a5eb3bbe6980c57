"""Load a HuggingFace model and its fast tokenizer, ready for activation extraction.

One function, `load_model_and_tokenizer`, so that a Ray actor, the CLI and the tests all
load a model the same way: the same head choice, dtype spelling, device placement, eval
mode and pad-token fix.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import transformers
from packaging.version import Version

from raypipe.config import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded (missing path, unreachable hub, slow tokenizer)."""


#: The transformers auto classes a caller may name in ``auto_class``. ``"auto"`` (or ``None``)
#: is accepted too and means "choose from the checkpoint's config" (see `choose_auto_class`);
#: it is not a key here because it is a rule, not a class.
AUTO_CLASSES: dict[str, type] = {
    name: getattr(transformers, name)
    for name in (
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForMaskedLM",
        "AutoModelForTokenClassification",
        "AutoModelForQuestionAnswering",
        "AutoModelForSeq2SeqLM",
        "AutoModelForMultipleChoice",
        "AutoModelForPreTraining",
        "AutoModelForTextEncoding",
    )
    if hasattr(transformers, name)
}

_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "auto": "auto",
}

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_SEQUENCE_CLASSIFICATION_SUFFIX = "ForSequenceClassification"

# transformers renamed `torch_dtype=` to `dtype=` in 4.56 (and 5.x warns on the old name).
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def choose_auto_class(architectures: list[str] | None) -> type:
    """The auto class that loads a checkpoint whose config lists ``architectures``.

    Causal LMs keep their LM head class so the checkpoint loads without dropping or
    re-initialising weights; sequence classifiers keep theirs; everything else (BERT-style
    encoders, masked LMs, encoder-decoders) loads as the bare ``AutoModel`` trunk, which is
    what activation extraction reads from.
    """
    for architecture in architectures or ():
        if architecture.endswith(_CAUSAL_SUFFIXES):
            return transformers.AutoModelForCausalLM
        if architecture.endswith(_SEQUENCE_CLASSIFICATION_SUFFIX):
            return transformers.AutoModelForSequenceClassification
    return transformers.AutoModel


def resolve_auto_class(auto_class: str | type | None, architectures: list[str] | None) -> type:
    """Turn the ``auto_class`` argument (None, "auto", a name in AUTO_CLASSES or a class) into a class."""
    if auto_class is None or auto_class == "auto":
        return choose_auto_class(architectures)
    if isinstance(auto_class, type):
        if not hasattr(auto_class, "from_pretrained"):
            raise ConfigError(
                f"auto_class={auto_class.__name__} has no from_pretrained(); pass a transformers "
                f"auto class or model class, or one of the names {sorted(AUTO_CLASSES)}"
            )
        return auto_class
    if isinstance(auto_class, str) and auto_class in AUTO_CLASSES:
        return AUTO_CLASSES[auto_class]
    raise ConfigError(
        f"unknown auto_class {auto_class!r}; use None or 'auto' (chosen from the config), "
        f"one of {sorted(AUTO_CLASSES)}, or a transformers class"
    )


def resolve_dtype(dtype: str) -> torch.dtype | str:
    """Map the config spelling ("float32", "float16", "bfloat16", "auto") to what from_pretrained takes."""
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def default_device_map(device_map: str | dict | None) -> str | dict | None:
    """``None`` means: the whole model on the one GPU if there is one, else plain CPU loading."""
    if device_map is not None:
        return device_map
    return "cuda" if torch.cuda.is_available() else None


def actor_device_map(num_gpus: float, device_map: str | dict | None = None) -> str | dict:
    """Where a model actor puts its model: ``device_map`` when given; else the actor's GPUs
    (Ray makes only those visible: one is ``"cuda"``, several are sharded by accelerate's
    ``"auto"``); else ``"cpu"``, also when a GPU is visible to an actor that reserved none
    (it must not take memory that Ray gave to another actor)."""
    if device_map is not None:
        return device_map
    if num_gpus and torch.cuda.is_available():
        return "auto" if num_gpus > 1 else "cuda"
    return "cpu"


def is_causal_config(config: Any) -> bool:
    """Whether a config describes a decoder-only causal LM (left padding, pad = eos).

    Decided by the checkpoint's architectures when it names a causal head, else by the
    model type having a causal-LM class and no masked-LM class (BERT and RoBERTa have both
    and are encoders; GPT-2 and Llama only have the first).
    """
    if getattr(config, "is_encoder_decoder", False):
        return False
    architectures = getattr(config, "architectures", None) or ()
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def load_tokenizer(
    name: str, *, trust_remote_code: bool = False, causal: bool = False
) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer (offsets are needed to map tokens back to text); pad = eos for causal LMs."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            name, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load a tokenizer from {name!r}: pass a local directory that holds "
            f"tokenizer files or a hub id reachable from this machine (HF_HUB_OFFLINE="
            f"{_offline_flag()}), or pass tokenizer= explicitly. Cause: {error}"
        ) from error
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {name!r} is a slow (Python) tokenizer ({type(tokenizer).__name__}); "
            "raypipe needs a fast tokenizer for token offsets: save one with "
            "tokenizers / AutoTokenizer(..., use_fast=True).save_pretrained(dir) and pass tokenizer=dir"
        )
    if causal and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(model: str, *, trust_remote_code: bool = False) -> Any:
    """The model's transformers config; ModelLoadError naming the model when there is none."""
    try:
        return transformers.AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        if not trust_remote_code and "custom code" in str(error):
            raise ModelLoadError(
                f"model {model!r} ships its own Python code (auto_map in its config.json), which "
                "raypipe does not run unless asked: read that code, then pass "
                "--trust-remote-code (trust_remote_code: true in a job file)") from error
        raise ModelLoadError(
            f"could not load model {model!r}: it is neither a local directory with a config.json "
            f"nor a hub id reachable from this machine (HF_HUB_OFFLINE={_offline_flag()}). "
            f"Pass a local path or a reachable hub id. Cause: {error}"
        ) from error


def load_model(
    model: str,
    *,
    auto_class: str | type | None = None,
    dtype: str = "float32",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """Load ``model`` (local path or hub id) in eval mode, without a tokenizer.

    ``device_map`` goes to ``from_pretrained`` (accelerate), so one Ray actor can shard a
    model over its GPUs; ``None`` loads on the GPU if there is one, else on the CPU.

    Raises:
        ModelLoadError: the model cannot be found or its weights cannot be loaded.
        ValueError: ``auto_class`` or ``dtype`` is not one of the accepted values.
    """
    torch_dtype = resolve_dtype(dtype)
    config = load_config(model, trust_remote_code=trust_remote_code)
    model_class = resolve_auto_class(auto_class, getattr(config, "architectures", None))
    kwargs: dict[str, Any] = {_DTYPE_KWARG: torch_dtype, "trust_remote_code": trust_remote_code}
    placement = default_device_map(device_map)
    if placement is not None:
        kwargs["device_map"] = placement
    try:
        hf_model = model_class.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load the weights of {model!r} as {model_class.__name__}: {error}"
        ) from error
    return hf_model.eval()


def load_model_and_tokenizer(
    model: str,
    *,
    auto_class: str | type | None = None,
    dtype: str = "float32",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    tokenizer: str | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load ``model`` with `load_model` and its fast tokenizer (``tokenizer`` names another source).

    Causal LMs whose tokenizer has no pad token get ``pad_token = eos_token``.

    Raises:
        ModelLoadError: the model or tokenizer cannot be found or loaded, or the tokenizer is slow.
        ValueError: ``auto_class`` or ``dtype`` is not one of the accepted values.
    """
    hf_model = load_model(
        model,
        auto_class=auto_class,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    loaded_tokenizer = load_tokenizer(
        tokenizer or model,
        trust_remote_code=trust_remote_code,
        causal=is_causal_model(hf_model),
    )
    return hf_model, loaded_tokenizer


def is_causal_model(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a decoder-only causal LM: by its class name, else by its config."""
    if type(model).__name__.endswith(_CAUSAL_SUFFIXES):
        return True
    config = getattr(model, "config", None)
    return config is not None and is_causal_config(config)


def _offline_flag() -> str:
    return os.environ.get("HF_HUB_OFFLINE", "unset")
