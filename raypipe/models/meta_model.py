"""A weightless copy of a model, for planning a job on the driver.

``accelerate.init_empty_weights`` builds the module tree on the meta device: split points can be
resolved and validated, and sizes read, in a second and with no memory, however large the model.
"""
from __future__ import annotations

import torch

from raypipe.models.loading import load_config, load_tokenizer, resolve_auto_class


def load_meta_model(model: str, *, auto_class=None, trust_remote_code: bool = False,
                    tokenizer: str | None = None) -> tuple[torch.nn.Module, object]:
    """``(meta-device model, fast tokenizer)``; raises ModelLoadError for an unknown model."""
    from accelerate import init_empty_weights

    config = load_config(model, trust_remote_code=trust_remote_code)
    model_class = resolve_auto_class(auto_class, getattr(config, "architectures", None))
    with init_empty_weights():
        meta = model_class.from_config(config, trust_remote_code=trust_remote_code)
    causal = type(meta).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    return meta.eval(), load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code,
                                       causal=causal)
