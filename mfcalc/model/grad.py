"""Forces and stress from energies by autograd: the one place mfcalc differentiates an energy.

Forces are ``-dE/dR`` and the stress is the strain derivative ``(1/V) dE/d(epsilon)``, so
both are exactly consistent with the energy (MD conserves it, finite differences agree).
Everything here is TorchScript-compatible and is used by the exported model itself (a model
file gives forces without mfcalc), by training (``create_graph=True`` so a force loss trains
the weights), by evaluation, by the calculator and by the conformer optimiser.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor


def forces(energy: Tensor, positions: Tensor, create_graph: bool = False, retain_graph: bool = False) -> Tensor:
    """Forces (A, 3) = -d(sum of ``energy``)/d``positions``.

    Args:
        energy: any shape; its sum is differentiated (structures do not share atoms, so
            the sum over a batch gives every structure's own forces).
        positions: (A, 3), a leaf that requires grad (or a function of one).
        create_graph: keep the graph of the derivative (training on forces).
        retain_graph: keep the forward graph for another derivative of the same energies.

    Returns:
        Zeros where the energy does not depend on an atom (an isolated atom).
    """
    grads = torch.autograd.grad(
        [energy.sum()],
        [positions],
        create_graph=create_graph,
        retain_graph=retain_graph or create_graph,
        allow_unused=True,
    )
    g = grads[0]
    if g is None:
        return torch.zeros_like(positions)
    return -g


def forces_of_columns(energy: Tensor, positions: Tensor, columns: List[int], create_graph: bool = False) -> Tensor:
    """Forces of several energy columns, e.g. fidelities: (B, F) energies -> (A, F, 3).

    Only ``columns`` are differentiated (one backward pass each); the others are zeros.
    """
    out: List[Tensor] = []
    last = columns[-1] if len(columns) > 0 else -1
    for k in range(energy.shape[1]):
        if k in columns:
            out.append(forces(energy[:, k], positions, create_graph, retain_graph=k != last))
        else:
            out.append(torch.zeros_like(positions))
    return torch.stack(out, dim=1)


def strained(positions: Tensor, cell: Tensor, mol_index: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Apply a zero strain epsilon (B, 3, 3) that autograd can differentiate against.

    Returns:
        ``(positions @ (1 + eps), cell @ (1 + eps), eps)`` per structure; ``eps`` is the
        leaf for :func:`forces_and_virial`.
    """
    n_mol = cell.shape[0]
    eps = torch.zeros(n_mol, 3, 3, dtype=positions.dtype, device=positions.device).requires_grad_(True)
    deform = torch.eye(3, dtype=positions.dtype, device=positions.device)[None] + eps
    pos = torch.bmm(positions[:, None, :], deform[mol_index]).squeeze(1)
    return pos, torch.bmm(cell, deform), eps


def forces_and_virial(
    energy: Tensor, positions: Tensor, strain: Tensor, create_graph: bool = False, retain_graph: bool = False
) -> Tuple[Tensor, Tensor]:
    """Forces (A, 3) and dE/d(strain) (B, 3, 3) of ``energy`` (B,), in one backward pass."""
    grads = torch.autograd.grad(
        [energy.sum()],
        [positions, strain],
        create_graph=create_graph,
        retain_graph=retain_graph or create_graph,
        allow_unused=True,
    )
    g, w = grads[0], grads[1]
    f = torch.zeros_like(positions) if g is None else -g
    if w is None:
        w = torch.zeros_like(strain)
    return f, w


def stress(virial: Tensor, cell: Tensor) -> Tensor:
    """Stress (B, 3, 3) eV/Angstrom^3 from dE/d(strain): symmetrised and divided by the volume."""
    volume = torch.linalg.det(cell).abs()
    return 0.5 * (virial + virial.transpose(1, 2)) / volume[:, None, None]


def spread(values: Tensor) -> Tensor:
    """Population standard deviation over the first (member) axis; zeros for one member."""
    if values.shape[0] < 2:
        return torch.zeros_like(values[0])
    return values.std(dim=0, unbiased=False)
