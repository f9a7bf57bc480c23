"""An ensemble of multi-fidelity models behind one interface; a single model is an ensemble of one.

Every exported model is an :class:`Ensemble`, so the calculator, the conformer search and
evaluation see one interface, :meth:`Ensemble.compute`: the mean energy and forces of one
fidelity, the member spread that flags extrapolation, and the stress of periodic cells.
Members share the cutoff, so the pair list is searched once per call.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mfcalc import keys
from mfcalc.data.fidelity import head_index
from mfcalc.model import grad
from mfcalc.model.hipnn import MultiFidelityHipnn
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

    def forward(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        cell: Optional[Tensor] = None,
        pbc: Optional[Tensor] = None,
        pair_first: Optional[Tensor] = None,
        pair_second: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
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
        result[keys.ENERGY_STD] = grad.spread(torch.stack([o[keys.ENERGY] for o in outs]))
        return result

    @torch.jit.export
    def fidelity_index(self, fidelity: str) -> int:
        """Head index of a fidelity name; raises naming the known ones."""
        return head_index(self.fidelities, fidelity)

    @torch.jit.export
    def compute(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        fidelity: int,
        cell: Optional[Tensor] = None,
        pbc: Optional[Tensor] = None,
        pair_first: Optional[Tensor] = None,
        pair_second: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
        forces_spread: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> Dict[str, Tensor]:
        """Everything a simulation asks of one fidelity, in one call.

        Args:
            numbers, positions, mol_index, n_mol, cell, pbc, pair_*: as for ``forward``.
            fidelity: head index (:meth:`fidelity_index`).
            forces_spread: also the member spread of the forces (one backward pass per
                member); otherwise one backward pass of the mean energy.
            stress: also the stress of periodic structures (needs ``cell``).
            create_graph: keep the graph of the forces (training on them).

        Returns:
            ``energy`` (B,) eV and ``energy_std`` (B,); ``forces`` (A, 3) eV/Angstrom;
            ``forces_std`` (A, 3) when asked; ``stress`` (B, 3, 3) eV/Angstrom^3 when asked.
            Spreads are zeros for a single model.
        """
        if fidelity < 0 or fidelity >= len(self.fidelities):
            raise ValueError("fidelity index " + str(fidelity) + " out of range for " + ", ".join(self.fidelities))
        leaf = positions.detach().requires_grad_(True) if not positions.requires_grad else positions
        if pair_first is None or pair_second is None or shifts is None:
            pair_first, pair_second, shifts = radius_pairs(leaf, mol_index, n_mol, self.cutoff, cell, pbc)
        used_pos, used_cell = leaf, cell
        strain = torch.zeros(0)
        if stress:
            if cell is None:
                raise ValueError("the stress needs a periodic cell")
            used_pos, used_cell, strain = grad.strained(leaf, cell, mol_index)
        energies: List[Tensor] = []
        for member in self.members:
            out = member(numbers, used_pos, mol_index, n_mol, used_cell, pbc, pair_first, pair_second, shifts)
            energies.append(out[keys.ENERGY][:, fidelity])
        e = torch.stack(energies)  # (K, B)
        result: Dict[str, Tensor] = {keys.ENERGY: e.mean(dim=0), keys.ENERGY_STD: grad.spread(e)}
        if forces_spread and self.n_members > 1:
            member_forces: List[Tensor] = []
            virials: List[Tensor] = []
            for k in range(self.n_members):
                keep = create_graph or k < self.n_members - 1
                if stress:
                    f, w = grad.forces_and_virial(e[k], leaf, strain, create_graph, retain_graph=keep)
                    virials.append(w)
                else:
                    f = grad.forces(e[k], leaf, create_graph, retain_graph=keep)
                member_forces.append(f)
            f_all = torch.stack(member_forces)
            result[keys.FORCES] = f_all.mean(dim=0)
            result[keys.FORCES_STD] = grad.spread(f_all)
            if stress and cell is not None:
                result[keys.STRESS] = grad.stress(torch.stack(virials).mean(dim=0), cell)
            return result
        mean = result[keys.ENERGY]
        if stress and cell is not None:
            f, w = grad.forces_and_virial(mean, leaf, strain, create_graph)
            result[keys.STRESS] = grad.stress(w, cell)
        else:
            f = grad.forces(mean, leaf, create_graph)
        result[keys.FORCES] = f
        if forces_spread:
            result[keys.FORCES_STD] = torch.zeros_like(f)
        return result

    @torch.jit.export
    def energy_and_forces(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        fidelity: int,
        cell: Optional[Tensor] = None,
        pbc: Optional[Tensor] = None,
        create_graph: bool = False,
        pair_first: Optional[Tensor] = None,
        pair_second: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Mean energy (B,) eV and forces (A, 3) eV/Angstrom of one fidelity."""
        out = self.compute(
            numbers,
            positions,
            mol_index,
            n_mol,
            fidelity,
            cell,
            pbc,
            pair_first,
            pair_second,
            shifts,
            False,
            False,
            create_graph,
        )
        return out[keys.ENERGY], out[keys.FORCES]

    @torch.jit.export
    def energy_forces_spread(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        fidelity: int,
        cell: Optional[Tensor] = None,
        pbc: Optional[Tensor] = None,
        create_graph: bool = False,
        pair_first: Optional[Tensor] = None,
        pair_second: Optional[Tensor] = None,
        shifts: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean energy (B,), mean forces (A, 3), energy std (B,) and force std (A, 3) over members."""
        out = self.compute(
            numbers,
            positions,
            mol_index,
            n_mol,
            fidelity,
            cell,
            pbc,
            pair_first,
            pair_second,
            shifts,
            True,
            False,
            create_graph,
        )
        return out[keys.ENERGY], out[keys.FORCES], out[keys.ENERGY_STD], out[keys.FORCES_STD]
