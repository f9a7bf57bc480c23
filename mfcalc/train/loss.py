"""Masked multi-fidelity loss, built from the additive error statistics of :mod:`mfcalc.metrics`.

The statistics of several batch shards (DistributedDataParallel ranks) add up exactly
before the non-linear RMSE is taken: a 2-process run computes the same loss as one process
with the same global batch.

Loss (architecture.md), with errors in kcal/mol and kcal/mol/Angstrom:

    L = sum_t  w_E,t (RMSE_E,t + MAE_E,t) + w_F,t (RMSE_F,t + MAE_F,t) + w_H,t mean_mol(H_t)
               + w_R,t RMSE_rel,t

RMSE_rel,t is the error of energies relative within each molecule (each molecule's mean
residual removed, over the molecules with two or more labelled structures in the batch): a
level of theory with energies only for few structures of many molecules (CCSD(T)) is there
for conformational energies, and a per-molecule offset it never saw should not dominate what
its head learns.  Off by default (w_R = 0).

Energies are compared **per structure** (total energy, not per atom), as in the HIP-NN
and multi-fidelity papers, or per atom with ``energy_per_atom`` (``--energy-loss atom``).
Each term runs over the structures that carry that label only; a fidelity without forces
(or without any label in the batch) contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor

from mfcalc.metrics import COUNT, ENERGY, FORCES, SUMABS, SUMSQ, relative_rmse
from mfcalc.units import KCAL_MOL_EV


@dataclass
class LossWeights:
    """Per-fidelity weights, in head order."""

    energy: List[float]
    forces: List[float]
    hier: List[float]
    relative: Optional[List[float]] = None  # w_R,t; None: no relative-energy term

    def uses_relative(self) -> bool:
        return any(w > 0 for w in self.relative or [])


def rmse_plus_mae(stats: Tensor) -> Tensor:
    """RMSE + MAE from (..., 3) statistics; 0 where the count is 0."""
    n = stats[..., COUNT]
    safe = n.clamp(min=1.0)
    rmse = torch.sqrt(stats[..., SUMSQ] / safe + 1e-20)
    mae = stats[..., SUMABS] / safe
    return torch.where(n > 0, rmse + mae, torch.zeros_like(rmse))


def total_loss(
    stats: Tensor, hier_sum: Tensor, n_mol: Tensor, weights: LossWeights, centred: Optional[Tensor] = None
) -> Tensor:
    """The scalar training loss from summed statistics (eV units in, kcal/mol units out).

    Args:
        stats: (F, 2, 3) summed error statistics.
        hier_sum: (F,) hierarchicality summed over the structures.
        n_mol: scalar number of structures the sums cover.
        centred: (F, 2) within-molecule statistics (:func:`mfcalc.metrics.centred_stats`),
            needed when ``weights`` has a relative-energy term.
    """
    # eV -> kcal/mol: err^2 sums scale by 1/kcal^2, |err| sums by 1/kcal, counts unchanged
    scale = torch.tensor([KCAL_MOL_EV**-2, KCAL_MOL_EV**-1, 1.0], dtype=stats.dtype, device=stats.device)
    terms = rmse_plus_mae(stats * scale)  # (F, 2)
    w_e = torch.tensor(weights.energy, dtype=stats.dtype, device=stats.device)
    w_f = torch.tensor(weights.forces, dtype=stats.dtype, device=stats.device)
    w_h = torch.tensor(weights.hier, dtype=stats.dtype, device=stats.device)
    loss = (w_e * terms[:, ENERGY]).sum() + (w_f * terms[:, FORCES]).sum() + (w_h * hier_sum).sum() / n_mol.clamp(min=1)
    if weights.uses_relative():
        if centred is None:
            raise ValueError("a relative-energy loss weight needs the within-molecule statistics")
        loss = (
            loss
            + (torch.tensor(weights.relative, dtype=stats.dtype, device=stats.device) * relative_rmse(centred)).sum()
        )
    return loss
