"""How well a dictionary reconstructs activations: R², MSE, L0, dead latents, training curve.

The accumulators keep their sums on the tensors' device and sync once, at ``result()``: a
``.item()`` per training step would stall a GPU on every batch.

Definitions, for rows ``x`` (n, d), reconstructions ``x_hat`` (n, d) and codes ``z`` (n, K):
    r2  = 1 - Σ||x - x_hat||² / Σ||x - mean(x)||²   (explained variance; mean over rows)
    mse = Σ||x - x_hat||² / (n · d)                 (as in overcomplete's losses)
    l0  = (number of nonzero entries of z) / n      (active latents per row)
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def reconstruction_metrics(x: torch.Tensor, x_hat: torch.Tensor,
                           codes: torch.Tensor) -> dict[str, float]:
    """``{"r2", "mse", "l0"}`` of one set of rows (see the module docstring), in float64.

    ``r2`` is NaN when ``x`` has no variance (every row identical): explained variance is
    undefined there.
    """
    _check_shapes(x, x_hat, codes)
    x64, xh64 = x.detach().double(), x_hat.detach().double()
    sse = (x64 - xh64).square().sum()
    sst = (x64 - x64.mean(0)).square().sum()
    r2 = 1.0 - sse / sst if sst > 0 else torch.tensor(float("nan"))
    n, d = x.shape
    return {"r2": float(r2), "mse": float(sse) / (n * d),
            "l0": float((codes.detach() != 0).sum()) / n}


class MetricAccumulator:
    """``reconstruction_metrics`` over a stream of batches, equal to one call on all of them.

    The total variance is merged per dimension with Chan et al.'s pairwise update (count, mean,
    sum of squared deviations) in float64, so a large mean offset (common in transformer
    activations) does not cancel away the variance as ``Σx² - n·mean²`` would.
    """

    def __init__(self) -> None:
        self.rows = 0
        self._mean: torch.Tensor | None = None  # (d,) float64
        self._m2: torch.Tensor | None = None  # (d,) float64: Σ (x - mean)² per dimension
        self._sse: torch.Tensor | None = None  # () float64
        self._nonzero: torch.Tensor | None = None  # () int64
        self._dim = 0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        """Add a batch: ``x`` (b, d), ``x_hat`` (b, d), ``codes`` (b, K). No host sync."""
        _check_shapes(x, x_hat, codes)
        b, d = x.shape
        if b == 0:
            return
        x64 = x.detach().double()
        mean_b = x64.mean(0)
        m2_b = (x64 - mean_b).square().sum(0)
        sse_b = (x64 - x_hat.detach().double()).square().sum()
        nz_b = torch.count_nonzero(codes.detach())
        if self._mean is None:
            self._mean, self._m2, self._sse, self._nonzero = mean_b, m2_b, sse_b, nz_b
            self._dim = d
        else:
            if d != self._dim:
                raise ValueError(f"batch has d={d}, earlier batches had d={self._dim}; feed one "
                                 "split point's rows per accumulator")
            n = self.rows
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (b / (n + b))
            self._m2 = self._m2 + m2_b + delta.square() * (n * b / (n + b))
            self._sse = self._sse + sse_b
            self._nonzero = self._nonzero + nz_b
        self.rows += b

    def result(self) -> dict[str, float]:
        """``{"r2", "mse", "l0"}`` over every row seen (one host sync); an error before any row."""
        if self._mean is None:
            raise ValueError("MetricAccumulator.result() before any update(): there are no rows "
                             "to measure (is the evaluation split empty?)")
        sst, sse, nz = torch.stack([self._m2.sum(), self._sse,
                                    self._nonzero.double()]).tolist()
        return {"r2": 1.0 - sse / sst if sst > 0 else float("nan"),
                "mse": sse / (self.rows * self._dim), "l0": nz / self.rows}


class DeadLatentTracker:
    """Per latent, the number of rows since it last fired, as a device tensor (K,) int64.

    A latent is dead when it has not fired in the last ``dead_after`` rows, or has never fired
    in all the rows seen so far (so a short run still reports latents that never fire).
    ``update`` does no host sync; ``dead_fraction`` syncs once.
    """

    def __init__(self, n_concepts: int, device: torch.device | str = "cpu") -> None:
        self.rows_since_fired = torch.zeros(n_concepts, dtype=torch.int64, device=device)
        self.rows_seen = 0

    def update(self, codes: torch.Tensor) -> None:
        """``codes`` (b, K): a latent fired if any row of the batch has it nonzero."""
        fired = codes.detach().abs().amax(0) > 0  # ~4x cheaper than (codes != 0).any(0) on CPU
        self.rows_since_fired.add_(codes.shape[0]).masked_fill_(fired, 0)
        self.rows_seen += codes.shape[0]

    def dead_mask(self, dead_after: int) -> torch.Tensor:
        """(K,) bool on the tracker's device."""
        window = min(dead_after, self.rows_seen) if self.rows_seen else dead_after
        return self.rows_since_fired >= window

    def dead_fraction(self, dead_after: int) -> float:
        """Fraction of dead latents, in [0, 1]; 0.0 before any row."""
        if self.rows_seen == 0:
            return 0.0
        return float(self.dead_mask(dead_after).double().mean())

    def state(self) -> tuple[torch.Tensor, int]:
        """``(rows_since_fired (K,) int64 on CPU, rows_seen)`` for a checkpoint."""
        return self.rows_since_fired.detach().cpu(), self.rows_seen

    def load_state(self, rows_since_fired: torch.Tensor, rows_seen: int) -> None:
        """Restore ``state()``; the tensor must have this tracker's K."""
        if rows_since_fired.shape != self.rows_since_fired.shape:
            raise ValueError(f"dead-latent state has shape {tuple(rows_since_fired.shape)}, "
                             f"this tracker tracks {tuple(self.rows_since_fired.shape)} latents")
        self.rows_since_fired.copy_(rows_since_fired)
        self.rows_seen = int(rows_seen)


def plot_training_curve(history: list[dict], path: str | os.PathLike) -> None:
    """Save a PNG (Agg) of each numeric series in ``history`` against ``"step"``, one panel each.

    matplotlib is optional for raypipe: without it the plot is skipped with a warning, never
    failing a training run at its very end.
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend switch, no GUI
    except ImportError:
        log.warning("matplotlib is not installed: skipping the training curve %s (pip install "
                    "matplotlib to get it)", os.fspath(path))
        return
    if not history:
        log.warning("no history entries (the run was shorter than log_every steps): skipping "
                    "the training curve %s", os.fspath(path))
        return
    keys = [k for k in history[0] if k not in ("step", "epoch", "rows")
            and all(isinstance(h.get(k), (int, float)) for h in history)]
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(7, 1.8 * len(keys) + 0.6))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        ax.plot(steps, [h[key] for h in history], marker="." if len(steps) < 50 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100, format="png")


def _check_shapes(x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
    if x.ndim != 2 or x_hat.shape != x.shape or codes.ndim != 2 or codes.shape[0] != x.shape[0]:
        raise ValueError(f"expected x (n, d), x_hat (n, d), codes (n, K); got x "
                         f"{tuple(x.shape)}, x_hat {tuple(x_hat.shape)}, codes "
                         f"{tuple(codes.shape)}")
