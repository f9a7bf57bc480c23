"""Masked multi-fidelity loss, built from additive error statistics.

Errors are summarised per fidelity as sums (squared error, absolute error, count) so that
the statistics of several batch shards (DistributedDataParallel ranks) add up exactly
before the non-linear RMSE is taken: a 2-process run computes the same loss as one
process with the same global batch.

Loss (architecture.md), with errors in kcal/mol and kcal/mol/Angstrom:

    L = sum_t  w_E,t (RMSE_E,t + MAE_E,t) + w_F,t (RMSE_F,t + MAE_F,t) + w_H,t mean_mol(H_t)

Energies are compared **per structure** (total energy, not per atom), as in the HIP-NN
and multi-fidelity papers, or per atom with ``energy_per_atom`` (``--energy-loss atom``).
Each term runs over the structures that carry that label only; a fidelity without forces
(or without any label in the batch) contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import Tensor

from mfcalc.units import KCAL_MOL_EV

ENERGY, FORCES = 0, 1
SUMSQ, SUMABS, COUNT = 0, 1, 2


@dataclass
class LossWeights:
    """Per-fidelity weights, in head order."""

    energy: List[float]
    forces: List[float]
    hier: List[float]


def error_stats(err: Tensor, mask: Tensor) -> Tensor:
    """(3,) [sum of squares, sum of |err|, count] of ``err`` where ``mask`` (broadcastable) is True."""
    m = mask.to(err.dtype).expand_as(err)
    e = err * m
    return torch.stack([(e * e).sum(), e.abs().sum(), m.sum()])


def batch_stats(pred_energy: Tensor, energy: Tensor, energy_mask: Tensor, pred_forces: Tensor, forces: Tensor,
                forces_mask: Tensor, mol_index: Tensor, force_fidelities: Sequence[int],
                energy_per_atom: bool = False) -> Tensor:
    """Error statistics (F, 2, 3) in eV and eV/Angstrom for one batch.

    Args:
        pred_energy, energy: (B, F) predicted and reference energies (same reference shift).
        energy_mask, forces_mask: (B, F) bool.
        pred_forces, forces: (A, F, 3); only ``force_fidelities`` columns are compared.
        mol_index: (A,) structure of each atom.
        energy_per_atom: compare energies per atom (eV/atom) instead of per structure, so
            large structures do not dominate the energy term (a training option; reported
            metrics stay per structure).
    """
    n_fid = energy.shape[1]
    rows: List[Tensor] = []
    zero = torch.zeros(3, dtype=pred_energy.dtype, device=pred_energy.device)
    e_err = pred_energy - energy
    if energy_per_atom:
        e_err = e_err / torch.bincount(mol_index, minlength=energy.shape[0]).clamp(min=1).to(energy.dtype)[:, None]
    for k in range(n_fid):
        e_stats = error_stats(e_err[:, k], energy_mask[:, k])
        if k in force_fidelities:
            atom_mask = forces_mask[mol_index, k][:, None]
            f_stats = error_stats(pred_forces[:, k] - forces[:, k], atom_mask)
        else:
            f_stats = zero
        rows.append(torch.stack([e_stats, f_stats]))
    return torch.stack(rows)


def rmse_plus_mae(stats: Tensor) -> Tensor:
    """RMSE + MAE from (..., 3) statistics; 0 where the count is 0."""
    n = stats[..., COUNT]
    safe = n.clamp(min=1.0)
    rmse = torch.sqrt(stats[..., SUMSQ] / safe + 1e-20)
    mae = stats[..., SUMABS] / safe
    return torch.where(n > 0, rmse + mae, torch.zeros_like(rmse))


def total_loss(stats: Tensor, hier_sum: Tensor, n_mol: Tensor, weights: LossWeights) -> Tensor:
    """The scalar training loss from summed statistics (eV units in, kcal/mol units out).

    Args:
        stats: (F, 2, 3) summed error statistics.
        hier_sum: (F,) hierarchicality summed over the structures.
        n_mol: scalar number of structures the sums cover.
    """
    # eV -> kcal/mol: err^2 sums scale by 1/kcal^2, |err| sums by 1/kcal, counts unchanged
    scale = torch.tensor([KCAL_MOL_EV ** -2, KCAL_MOL_EV ** -1, 1.0], dtype=stats.dtype, device=stats.device)
    terms = rmse_plus_mae(stats * scale)  # (F, 2)
    w_e = torch.tensor(weights.energy, dtype=stats.dtype, device=stats.device)
    w_f = torch.tensor(weights.forces, dtype=stats.dtype, device=stats.device)
    w_h = torch.tensor(weights.hier, dtype=stats.dtype, device=stats.device)
    return (w_e * terms[:, ENERGY]).sum() + (w_f * terms[:, FORCES]).sum() + (w_h * hier_sum).sum() / n_mol.clamp(min=1)
