"""Import overcomplete's dictionary code without running its package ``__init__``.

overcomplete 0.3.0's top-level ``__init__`` imports its vision models (timm, torchvision) and
its plotting code, which calls ``matplotlib.cm.get_cmap`` (gone since matplotlib 3.9): a plain
``import overcomplete`` fails on a current stack, and torchvision would pull a 5 GB CUDA torch
on CPU machines. The dictionary code we use (``overcomplete.sae``, ``overcomplete.optimization``,
``overcomplete.metrics``) needs none of that. So we register a bare package module for
``overcomplete`` whose ``__path__`` is the installed folder, then import the submodules: the
library imports itself by absolute name, so the bare parent must exist first.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

INSTALL_HINT = ("overcomplete is not installed: run `pip install --no-deps overcomplete==0.3.0` "
                "(its declared vision dependencies are not needed; see README, 'Installing "
                "overcomplete')")


def require_overcomplete() -> None:
    """Fail before a concepts job starts (and before its extraction runs for minutes) when
    overcomplete is missing: a plain ``pip install raypipe`` does not bring it (see README,
    'Installing overcomplete'), and the trainer actor would only find out at its first import.

    Raises:
        ConfigError: overcomplete is not installed; the message gives the install command.
    """
    from raypipe.config import ConfigError

    if "overcomplete" not in sys.modules and importlib.util.find_spec("overcomplete") is None:
        raise ConfigError(INSTALL_HINT)


def import_overcomplete(submodule: str) -> types.ModuleType:
    """``import_overcomplete("sae")`` → the ``overcomplete.sae`` module."""
    if "overcomplete" not in sys.modules:
        spec = importlib.util.find_spec("overcomplete")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(INSTALL_HINT)
        package = types.ModuleType("overcomplete")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["overcomplete"] = package
    return importlib.import_module(f"overcomplete.{submodule}")
