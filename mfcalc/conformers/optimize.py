"""Batched geometry optimisation: many conformers at once, one energy call per step.

An *evaluator* maps positions (k, N, 3) Angstrom to energies (k,) eV, forces (k, N, 3)
eV/Angstrom and ensemble spreads (k,) eV.  :func:`model_evaluator` makes one from an mfcalc
model file (all k conformers in one batched model call); anything else with that signature
(a QM code looping over conformers) works the same way.

Optimisers share one interface, ``step(idx, r, f, e) -> dr``: the displacement of the
conformers ``idx`` given their positions, forces and energies; each conformer keeps its
own state.  :class:`BatchedLBFGS` (the default) and :class:`BatchedFIRE` follow ASE's
``LBFGS`` and ``FIRE``, vectorised over conformers.

:func:`optimize` runs them: converged when every atom's force is below ``fmax`` (as in ASE);
a conformer whose energy or forces become non-finite or explode, or that makes no progress
for ``stall_steps`` steps (the maximum force oscillating instead of falling, typical of a
model asked about chemistry it never saw), is stopped with a status saying why.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Protocol, Tuple

import numpy as np
import torch

from mfcalc import keys

Evaluator = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]

# FIRE parameters (ASE's defaults)
FIRE_DT, FIRE_DTMAX, FIRE_MAXSTEP = 0.1, 1.0, 0.2
FIRE_NMIN, FIRE_FINC, FIRE_FDEC, FIRE_ASTART, FIRE_FA = 5, 1.1, 0.5, 0.1, 0.99
LBFGS_MEMORY, LBFGS_MAXSTEP, LBFGS_H0 = 20, 0.2, 1.0 / 70.0  # ASE's LBFGS: maxstep 0.2 A, alpha 70 eV/A^2
EXPLODED_FORCE = 1e3  # eV/Angstrom: a conformer this far from any minimum is reported as failed
STALL_STEPS = 100  # steps without a new lowest energy or a new smallest maximum force
STALL_ENERGY = 1e-6  # eV: a smaller fall of the lowest energy is not progress


def model_evaluator(
    model,
    numbers: np.ndarray,
    fidelity: int,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float64,
    spread_fidelity: Optional[int] = None,
) -> Evaluator:
    """An evaluator on an mfcalc model (``compute``): all conformers in one batched call,
    forces of the ensemble-mean energy (one backward pass).  The spread it returns is that
    of head ``spread_fidelity`` (default: ``fidelity``; the head in use for model files whose
    code reports no per-head spreads)."""
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=device)
    n_atoms = len(z)

    def evaluate(positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = len(positions)
        pos = torch.as_tensor(positions.reshape(-1, 3), dtype=dtype, device=device)
        mol = torch.arange(k, device=device).repeat_interleave(n_atoms)
        out = model.compute(z.repeat(k), pos, mol, k, fidelity, forces_spread=False)
        return (
            out[keys.ENERGY].detach().cpu().numpy().astype(np.float64),
            out[keys.FORCES].detach().cpu().numpy().astype(np.float64).reshape(k, n_atoms, 3),
            spread(out).detach().cpu().numpy().astype(np.float64),
        )

    def spread(out: Dict[str, torch.Tensor]) -> torch.Tensor:
        if spread_fidelity is None or spread_fidelity == fidelity or keys.HEAD_ENERGY_STD not in out:
            return out[keys.ENERGY_STD]
        return out[keys.HEAD_ENERGY_STD][:, spread_fidelity]

    return evaluate


class BatchedOptimizer(Protocol):
    def step(self, idx: np.ndarray, r: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Displacements (k, N, 3) for conformers ``idx`` at positions r, forces f, energies e."""


