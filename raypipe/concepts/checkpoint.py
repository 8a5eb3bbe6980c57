"""Save and load a training checkpoint of a streaming SAE run, atomically.

Layout of a checkpoint directory (``out_dir/checkpoint/``):
    checkpoint.safetensors  every tensor: "model.<state_dict key>", "model_extra.<attr>",
                            "optimizer.<param index>.<state key>", "rng.<name>",
                            "dead.rows_since_fired"
    checkpoint.json         counters (step, epoch, rows_in_epoch), optimizer param groups,
                            scheduler state, dead-tracker rows_seen, history, config, data identity

Why safetensors for the optimizer too: Adam's state is tensors keyed by parameter index plus
plain numbers, which split cleanly into the tensor file and the JSON; nothing is pickled, so a
checkpoint can be loaded without trusting it with code execution (``torch.load`` would need
``weights_only`` care).

Why a directory swap: the two files must belong to the same step. Both are written into a
hidden temporary sibling directory, the old checkpoint is renamed aside, the new one renamed in,
and the old one deleted. A crash at any point leaves either the old or the new checkpoint
complete; ``load_checkpoint`` falls back to the set-aside one when the swap was interrupted.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "raypipe.sae_checkpoint/1"
TENSORS_NAME = "checkpoint.safetensors"
JSON_NAME = "checkpoint.json"
# Tensors that overcomplete keeps as plain attributes (not in state_dict) but that training
# changes: BatchTopKSAE's running threshold, used by its inference path.
EXTRA_TENSOR_ATTRS = ("running_threshold",)


class CheckpointError(ValueError):
    """A checkpoint directory exists but cannot be read back."""


def save_checkpoint(dir: str | os.PathLike, *, step: int, epoch: int, rows_in_epoch: int,
                    sae: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    rng_state: dict[str, torch.Tensor], dead_tracker, history: list[dict],
                    config, data: dict | None = None) -> None:
    """Write (or replace) the checkpoint in ``dir`` atomically; see the module docstring.

    ``scheduler`` is any object with ``state_dict()`` returning JSON-able values (LambdaLR);
    ``dead_tracker`` a ``metrics.DeadLatentTracker``; ``config`` a dataclass or dict;
    ``data`` identifies the training stream (store, split, rows) so a resume can check it.
    """
    target = Path(dir)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in sae.state_dict().items():
        tensors[f"model.{key}"] = value
    for attr in EXTRA_TENSOR_ATTRS:
        value = getattr(sae, attr, None)
        if isinstance(value, torch.Tensor):
            tensors[f"model_extra.{attr}"] = value
    opt_state = optimizer.state_dict()
    opt_scalars: dict[str, dict] = {}
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                opt_scalars.setdefault(str(index), {})[key] = value
    for name, value in rng_state.items():
        tensors[f"rng.{name}"] = value
    rows_since_fired, rows_seen = dead_tracker.state()
    tensors["dead.rows_since_fired"] = rows_since_fired
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    record = {
        "format": FORMAT, "step": int(step), "epoch": int(epoch),
        "rows_in_epoch": int(rows_in_epoch),
        "optimizer": {"param_groups": opt_state["param_groups"], "scalars": opt_scalars},
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "dead_rows_seen": int(rows_seen),
        "history": history,
        "config": asdict(config) if is_dataclass(config) else dict(config),
        "data": data or {},
    }
    blob = json.dumps(record, indent=1, default=_jsonable)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    old = _aside(target)
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / TENSORS_NAME), metadata={"format": FORMAT})
        with open(tmp / JSON_NAME, "w") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if _is_complete(target):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        elif target.exists():
            shutil.rmtree(target)  # a partial directory: nothing worth keeping
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(dir: str | os.PathLike) -> dict | None:
    """``dir`` → the checkpoint as a dict, or None when there is none.

    Keys: step, epoch, rows_in_epoch, model (state_dict tensors), model_extra ({attr: tensor}),
    optimizer (a state_dict for ``optimizer.load_state_dict``), scheduler (its state_dict or
    None), rng_state ({name: tensor}), dead_tracker ((rows_since_fired, rows_seen)), history,
    config (dict), data (dict). Tensors are on CPU.
    """
    target = Path(dir)
    if not _is_complete(target):
        target = _aside(target)  # the swap was interrupted after the old one was set aside
        if not _is_complete(target):
            return None
    try:
        record = json.loads((target / JSON_NAME).read_text())
        tensors = load_file(str(target / TENSORS_NAME))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {target} is unreadable ({exc}); delete the directory "
                              "to restart training from scratch") from exc
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{target / JSON_NAME} has format {record.get('format')!r}, "
                              f"expected {FORMAT!r}; delete {target} to restart training")

    model, extra, rng = {}, {}, {}
    opt_state: dict[int, dict] = {int(i): dict(v) for i, v in
                                  record["optimizer"]["scalars"].items()}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "model":
            model[rest] = value
        elif kind == "model_extra":
            extra[rest] = value
        elif kind == "optimizer":
            index, _, name = rest.partition(".")
            opt_state.setdefault(int(index), {})[name] = value
        elif kind == "rng":
            rng[rest] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g
              for g in record["optimizer"]["param_groups"]]
    return {
        "step": record["step"], "epoch": record["epoch"],
        "rows_in_epoch": record["rows_in_epoch"],
        "model": model, "model_extra": extra,
        "optimizer": {"state": opt_state, "param_groups": groups},
        "scheduler": record["scheduler"], "rng_state": rng,
        "dead_tracker": (tensors["dead.rows_since_fired"], record["dead_rows_seen"]),
        "history": record["history"], "config": record["config"], "data": record["data"],
    }


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _is_complete(path: Path) -> bool:
    return (path / TENSORS_NAME).is_file() and (path / JSON_NAME).is_file()


def _jsonable(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"checkpoint.json cannot hold {type(value).__name__} {value!r}")
