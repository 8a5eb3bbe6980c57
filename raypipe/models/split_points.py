"""Name the places in a model where activations are read ("split points").

A split point is either an integer — the i-th transformer block, counted in the model's
list of blocks, negatives from the end — or a module path as ``model.named_modules()``
spells it (``"encoder.layer.3"``, ``"transformer.h.0.mlp"``). Integers let one job file
work across architectures; paths reach any module.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence

import torch

_INTEGER = re.compile(r"^-?\d+$")


class SplitPointError(ValueError):
    """A split point names no module of the model, or an integer is outside the block range."""


def find_block_list(model: torch.nn.Module) -> str:
    """Path of the model's list of transformer blocks (``transformer.h``, ``model.layers``, ``encoder.layer``).

    The candidates are the ``nn.ModuleList``s; each is scored by the children of its most
    common class. The list whose such children hold the most parameters wins, then the one
    with most such children, then the first in ``named_modules`` order (an encoder-decoder's
    encoder). Parameters come first because a mixture-of-experts layer can hold more experts
    than the model has layers, yet the blocks always hold more weights than one layer's experts.

    Raises:
        SplitPointError: the model has no non-empty ModuleList.
    """
    best_path: str | None = None
    best_key: tuple[int, int] = (-1, -1)
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        dominant_class, count = Counter(type(child) for child in module).most_common(1)[0]
        n_parameters = sum(
            p.numel() for child in module if type(child) is dominant_class for p in child.parameters()
        )
        key = (n_parameters, count)
        if key > best_key:
            best_path, best_key = path, key
    if best_path is None:
        raise SplitPointError(
            f"{type(model).__name__} has no nn.ModuleList of blocks, so integer split points "
            "cannot be resolved; give split points as module paths from model.named_modules()"
        )
    return best_path


def resolve_split_points(model: torch.nn.Module, split_points: Sequence[int | str]) -> list[str]:
    """Turn integers and paths into unique module paths, sorted in ``named_modules`` order.

    ``named_modules`` order is the order modules are registered in ``__init__``, which for
    HuggingFace models is a good proxy for execution order (embeddings, blocks 0..n-1, final
    norm) but not a guarantee, and a parent is listed before its children although it
    finishes after them. `SplitModel` re-sorts by the order outputs appear in a dry run.

    Raises:
        SplitPointError: empty input, an unknown path (the message lists the closest valid
            paths), or an integer outside ``[-n_blocks, n_blocks - 1]``.
    """
    if isinstance(split_points, (str, int)):
        split_points = [split_points]
    if len(split_points) == 0:
        raise SplitPointError(
            "no split points given; pass integers (block indices, e.g. -1 for the last block) "
            "or module paths such as those of model.named_modules()"
        )
    order = {path: index for index, (path, _) in enumerate(model.named_modules()) if path}
    resolved: set[str] = set()
    for point in split_points:
        if isinstance(point, bool) or not isinstance(point, (int, str)):
            raise SplitPointError(
                f"split point {point!r} has type {type(point).__name__}; use an int or a str"
            )
        if isinstance(point, int) or _INTEGER.match(point.strip()):
            resolved.add(_block_path(model, int(point)))
        elif point in order:
            resolved.add(point)
        else:
            raise SplitPointError(_unknown_path_message(model, point, list(order)))
    return sorted(resolved, key=order.__getitem__)


def _block_path(model: torch.nn.Module, index: int) -> str:
    block_list = find_block_list(model)
    n_blocks = len(model.get_submodule(block_list))
    if not -n_blocks <= index < n_blocks:
        raise SplitPointError(
            f"split point {index} is out of range: {type(model).__name__} has {n_blocks} blocks "
            f"in {block_list!r}, so integers must lie in [{-n_blocks}, {n_blocks - 1}]"
        )
    return f"{block_list}.{index % n_blocks}"


def _unknown_path_message(model: torch.nn.Module, point: str, paths: list[str]) -> str:
    close = difflib.get_close_matches(point, paths, n=5, cutoff=0.5)
    try:
        block_list = find_block_list(model)
        n_blocks = len(model.get_submodule(block_list))
        integers = (
            f"integers in [{-n_blocks}, {n_blocks - 1}] index the {n_blocks} blocks of {block_list!r}"
        )
    except SplitPointError:
        integers = "integer split points are unavailable (no block list found)"
    suggestion = f"closest valid paths: {close}" if close else f"valid paths include: {paths[:8]}"
    return (
        f"split point {point!r} is not a module of {type(model).__name__}; {suggestion}; "
        f"{integers}. See model.named_modules() for every path."
    )
