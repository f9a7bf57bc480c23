"""Batched optimisers on analytic surfaces: convergence, one interface, and stopping when stalled."""

import numpy as np
import pytest

from mfcalc.conformers import OPTIMIZERS, optimize


def harmonic(minimum):
    """E = sum |r - r0|^2 for every conformer: converges from anywhere."""

    def evaluate(r):
        d = r - minimum
        return (d**2).sum(axis=(1, 2)), -2.0 * d, np.zeros(len(r))

    return evaluate


def oscillating():
    """Energy and forces that flip every call and never improve: what an out-of-domain model
    does to an optimiser (max force going up and down, no lower energy)."""
    calls = [0]

    def evaluate(r):
        calls[0] += 1
        sign = 1.0 if calls[0] % 2 else -1.0
        return np.full(len(r), 1.0 + 0.05 * (sign < 0)), np.full(r.shape, 0.5 * sign), np.zeros(len(r))

    return evaluate


@pytest.mark.parametrize("method", sorted(OPTIMIZERS))
def test_every_optimiser_reaches_the_minimum(method):
    rng = np.random.default_rng(0)
    minimum = rng.normal(size=(1, 5, 3))
    start = minimum + rng.normal(scale=0.3, size=(4, 5, 3))
    out = optimize(harmonic(minimum), start, fmax=1e-4, max_steps=2000, method=method)
    assert out["converged"].all() and (out["failed"] == "").all()
    np.testing.assert_allclose(out["positions"], np.broadcast_to(minimum, start.shape), atol=1e-4)


@pytest.mark.parametrize("method", sorted(OPTIMIZERS))
def test_a_stalled_conformer_stops_early_with_a_clear_status(method):
    start = np.zeros((2, 3, 3))
    out = optimize(oscillating(), start, fmax=0.01, max_steps=500, method=method, stall_steps=20)
    assert not out["converged"].any()
    assert (out["steps"] <= 25).all()  # not the 500-step limit
    for status in out["failed"]:
        assert status.startswith("failed: optimisation stalled (no progress for 20 steps")
        assert "maximum force between 0.866 and 0.866 eV/A" in status
    without = optimize(oscillating(), start, fmax=0.01, max_steps=60, method=method, stall_steps=None)
    assert (without["steps"] == 60).all() and (without["failed"] == "").all()


def test_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="unknown optimiser 'bfgs'; use one of lbfgs, fire"):
        optimize(harmonic(np.zeros((1, 2, 3))), np.ones((1, 2, 3)), method="bfgs")
