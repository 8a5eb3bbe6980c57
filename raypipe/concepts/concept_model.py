"""A fitted concept dictionary: encode activations to concept codes and back, save, load.

One type for every method, so the rest of raypipe (corpus-wide encoding, top inputs per
concept, reports) never cares how a dictionary was obtained. A model is its method name, a
dict of tensors and a JSON-able ``meta``; it keeps no sklearn or overcomplete object, so a
saved model is two plain files (``dictionary.safetensors``, ``dictionary.json``) and loads
without pickle. Sparse autoencoders are rebuilt from their ``state_dict`` and constructor
kwargs into the overcomplete class; batch methods encode with ``batch_methods``' tensor math.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from raypipe.concepts.batch_methods import (NON_DIFFERENTIABLE_ENCODE, decode_codes, encode_codes,
                                            required_tensors)
from raypipe.concepts.methods import SAE_CLASS_NAMES, SAE_METHODS, check_method

TENSORS_FILE = "dictionary.safetensors"
JSON_FILE = "dictionary.json"
FORMAT = "raypipe.concept_model"
FORMAT_VERSION = 1
SAE_PREFIX = "sae."
RUNNING_THRESHOLD = "running_threshold"   # BatchTopKSAE's inference threshold (not in its state_dict)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(eq=False)
class ConceptModel:
    """A concept dictionary of ``n_concepts`` directions in a ``dim``-dimensional activation space.

    ``tensors`` (read-only once built) hold everything encode/decode need: for batch methods a
    ``dictionary`` (K, d) plus method-specific ones (see ``batch_methods``); for SAEs the
    ``sae.*`` state_dict, plus ``dictionary``. ``meta`` is JSON-able: n_concepts, dim, method
    params, metrics, and what the caller adds (split_point, store, training config); SAEs need
    ``meta["sae_kwargs"]``, the constructor kwargs.

    ``encode`` and ``decode`` are differentiable torch code for every method but one:
    ``dictionary_learning`` encodes with sklearn's ``sparse_encode`` (a numpy solver), so its
    ``encode`` raises on an x that requires grad (with grad enabled) rather than cut the graph
    silently; its ``decode`` is differentiable like the others'.
    """
    method: str
    tensors: dict[str, torch.Tensor] = field(repr=False)
    meta: dict = field(default_factory=dict)
    _on_device: dict = field(default_factory=dict, init=False, repr=False)  # device -> tensors / SAE

    def __post_init__(self) -> None:
        check_method(self.method)
        self.tensors = {name: _stored(name, t) for name, t in self.tensors.items()}
        self.meta = dict(self.meta)
        if self.method in SAE_METHODS:
            if "sae_kwargs" not in self.meta:
                raise ValueError(f"{self.method} model needs meta['sae_kwargs'] (the SAE constructor "
                                 "kwargs) to rebuild the SAE; build it with ConceptModel.from_sae")
            if "dictionary" not in self.tensors:
                sae = self._sae(torch.device("cpu"))
                self.tensors["dictionary"] = sae.get_dictionary().detach().clone()
        else:
            missing = [n for n in required_tensors(self.method) if n not in self.tensors]
            if missing:
                raise ValueError(f"{self.method} model lacks tensor(s) {missing}; it has "
                                 f"{sorted(self.tensors)}: build it with fit_batch_method")
        dictionary = self.tensors["dictionary"]
        if dictionary.ndim != 2:
            raise ValueError("dictionary must be (n_concepts, dim), got shape "
                             f"{tuple(dictionary.shape)}")
        self.meta.setdefault("n_concepts", int(dictionary.shape[0]))
        self.meta.setdefault("dim", int(dictionary.shape[1]))

    # ---- what it is -------------------------------------------------------------------------
    @property
    def dictionary(self) -> torch.Tensor:
        """(K, d) float32: row k is what one unit of concept k adds to an activation."""
        return self.tensors["dictionary"]

    @property
    def n_concepts(self) -> int:
        return int(self.dictionary.shape[0])

    @property
    def dim(self) -> int:
        return int(self.dictionary.shape[1])

    def __repr__(self) -> str:
        return f"ConceptModel(method={self.method!r}, n_concepts={self.n_concepts}, dim={self.dim})"

    # ---- encode / decode --------------------------------------------------------------------
    def encode(self, x: ArrayT) -> ArrayT:
        """Concept codes (n, K) of activations x (n, d); numpy in -> numpy out, torch in -> torch
        out on x's device, float32. Gradients flow only when x requires them (not at all for
        dictionary_learning: a ValueError; see the class docstring)."""
        xt = self._as_input(x, self.dim, "activations")
        if xt.requires_grad and torch.is_grad_enabled() and self.method in NON_DIFFERENTIABLE_ENCODE:
            raise ValueError(f"{self.method} codes come from sklearn's sparse_encode (numpy), so no "
                             "gradient can flow from them back to x; pass x.detach() (or encode "
                             "under torch.no_grad()) to get the codes, or use a method whose encode "
                             "is differentiable (any other)")
        with torch.set_grad_enabled(xt.requires_grad):
            if self.method in SAE_METHODS:
                codes = self._sae(xt.device).encode(xt)[1]
            else:
                codes = encode_codes(self.method, self._tensors(xt.device),
                                     self.meta.get("codec", {}), xt)
        return _like(codes, x)

    def decode(self, c: ArrayT) -> ArrayT:
        """Activations (n, d) rebuilt from concept codes c (n, K); same type rules as encode."""
        ct = self._as_input(c, self.n_concepts, "concept codes")
        with torch.set_grad_enabled(ct.requires_grad):
            if self.method in SAE_METHODS:
                out = self._sae(ct.device).decode(ct)
            else:
                out = decode_codes(self.method, self._tensors(ct.device), ct)
        return _like(out, c)

    # ---- build ------------------------------------------------------------------------------
    @classmethod
    def from_tensors(cls, method: str, tensors: dict[str, torch.Tensor], meta: dict) -> "ConceptModel":
        """A model from its tensors and meta (what ``save`` writes and ``load`` reads)."""
        return cls(method, dict(tensors), dict(meta))

    @classmethod
    def from_sae(cls, method: str, sae: torch.nn.Module, sae_kwargs: dict, meta: dict) -> "ConceptModel":
        """Keep a (trained) overcomplete SAE as a model: its state_dict as ``sae.*`` tensors and
        ``sae_kwargs`` (the constructor kwargs, JSON-able: pass encoders by registered name)
        in meta. Encoding uses the SAE's inference path (eval mode; BatchTopK's running
        threshold), decoding its decoder; the SAE is rebuilt the same way after ``load``."""
        check_method(method)
        if method not in SAE_METHODS:
            raise ValueError(f"{method!r} is not an SAE method ({', '.join(SAE_METHODS)}); "
                             "use fit_batch_method for batch methods")
        expected = SAE_CLASS_NAMES[method]
        if type(sae).__name__ != expected:
            raise ValueError(f"method {method!r} expects an overcomplete {expected}, got "
                             f"{type(sae).__name__}")
        kwargs = {k: v for k, v in sae_kwargs.items() if k != "device"}
        _check_jsonable(kwargs, "sae_kwargs")
        tensors = {SAE_PREFIX + k: v.detach().cpu().clone() for k, v in sae.state_dict().items()}
        if method == "batchtopk_sae":
            threshold = getattr(sae, "running_threshold", None)
            if threshold is None:
                raise ValueError("this BatchTopKSAE has no running_threshold (its inference "
                                 "threshold, set by forward passes in train mode): train it first")
            tensors[RUNNING_THRESHOLD] = torch.as_tensor(threshold).detach().cpu().clone()
        return cls.from_tensors(method, tensors, {**meta, "sae_kwargs": kwargs})

    # ---- persist ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``path/dictionary.safetensors`` (all tensors) and ``path/dictionary.json``
        (method, sizes, tensor shapes, meta). Each file is written under a temporary name and
        renamed; the JSON goes last, so its presence marks a complete save."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "version": FORMAT_VERSION, "method": self.method,
                  "n_concepts": self.n_concepts, "dim": self.dim,
                  "tensors": {k: list(v.shape) for k, v in self.tensors.items()},
                  "meta": _check_jsonable(self.meta, "meta")}
        text = json.dumps(header, indent=2, sort_keys=True)
        tmp = path / (TENSORS_FILE + ".tmp")
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp))
        os.replace(tmp, path / TENSORS_FILE)
        tmp = path / (JSON_FILE + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path / JSON_FILE)

    @classmethod
    def load(cls, path: str | Path) -> "ConceptModel":
        """Read a model written by ``save``."""
        from safetensors.torch import load_file

        path = Path(path)
        missing = [name for name in (JSON_FILE, TENSORS_FILE) if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"no concept model at {path}: missing {', '.join(missing)}; "
                                    "write one with ConceptModel.save(path)")
        header = json.loads((path / JSON_FILE).read_text())
        if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path / JSON_FILE} is format {header.get('format')!r} version "
                             f"{header.get('version')!r}; this raypipe reads {FORMAT!r} version "
                             f"{FORMAT_VERSION}")
        tensors = load_file(str(path / TENSORS_FILE))
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != header["tensors"]:
            raise ValueError(f"{path / TENSORS_FILE} does not match {JSON_FILE} (tensors {shapes} vs "
                             f"{header['tensors']}): the save was interrupted or mixed; save again")
        return cls.from_tensors(header["method"], tensors, header["meta"])

    # ---- internals --------------------------------------------------------------------------
    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The batch tensors on ``device`` (copied once per device)."""
        if device.type == "cpu":
            return self.tensors
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in self.tensors.items()}
        return self._on_device[device]

    def _sae(self, device: torch.device) -> torch.nn.Module:
        """The overcomplete SAE rebuilt on ``device`` in eval mode (once per device)."""
        if device not in self._on_device:
            from raypipe.concepts.overcomplete_import import import_overcomplete

            sae_cls = getattr(import_overcomplete("sae"), SAE_CLASS_NAMES[self.method])
            with _rng_untouched(device):   # the constructor's random init must not shift the RNG
                sae = sae_cls(**self.meta["sae_kwargs"], device=device)
            state = {k[len(SAE_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(SAE_PREFIX)}
            sae.load_state_dict(state)
            if RUNNING_THRESHOLD in self.tensors:
                sae.running_threshold = self.tensors[RUNNING_THRESHOLD].to(device)
            sae.requires_grad_(False)
            sae.eval()            # fuses the dictionary; BatchTopK switches to its running threshold
            self._on_device[device] = sae
        return self._on_device[device]

    @staticmethod
    def _as_input(x: np.ndarray | torch.Tensor, width: int, what: str) -> torch.Tensor:
        """x as a float32 (n, width) tensor; numpy/array-likes land on the CPU."""
        if isinstance(x, torch.Tensor):
            t = x.to(torch.float32)
        else:
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if t.ndim != 2 or t.shape[1] != width:
            raise ValueError(f"expected {what} of shape (n, {width}), got {tuple(t.shape)}"
                             + ("; add a row axis with x[None]" if t.ndim == 1 else ""))
        return t


def _stored(name: str, t: Any) -> torch.Tensor:
    """A tensor as kept in a model: detached, contiguous, on the CPU, floats as float32."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor {name!r} is a {type(t).__name__}, expected a torch.Tensor")
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    return t.contiguous()


def _like(result: torch.Tensor, template: np.ndarray | torch.Tensor) -> Any:
    """``result`` as the type the caller passed in (numpy stays numpy, torch stays torch)."""
    if isinstance(template, torch.Tensor):
        return result
    return result.detach().cpu().numpy()


def _check_jsonable(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays and paths made plain; error naming the bad key."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}; JSON keys must be strings")
            out[k] = _check_jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_check_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise ValueError(f"{where} is a {type(value).__name__}, which dictionary.json cannot hold; "
                     "store a plain value (e.g. a name or number) instead")


@contextlib.contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Run code that draws random numbers without changing torch's global RNG state."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield
