"""Reconstruction metrics against numpy, the streaming accumulator, dead latents, the curve."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from raypipe.concepts.metrics import (DeadLatentTracker, MetricAccumulator,
                                      plot_training_curve, reconstruction_metrics)


def _batch(rng, n=50, d=6, k=10, offset=0.0):
    x = rng.standard_normal((n, d)) + offset
    x_hat = x + 0.3 * rng.standard_normal((n, d))
    codes = rng.standard_normal((n, k)) * (rng.random((n, k)) < 0.3)
    return [torch.tensor(a, dtype=torch.float32) for a in (x, x_hat, codes)]


def test_reconstruction_metrics_match_numpy():
    x, x_hat, codes = _batch(np.random.default_rng(0))
    got = reconstruction_metrics(x, x_hat, codes)
    xn, hn, cn = (t.double().numpy() for t in (x, x_hat, codes))
    sse = ((xn - hn) ** 2).sum()
    # explained variance via numpy's per-dimension variance, not the same formula as the code
    r2 = 1 - sse / (np.var(xn, axis=0).sum() * len(xn))
    assert got["r2"] == pytest.approx(r2, rel=1e-12)
    assert got["mse"] == pytest.approx(np.mean((xn - hn) ** 2), rel=1e-12)
    assert got["l0"] == pytest.approx(np.count_nonzero(cn, axis=1).mean(), rel=1e-12)
    assert 0 < got["r2"] < 1


def test_perfect_and_mean_reconstructions_give_r2_one_and_zero():
    x, _, codes = _batch(np.random.default_rng(1))
    assert reconstruction_metrics(x, x, codes)["r2"] == pytest.approx(1.0)
    mean = x.mean(0, keepdim=True).expand_as(x)
    assert reconstruction_metrics(x, mean, codes)["r2"] == pytest.approx(0.0, abs=1e-6)


def test_constant_rows_have_undefined_r2():
    x = torch.ones(4, 3)
    assert np.isnan(reconstruction_metrics(x, x * 0.5, torch.ones(4, 2))["r2"])


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_accumulator_equals_one_call_on_the_concatenation(offset):
    rng = np.random.default_rng(2)
    parts = [_batch(rng, n=n, offset=offset) for n in (1, 37, 64, 5)]
    acc = MetricAccumulator()
    for x, x_hat, codes in parts:
        acc.update(x, x_hat, codes)
    whole = reconstruction_metrics(*(torch.cat(ts) for ts in zip(*parts)))
    got = acc.result()
    assert acc.rows == 107
    assert got["mse"] == pytest.approx(whole["mse"], rel=1e-12)
    assert got["l0"] == pytest.approx(whole["l0"], rel=1e-12)
    # with a 1e4 offset a Σx² - n·mean² formula would lose the variance in float64 rounding
    assert got["r2"] == pytest.approx(whole["r2"], rel=1e-9)


def test_accumulator_errors_name_the_problem():
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="before any update"):
        acc.result()
    acc.update(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="d=5"):
        acc.update(torch.ones(2, 5), torch.ones(2, 5), torch.ones(2, 4))
    with pytest.raises(ValueError, match="x_hat"):
        reconstruction_metrics(torch.ones(2, 3), torch.ones(3, 3), torch.ones(2, 4))


def test_dead_tracker_counts_a_latent_that_never_fires():
    tracker = DeadLatentTracker(4)
    for _ in range(3):  # latent 3 never fires
        tracker.update(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]]))
    assert tracker.rows_seen == 6
    assert tracker.rows_since_fired.tolist() == [0, 0, 6, 6]
    # fewer rows than dead_after: only the never-fired latents 2 and 3 are dead
    assert tracker.dead_mask(1000).tolist() == [False, False, True, True]
    assert tracker.dead_fraction(1000) == pytest.approx(0.5)


def test_dead_tracker_window():
    tracker = DeadLatentTracker(3)
    tracker.update(torch.tensor([[1.0, 1.0, 1.0]]))  # all fire once
    for _ in range(5):
        tracker.update(torch.tensor([[0.0, 0.5, 0], [0, 0, 0]]))  # latent 1 keeps firing
    assert tracker.rows_since_fired.tolist() == [10, 0, 10]
    assert tracker.dead_fraction(dead_after=10) == pytest.approx(2 / 3)
    assert tracker.dead_fraction(dead_after=11) == 0.0
    assert DeadLatentTracker(3).dead_fraction(10) == 0.0


def test_dead_tracker_state_round_trip():
    tracker = DeadLatentTracker(3)
    tracker.update(torch.tensor([[0.0, 1.0, 0.0]]))
    other = DeadLatentTracker(3)
    other.load_state(*tracker.state())
    assert other.rows_since_fired.tolist() == [1, 0, 1] and other.rows_seen == 1
    with pytest.raises(ValueError, match="shape"):
        DeadLatentTracker(5).load_state(*tracker.state())


def test_training_curve_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = [{"step": s, "epoch": 0, "rows": 10 * s, "loss": 1 / s, "r2": 1 - 1 / s}
               for s in range(1, 6)]
    path = tmp_path / "curve.png"
    plot_training_curve(history, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_curve_skips_without_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    path = tmp_path / "curve.png"
    plot_training_curve([{"step": 1, "loss": 1.0}], path)
    assert not path.exists()
    assert "matplotlib is not installed" in caplog.text
