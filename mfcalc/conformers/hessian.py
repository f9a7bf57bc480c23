"""Curvature of the energy surface at a stationary point: is it a minimum or a saddle?

Optimisers stop where the forces vanish, which includes saddle points such as an eclipsed
methyl group.  The Hessian by central differences of the forces (all geometries batched),
with rigid motions projected out, tells them apart.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch

from mfcalc.conformers.optimize import Evaluator, model_evaluator

SADDLE_CURVATURE = -0.01  # eV/A^2: below this the stationary point is a saddle, not a minimum


def internal_curvatures(hessian: np.ndarray, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (eV/A^2) and eigenvectors (3N, M) of a Cartesian Hessian (3N, 3N) with the
    rigid motions (translations, rotations about the centre) projected out and dropped: M is
    3N - 6, or 3N - 5 for a linear molecule."""
    n = len(positions)
    r = positions - positions.mean(axis=0)
    rigid = [np.tile(np.eye(3)[a], n) for a in range(3)] + [np.cross(np.eye(3)[a], r).reshape(-1) for a in range(3)]
    basis, sv, _ = np.linalg.svd(np.array(rigid).T, full_matrices=False)
    basis = basis[:, sv > 1e-8 * sv.max()]
    proj = np.eye(3 * n) - basis @ basis.T
    vals, vecs = np.linalg.eigh(proj @ (0.5 * (hessian + hessian.T)) @ proj)
    internal = np.abs(vecs.T @ basis).sum(axis=1) < 0.5  # the rigid eigenvectors (eigenvalue 0)
    return vals[internal], vecs[:, internal]


def hessians(
    evaluate: Evaluator,
    positions: np.ndarray,
    step: float = 5e-3,
    progress: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Cartesian Hessians (K, 3N, 3N) eV/A^2 of K geometries by central differences of the
    forces: 3N evaluations of 2K displaced geometries each (``progress(done, 3N)`` after each)."""
    k, n = positions.shape[:2]
    dof = 3 * n
    hess = np.zeros((k, dof, dof))
    flat = positions.reshape(k, dof)
    for d in range(dof):
        shifted = np.concatenate([flat, flat])
        shifted[:k, d] += step
        shifted[k:, d] -= step
        _, f, _ = evaluate(shifted.reshape(2 * k, n, 3))
        f = f.reshape(2 * k, dof)
        hess[:, :, d] = -(f[:k] - f[k:]) / (2 * step)
        if progress is not None:
            progress(d + 1, dof)
    return hess


def lowest_curvature(
    model,
    numbers: np.ndarray,
    positions: np.ndarray,
    fidelity: int,
    step: float = 5e-3,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float64,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Lowest curvature (eV/A^2) of each geometry's energy surface, rigid motions projected out.

    A clearly negative value (below :data:`SADDLE_CURVATURE`) means the optimiser stopped at
    a saddle point, not a minimum.

    Returns:
        ``(curvature (K,), mode (K, N, 3))``: the lowest eigenvalue and its unit eigenvector.
    """
    k, n = positions.shape[:2]
    hess = hessians(model_evaluator(model, numbers, fidelity, device, dtype), positions, step, progress)
    curvature, modes = np.zeros(k), np.zeros((k, n, 3))
    for c in range(k):
        vals, vecs = internal_curvatures(hess[c], positions[c])
        i = int(np.argmin(vals))
        curvature[c], modes[c] = vals[i], vecs[:, i].reshape(n, 3)
    return curvature, modes
