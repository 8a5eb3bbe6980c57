"""Build argparse flags from a config dataclass, so flags, YAML keys and the API stay one set."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from raypipe.config import ConfigError, config_from_dict, load_yaml


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field (``split_points`` → ``--split-points``), defaults left to the class."""
    parser.add_argument("--config", metavar="JOB.yaml",
                        help="YAML job file whose keys are these options; flags given on the "
                             "command line override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = hints.get(f.name)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
            continue
        base = _base_type(kind)
        default = _default(f)
        shown = "" if f.metadata.get("required") or default in (None, "") else f" (default: {_show(default)})"
        parser.add_argument(flag, dest=f.name, type=base, default=None, metavar=f.name.upper(),
                            help=help_text + shown)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """YAML file (if any) overlaid with the flags that were given."""
    values: dict = {}
    source = "command line"
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
        source = args.config
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    try:
        return config_from_dict(cls, values, source)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _base_type(kind) -> type:
    if kind in (int, float, str):
        return kind
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float, str):
        return args[0]
    return str


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _show(default: Any) -> str:
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)
