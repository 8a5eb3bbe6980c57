"""The typed config of `raypipe interpret`, apart from the job so that the CLI's parser (and
``--help``) can build it without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

from raypipe.config import (ConfigError, _opt, paths_as_strings, require_at_least_one,
                            require_fields)


@dataclass
class InterpretConfig:
    """Find each concept's top-activating units across an ActivationStore."""

    store: str = _opt("", "ActivationStore directory", required=True)
    concepts: str = _opt("", "concept model directory (the --out of `raypipe fit`)", required=True)
    out: str = _opt("", "output directory for top_activations.parquet and concepts.parquet",
                    required=True)
    top_k: int = _opt(20, "top-activating units kept per concept")
    context: int = _opt(8, "units of context on each side of a top unit")
    batch_size: int = _opt(8192, "rows encoded at once")
    address: str | None = _opt(None, "Ray address to join (default: RAY_ADDRESS, else local)")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        paths_as_strings(self)
        require_fields(self, "store", "concepts", "out")
        require_at_least_one(self, "top_k", "batch_size")
        if self.context < 0:
            raise ConfigError(f"context must be >= 0, got {self.context}")
