"""Hierarchical per-fidelity energy heads: one linear map per level, one output per fidelity."""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn


class HierarchicalHeads(nn.Module):
    """E^n_i = w^n z^n_i + b^n for every hierarchy level n, all fidelities at once.

    Level 0 reads the one-hot species with no bias, so its weights *are* the per-species
    reference energies of each fidelity (set by :meth:`set_reference_energies`, then
    frozen).  Only these linear maps are fidelity-specific; the trunk is shared.

    Args:
        widths: feature width of every level, ``[n_species, F_1, ..., F_N]``.
        n_fidelities: number of outputs per level.
    """

    def __init__(self, widths: List[int], n_fidelities: int):
        super().__init__()
        self.levels = nn.ModuleList(
            [nn.Linear(w, n_fidelities, bias=(n > 0)) for n, w in enumerate(widths)]
        )
        for n, lin in enumerate(self.levels):
            nn.init.xavier_normal_(lin.weight)
            if n > 0:
                nn.init.zeros_(lin.bias)

    def forward(self, features: List[Tensor]) -> Tensor:
        """Per-level features [(A, F_n)] -> atom energies (A, L, n_fidelities), eV."""
        out: List[Tensor] = []
        for n, head in enumerate(self.levels):
            out.append(head(features[n]))
        return torch.stack(out, dim=1)

    @torch.jit.unused
    def set_reference_energies(self, reference: Tensor, scale: float = 1e-2) -> None:
        """Level 0 <- reference (F, n_species) eV, frozen; shrink higher levels so training
        starts at the reference energies and each level is ``scale`` times the one before."""
        with torch.no_grad():
            self.levels[0].weight.copy_(reference.to(self.levels[0].weight))
            factor = 1.0
            for lin in list(self.levels)[1:]:
                factor *= scale
                lin.weight.mul_(factor)
                lin.bias.mul_(factor)
        self.levels[0].weight.requires_grad_(False)
