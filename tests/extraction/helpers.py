"""Independent references for extraction tests: plain transformers forwards with hooks."""
from __future__ import annotations

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer


def load_plain(path: str):
    """The plain transformers model, loaded the usual way (no raypipe code)."""
    tok = AutoTokenizer.from_pretrained(path)
    archs = AutoConfig.from_pretrained(path).architectures or []
    causal = any("CausalLM" in a or "LMHead" in a for a in archs)
    model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path)
    return model.eval(), tok


def hooked_outputs(model, tokenizer, text: str, paths: list[str], max_length: int) -> tuple[dict, dict]:
    """One unpadded forward of ``text``; ``{path: (t, d)}`` captured by forward hooks, and the encoding."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for p in paths:
        def hook(_m, _inp, out, p=p):
            captured[p] = (out[0] if isinstance(out, tuple) else out)[0].detach().float()
        handles.append(modules[p].register_forward_hook(hook))
    enc = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                    return_offsets_mapping=True)
    with torch.no_grad():
        model(input_ids=torch.tensor([enc["input_ids"]]),
              attention_mask=torch.tensor([enc["attention_mask"]]))
    for h in handles:
        h.remove()
    return captured, enc


def group_mean(acts: np.ndarray, groups: list[list[int]], how: str = "mean") -> np.ndarray:
    """Brute-force aggregation with a Python loop over units."""
    rows = []
    for members in groups:
        block = acts[members]
        if how == "mean":
            rows.append(block.mean(0))
        elif how == "max":
            rows.append(block.max(0))
        elif how == "min":
            rows.append(block.min(0))
        elif how == "sum":
            rows.append(block.sum(0))
        elif how == "signed_max":
            idx = np.abs(block).argmax(0)
            rows.append(block[idx, np.arange(block.shape[1])])
        else:
            raise ValueError(how)
    return np.stack(rows)
