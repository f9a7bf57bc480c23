"""An ensemble of multi-fidelity models behind the single-model interface.

Every exported model is an :class:`Ensemble` (of one member for a plain model), so the
calculator and evaluation see one interface: the mean energy and forces, and the member
spread that flags extrapolation.  Members share the cutoff, so the pair list is searched
once per call.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mfcalc.model.hipnn import MultiFidelityHipnn, fidelity_position
from mfcalc.neighbors import radius_pairs


class Ensemble(nn.Module):
    """Mean of K :class:`MultiFidelityHipnn` members with the same species, fidelities and cutoff."""

    def __init__(self, members: List[MultiFidelityHipnn]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for m in members[1:]:
            if m.species != first.species or m.fidelities != first.fidelities or m.cutoff != first.cutoff:
                raise ValueError("ensemble members must share species, fidelities and cutoff")
        self.members = nn.ModuleList(members)
        self.species: List[int] = list(first.species)
        self.fidelities: List[str] = list(first.fidelities)
        self.cutoff = float(first.cutoff)
        self.n_members = len(members)

    def forward(self, numbers: Tensor, positions: Tensor, mol_index: Tensor, n_mol: int,
                cell: Optional[Tensor] = None, pbc: Optional[Tensor] = None, pair_first: Optional[Tensor] = None,
                pair_second: Optional[Tensor] = None, shifts: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Same inputs as :meth:`MultiFidelityHipnn.forward`; outputs are member means plus
        ``energy_std`` (B, F), the member standard deviation (0 for one member)."""
        if pair_first is None or pair_second is None or shifts is None:
            pair_first, pair_second, shifts = radius_pairs(positions, mol_index, n_mol, self.cutoff, cell, pbc)
        outs: List[Dict[str, Tensor]] = []
        for member in self.members:
            outs.append(member(numbers, positions, mol_index, n_mol, cell, pbc, pair_first, pair_second, shifts))
        result: Dict[str, Tensor] = {}
        for key in outs[0].keys():
            result[key] = torch.stack([o[key] for o in outs]).mean(dim=0)
        energies = torch.stack([o["energy"] for o in outs])
        if self.n_members > 1:
            result["energy_std"] = energies.std(dim=0, unbiased=False)
        else:
            result["energy_std"] = torch.zeros_like(energies[0])
        return result

    @torch.jit.export
    def fidelity_index(self, fidelity: str) -> int:
        """Head index of a fidelity name; raises naming the known ones."""
        return fidelity_position(self.fidelities, fidelity)

    @torch.jit.export
    def energy_and_forces(self, numbers: Tensor, positions: Tensor, mol_index: Tensor, n_mol: int, fidelity: int,
                          cell: Optional[Tensor] = None, pbc: Optional[Tensor] = None,
                          create_graph: bool = False, pair_first: Optional[Tensor] = None,
                          pair_second: Optional[Tensor] = None, shifts: Optional[Tensor] = None
                          ) -> Tuple[Tensor, Tensor]:
        """Mean energy (B,) eV and forces (A, 3) eV/Angstrom of one fidelity."""
        e, f, _, _ = self.energy_forces_spread(numbers, positions, mol_index, n_mol, fidelity, cell, pbc,
                                               create_graph, pair_first, pair_second, shifts)
        return e, f

    @torch.jit.export
    def energy_forces_spread(self, numbers: Tensor, positions: Tensor, mol_index: Tensor, n_mol: int,
                             fidelity: int, cell: Optional[Tensor] = None, pbc: Optional[Tensor] = None,
                             create_graph: bool = False, pair_first: Optional[Tensor] = None,
                             pair_second: Optional[Tensor] = None, shifts: Optional[Tensor] = None
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean energy (B,), mean forces (A, 3), energy std (B,) and force std (A, 3) over members.

        Forces are -dE/dx of each member by autograd; the spread is the population standard
        deviation across members (zeros for a single model).
        """
        if fidelity < 0 or fidelity >= len(self.fidelities):
            raise ValueError("fidelity index " + str(fidelity) + " out of range for " + ", ".join(self.fidelities))
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        if pair_first is None or pair_second is None or shifts is None:
            pair_first, pair_second, shifts = radius_pairs(positions, mol_index, n_mol, self.cutoff, cell, pbc)
        energies: List[Tensor] = []
        for member in self.members:
            out = member(numbers, positions, mol_index, n_mol, cell, pbc, pair_first, pair_second, shifts)
            energies.append(out["energy"][:, fidelity])
        e = torch.stack(energies)  # (K, B)
        forces: List[Tensor] = []
        for k in range(self.n_members):
            grads = torch.autograd.grad([e[k].sum()], [positions], create_graph=create_graph,
                                        retain_graph=create_graph or k < self.n_members - 1, allow_unused=True)
            g = grads[0]
            if g is None:
                g = torch.zeros_like(positions)
            forces.append(-g)
        f = torch.stack(forces)  # (K, A, 3)
        if self.n_members > 1:
            return e.mean(dim=0), f.mean(dim=0), e.std(dim=0, unbiased=False), f.std(dim=0, unbiased=False)
        return e[0], f[0], torch.zeros_like(e[0]), torch.zeros_like(f[0])
