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


def visible(text: str, start: int, end: int) -> str:
    """A unit's text: its span without the whitespace at either end (byte-level and Metaspace
    tokens carry the space before them), unless it is only whitespace."""
    piece = text[start:end]
    return piece if piece.isspace() else piece.strip()


def solid_start(text: str, start: int, end: int) -> int:
    """Where a token's first non-whitespace character is (its start if it is all whitespace)."""
    piece = text[start:end]
    return start if piece.isspace() else start + len(piece) - len(piece.lstrip())


def anchor(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> int:
    """The character that places a token in one of ``spans`` (words or sentences, in order):
    its first non-whitespace one; a token that is only whitespace stays in the span it starts
    in, else goes with the span after it (the last one at the end of the text)."""
    piece = text[start:end]
    if piece and not piece.isspace():
        return solid_start(text, start, end)
    if any(s <= start < e for s, e in spans):
        return start
    return next((s for s, _ in spans if s >= start), spans[-1][0])


def word_groups(tokenizer, text: str, enc) -> list[list[int]]:
    """The token positions of each word: the tokenizer's word ids where they tell words apart
    ("a b" gives two), else words read from the text (maximal runs of non-whitespace, a token
    in the word of its first non-whitespace character, a token that is only whitespace in the
    word after it)."""
    special = enc["special_tokens_mask"]
    if len({w for w in tokenizer("a b", add_special_tokens=False).word_ids() if w is not None}) > 1:
        words: dict[int, list[int]] = {}
        for i, w in enumerate(enc.word_ids()):
            if w is not None and not special[i]:
                words.setdefault(w, []).append(i)
        return list(words.values())
    import re

    spans = [m.span() for m in re.finditer(r"\S+", text)]
    groups: dict[int, list[int]] = {}
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        if not special[i]:
            at = anchor(text, s, e, spans)
            word = next(k for k, (ws, we) in enumerate(spans) if ws <= at < we)
            groups.setdefault(word, []).append(i)
    return [groups[k] for k in sorted(groups)]
