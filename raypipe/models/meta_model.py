"""A weightless copy of a model, for planning a job on the driver.

``accelerate.init_empty_weights`` builds the module tree on the meta device: split points can be
resolved and validated, and sizes read, in a second and with no memory, however large the model.
"""
from __future__ import annotations

import os

import torch
import transformers

from raypipe.models.loading import ModelLoadError, load_tokenizer, resolve_auto_class


def load_meta_model(model: str, *, auto_class=None, trust_remote_code: bool = False,
                    tokenizer: str | None = None) -> tuple[torch.nn.Module, object]:
    """``(meta-device model, fast tokenizer)``; raises ModelLoadError for an unknown model."""
    from accelerate import init_empty_weights

    try:
        config = transformers.AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"could not load model {model!r}: it is neither a local directory with a config.json "
            f"nor a hub id reachable from this machine (HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Pass a local path or a reachable hub id."
        ) from error
    model_class = resolve_auto_class(auto_class, getattr(config, "architectures", None))
    with init_empty_weights():
        meta = model_class.from_config(config, trust_remote_code=trust_remote_code)
    causal = type(meta).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    return meta.eval(), load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code,
                                       causal=causal)