class BatchedLBFGS:
    """L-BFGS for many conformers at once, each with its own history (ASE's LBFGS, vectorised).

    Two-loop recursion over the last ``LBFGS_MEMORY`` steps; the initial inverse Hessian is
    ASE's 1/alpha before any curvature is known, then the usual s.y / y.y scaling.  A
    conformer whose energy went up, or whose new pair has no positive curvature, drops its
    history and takes a steepest-descent step; no atom moves more than ``LBFGS_MAXSTEP``.
    """

    def __init__(self, n_conf: int, n_atoms: int):
        n_dof = 3 * n_atoms
        self.S = np.zeros((n_conf, LBFGS_MEMORY, n_dof))
        self.Y = np.zeros((n_conf, LBFGS_MEMORY, n_dof))
        self.rho = np.zeros((n_conf, LBFGS_MEMORY))  # 0 marks an empty slot: it then contributes nothing
        self.r0 = np.zeros((n_conf, n_dof))
        self.g0 = np.zeros((n_conf, n_dof))
        self.e0 = np.full(n_conf, np.inf)
        self.started = np.zeros(n_conf, dtype=bool)

    def step(self, idx: np.ndarray, r: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
        k = len(idx)
        x, g = r.reshape(k, -1), -f.reshape(k, -1)
        prev = self.started[idx]
        s, y = x - self.r0[idx], g - self.g0[idx]
        sy = (s * y).sum(axis=1)
        keep = prev & (sy > 1e-12) & (e <= self.e0[idx] + 1e-6)
        reset = prev & ~keep
        S, Y, rho = self.S[idx], self.Y[idx], self.rho[idx]
        S[reset], Y[reset], rho[reset] = 0.0, 0.0, 0.0
        S[keep], Y[keep], rho[keep] = (
            np.roll(S[keep], -1, axis=1),
            np.roll(Y[keep], -1, axis=1),
            np.roll(rho[keep], -1, axis=1),
        )
        S[keep, -1], Y[keep, -1], rho[keep, -1] = s[keep], y[keep], 1.0 / sy[keep]
        q = g.copy()
        alpha = np.zeros((k, LBFGS_MEMORY))
        for i in range(LBFGS_MEMORY - 1, -1, -1):
            alpha[:, i] = rho[:, i] * (S[:, i] * q).sum(axis=1)
            q -= alpha[:, i, None] * Y[:, i]
        yy = (Y[:, -1] * Y[:, -1]).sum(axis=1)
        h0 = np.where(rho[:, -1] > 0, 1.0 / np.maximum(rho[:, -1] * yy, 1e-300), LBFGS_H0)
        z = h0[:, None] * q
        for i in range(LBFGS_MEMORY):
            beta = rho[:, i] * (Y[:, i] * z).sum(axis=1)
            z += S[:, i] * (alpha[:, i] - beta)[:, None]
        p = -z
        uphill = (p * g).sum(axis=1) >= 0  # not a descent direction: forget and go downhill
        if uphill.any():
            S[uphill], Y[uphill], rho[uphill] = 0.0, 0.0, 0.0
            p[uphill] = -LBFGS_H0 * g[uphill]
        dr = p.reshape(r.shape)
        longest = np.linalg.norm(dr, axis=2).max(axis=1)
        dr *= np.where(longest > LBFGS_MAXSTEP, LBFGS_MAXSTEP / np.maximum(longest, 1e-300), 1.0)[:, None, None]
        self.S[idx], self.Y[idx], self.rho[idx] = S, Y, rho
        self.r0[idx], self.g0[idx], self.e0[idx] = x, g, e
        self.started[idx] = True
        return dr


class BatchedFIRE:
    """FIRE (Bitzek et al., PRL 97, 170201, 2006) for many conformers, each with its own
    velocity, time step and mixing (ASE's ``FIRE`` update, vectorised)."""

    def __init__(self, n_conf: int, n_atoms: int):
        self.v = np.zeros((n_conf, n_atoms, 3))
        self.dt = np.full(n_conf, FIRE_DT)
        self.a = np.full(n_conf, FIRE_ASTART)
        self.n_pos = np.zeros(n_conf, dtype=np.int64)
        self.started = np.zeros(n_conf, dtype=bool)

    def step(self, idx: np.ndarray, r: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
        vi = self.v[idx]
        first = ~self.started[idx]
        vf = (vi * f).sum(axis=(1, 2))
        f_norm = np.sqrt((f * f).sum(axis=(1, 2)))
        v_norm = np.sqrt((vi * vi).sum(axis=(1, 2)))
        uphill = ~first & (vf <= 0)
        downhill = ~first & (vf > 0)
        ai, dti, ni = self.a[idx], self.dt[idx], self.n_pos[idx]
        mix = (ai / np.maximum(f_norm, 1e-300) * v_norm)[:, None, None]
        vi = np.where(downhill[:, None, None], (1 - ai)[:, None, None] * vi + mix * f, vi)
        grow = downhill & (ni > FIRE_NMIN)
        dti = np.where(grow, np.minimum(dti * FIRE_FINC, FIRE_DTMAX), dti)
        ai = np.where(grow, ai * FIRE_FA, ai)
        ni = np.where(downhill, ni + 1, ni)
        vi = np.where(uphill[:, None, None], 0.0, vi)
        ai = np.where(uphill, FIRE_ASTART, ai)
        dti = np.where(uphill, dti * FIRE_FDEC, dti)
        ni = np.where(uphill, 0, ni)
        vi = vi + dti[:, None, None] * f
        dr = dti[:, None, None] * vi
        norm_dr = np.sqrt((dr * dr).sum(axis=(1, 2)))
        scale = np.where(norm_dr > FIRE_MAXSTEP, FIRE_MAXSTEP / np.maximum(norm_dr, 1e-300), 1.0)
        self.v[idx], self.a[idx], self.dt[idx], self.n_pos[idx] = vi, ai, dti, ni
        self.started[idx] = True
        return dr * scale[:, None, None]


OPTIMIZERS: Dict[str, type] = {"lbfgs": BatchedLBFGS, "fire": BatchedFIRE}


class StallWatch:
    """Tells when conformers stop making progress.

    Progress is a new lowest energy (by more than :data:`STALL_ENERGY`) or a new smallest
    maximum force.  A conformer with neither for ``patience`` steps has stalled; the range
    its maximum force swept meanwhile goes into the status, so the user sees the oscillation.
    """

    def __init__(self, n_conf: int, patience: int):
        self.patience = patience
        self.best_e = np.full(n_conf, np.inf)
        self.best_f = np.full(n_conf, np.inf)
        self.since = np.zeros(n_conf, dtype=np.int64)
        self.f_lo = np.full(n_conf, np.inf)
        self.f_hi = np.zeros(n_conf)

    def update(self, idx: np.ndarray, e: np.ndarray, fmax: np.ndarray) -> np.ndarray:
        """Record one step of conformers ``idx``; returns which of them have stalled."""
        progress = (e < self.best_e[idx] - STALL_ENERGY) | (fmax < self.best_f[idx])
        self.best_e[idx] = np.minimum(self.best_e[idx], e)
        self.best_f[idx] = np.minimum(self.best_f[idx], fmax)
        self.since[idx] = np.where(progress, 0, self.since[idx] + 1)
        self.f_lo[idx] = np.where(progress, np.inf, np.minimum(self.f_lo[idx], fmax))
        self.f_hi[idx] = np.where(progress, 0.0, np.maximum(self.f_hi[idx], fmax))
        return self.since[idx] >= self.patience

    def status(self, i: int) -> str:
        return (
            f"failed: optimisation stalled (no progress for {self.patience} steps, maximum force between "
            f"{self.f_lo[i]:.3f} and {self.f_hi[i]:.3f} eV/A)"
        )


def optimize(
    evaluate: Evaluator,
    coords: np.ndarray,
    fmax: float = 0.01,
    max_steps: int = 500,
    method: str = "lbfgs",
    progress: Optional[Callable[[int, int, int, float], None]] = None,
    stall_steps: Optional[int] = STALL_STEPS,
) -> Dict[str, np.ndarray]:
    """Optimise all conformers at once; one ``evaluate`` call per step for those still moving.

    Args:
        evaluate: positions (k, N, 3) -> energies (k,), forces (k, N, 3), spreads (k,).
        coords: (C, N, 3) Angstrom starting geometries.
        fmax: eV/Angstrom, converged when every atom's force is below it (as in ASE).
        method: ``"lbfgs"`` (about 4x fewer steps, see tools/BENCHMARKS.md) or ``"fire"``.
        progress: called as ``progress(step, n_converged, n_failed, max_force)``.
        stall_steps: stop a conformer that makes no progress for this many steps (``None``: never).

    Returns:
        dict with ``positions`` (C, N, 3), ``energy`` (C,) eV, ``spread`` (C,) eV,
        ``converged`` (C,) bool, ``steps`` (C,) int, ``failed`` (C,) str ('' if fine).
    """
    if method not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {method!r}; use one of {', '.join(OPTIMIZERS)}")
    n_conf, n_atoms = coords.shape[:2]
    optimizer: BatchedOptimizer = OPTIMIZERS[method](n_conf, n_atoms)
    watch = StallWatch(n_conf, stall_steps) if stall_steps else None
    r = np.array(coords, dtype=np.float64, copy=True)
    energy = np.full(n_conf, np.nan)
    spread = np.full(n_conf, np.nan)
    converged = np.zeros(n_conf, dtype=bool)
    steps = np.zeros(n_conf, dtype=np.int64)
    failed = np.array([""] * n_conf, dtype=object)
    for step in range(max_steps + 1):
        active = np.nonzero(~converged & (failed == ""))[0]
        if len(active) == 0:
            break
        e, f, s = evaluate(r[active])
        energy[active], spread[active] = e, s
        fnorm = np.linalg.norm(f, axis=2).max(axis=1)
        bad = ~np.isfinite(e) | ~np.isfinite(fnorm) | (fnorm > EXPLODED_FORCE)
        failed[active[bad]] = "failed: non-finite or exploding energy/forces"
        done = ~bad & (fnorm < fmax)
        converged[active[done]] = True
        steps[active] = step
        move = ~bad & ~done
        if watch is not None:
            stalled = move & watch.update(active, e, fnorm)
            for i in active[stalled]:
                failed[i] = watch.status(i)
            move &= ~stalled
        if progress is not None:
            progress(step, int(converged.sum()), int((failed != "").sum()), float(fnorm[~bad].max(initial=0.0)))
        idx = active[move]
        if step == max_steps or len(idx) == 0:
            continue
        r[idx] += optimizer.step(idx, r[idx], f[move], e[move])
    return {
        "positions": r,
        "energy": energy,
        "spread": spread,
        "converged": converged,
        "steps": steps,
        "failed": failed,
    }


def optimize_batched(
    model,
    numbers: np.ndarray,
    coords: np.ndarray,
    fidelity: int,
    fmax: float = 0.01,
    max_steps: int = 500,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float64,
    progress: Optional[Callable[[int, int, int, float], None]] = None,
    method: str = "lbfgs",
    stall_steps: Optional[int] = STALL_STEPS,
) -> Dict[str, np.ndarray]:
    """:func:`optimize` on an mfcalc model (see :func:`model_evaluator`) at head ``fidelity``."""
    return optimize(
        model_evaluator(model, numbers, fidelity, device, dtype), coords, fmax, max_steps, method, progress, stall_steps
    )
