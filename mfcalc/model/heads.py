"""Hierarchical per-fidelity energy heads: one linear map per level, one output per fidelity."""

from __future__ import annotations

from typing import List, cast

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
        levels = [nn.Linear(w, n_fidelities, bias=(n > 0)) for n, w in enumerate(widths)]
        for lin in levels:
            nn.init.xavier_normal_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.levels = nn.ModuleList(levels)

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
        levels = self.linears()
        with torch.no_grad():
            levels[0].weight.copy_(reference.to(levels[0].weight))
            factor = 1.0
            for lin in levels[1:]:
                factor *= scale
                lin.weight.mul_(factor)
                lin.bias.mul_(factor)
        levels[0].weight.requires_grad_(False)

    @torch.jit.unused
    def linears(self) -> List[nn.Linear]:
        """The per-level linear maps; ``linears()[0].weight`` (F, n_species) are the reference energies."""
        return [cast(nn.Linear, lin) for lin in self.levels]
