"""The multi-fidelity HIP-NN-TS model: shared trunk + per-fidelity hierarchical heads.

``forward`` returns energies of *all* fidelities in one pass (heads are linear, so extra
fidelities cost almost nothing); :meth:`MultiFidelityHipnn.energy_and_forces` gives one
fidelity's energy and its forces ``-dE/dx`` by autograd.  Everything is TorchScript-able,
so an exported model needs nothing but torch.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mfcalc import keys
from mfcalc.data.fidelity import head_index
from mfcalc.model import grad
from mfcalc.model.heads import HierarchicalHeads
from mfcalc.model.interaction import InteractionLayer, PairLayout, pair_layout, pair_tables
from mfcalc.model.settings import ModelSettings
from mfcalc.neighbors import radius_pairs


def species_index(table: Tensor, species: List[int], numbers: Tensor) -> Tensor:
    """Row of each atom's element in the one-hot (``table``: atomic number -> row, -1 for an
    element the model does not know); an unknown element is an error naming the known ones."""
    if numbers.is_floating_point() or numbers.dtype == torch.bool:
        raise ValueError("atomic numbers must be an integer tensor, got " + str(numbers.dtype))
    numbers = numbers.long()  # uint8 or int32 would index as a mask or fail deep inside
    idx = table[numbers.clamp(0, 118)]
    bad = (idx < 0) | (numbers < 0) | (numbers > 118)
    if bool(bad.any()):
        unknown: List[int] = torch.unique(numbers[bad]).tolist()
        raise ValueError("element(s) with atomic number " + str(unknown) + " not in the model species " + str(species))
    return idx


class Residual(nn.Module):
    """y = R softplus(L(x)) + b_R + A x, with A the identity when widths agree (hippynn's resnet)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.post = nn.Linear(n_out, n_out)
        nn.init.xavier_normal_(self.post.weight)
        self.skip = nn.Linear(n_in, n_out, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.Softplus()

    def forward(self, pre: Tensor, x: Tensor) -> Tensor:
        return self.post(self.act(pre)) + self.skip(x)


class AtomLayer(nn.Module):
    """Per-atom Linear(F, F) with activation, residual or plain."""

    def __init__(self, width: int, resnet: bool):
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.xavier_normal_(self.linear.weight)
        self.residual = Residual(width, width) if resnet else None
        self.act = nn.Softplus()

    def forward(self, x: Tensor) -> Tensor:
        res = self.residual
        if res is not None:
            return res(self.linear(x), x)
        return self.act(self.linear(x))


class Block(nn.Module):
    """One interaction layer followed by ``n_atom_layers`` atom layers."""

    def __init__(self, n_in: int, n_out: int, n_atom_layers: int, resnet: bool, **interaction):
        super().__init__()
        self.interaction = InteractionLayer(n_in, n_out, **interaction)
        self.residual = Residual(n_in, n_out) if resnet else None
        self.act = nn.Softplus()
        self.atom_layers = nn.ModuleList([AtomLayer(n_out, resnet) for _ in range(n_atom_layers)])

    def forward(self, z: Tensor, layout: PairLayout, r_table: Tensor, rhat_table: Tensor) -> Tensor:
        pre = self.interaction(z, layout, r_table, rhat_table)
        res = self.residual
        z = res(pre, z) if res is not None else self.act(pre)
        for layer in self.atom_layers:
            z = layer(z)
        return z


class BranchBlock(nn.Module):
    """A private copy of a top block and its energy head, read by the branch heads only."""

    def __init__(self, block: Block, width: int, n_fidelities: int):
        super().__init__()
        self.block = block
        self.head = nn.Linear(width, n_fidelities)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, z: Tensor, layout: PairLayout, r_table: Tensor, rhat_table: Tensor) -> Tuple[Tensor, Tensor]:
        z = self.block(z, layout, r_table, rhat_table)
        return z, self.head(z)


class MultiFidelityHipnn(nn.Module):
    """HIP-NN-TS trunk shared by all fidelities, one linear energy head per fidelity and level.

    Args:
        species: atomic numbers the model knows, e.g. ``[1, 6, 7, 8]``.
        fidelities: fidelity names in head order, e.g. ``["xtb", "dft", "cc"]``.
        settings: the architecture (:class:`~mfcalc.model.settings.ModelSettings`, where
            every hyper-parameter is declared and documented); defaults when omitted.
        **overrides: any :class:`ModelSettings` field by name, e.g. ``n_features=40``
            (``MultiFidelityHipnn(**model.hparams)`` rebuilds a recorded model).

    ``cusp_reg`` is eps inside the tensor norms sqrt(|u|^2 + eps).  The curvature of the
    energy where a norm passes zero (e.g. a carbon in a near-symmetric environment) grows
    like 1/sqrt(eps), and velocity Verlet pays for it in energy drift.  NVE MD of ethanol at
    0.25 fs (tests/integration/test_calculator.py) drifted 2.6e-4 eV/atom with hippynn's
    1e-6; with 1e-4 it ranged from 6e-7 to 1.2e-4 over six small trained models, and the
    worst one fell to 6e-6 with 1e-2 (same weights).  On validation data 1e-2 trains as
    accurately as 1e-4 (README, recipe study), so 1e-2 is the default.

    **Branch heads** (``branch_blocks`` d > 0, ``branch_heads``): the top d interaction blocks
    exist twice, shared and private; the branch heads take their levels L-d+1..L from the
    private copy (which reads the shared features of level L-d) and their lower levels from the
    shared trunk, like every head.  Fine-tuning a new head this way (``--train-params branch``)
    cannot change what the other heads predict.
    """

    def __init__(
        self, species: List[int], fidelities: List[str], settings: Optional[ModelSettings] = None, **overrides
    ):
        super().__init__()
        base = settings if settings is not None else ModelSettings()
        unknown = sorted(set(overrides) - set(ModelSettings.architecture_fields()))
        if unknown:
            raise TypeError(f"unknown model setting(s) {unknown}; known: {ModelSettings.architecture_fields()}")
        settings = dataclasses.replace(base, species=None, **overrides).validate()
        species = sorted(int(z) for z in species)
        if not species or species[0] < 1 or species[-1] > 118 or len(set(species)) != len(species):
            raise ValueError(f"species must be distinct atomic numbers in 1..118, got {species}")
        if not fidelities or len(set(fidelities)) != len(fidelities):
            raise ValueError(f"fidelities must be distinct names, got {fidelities}")
        arch = settings.architecture()
        self.species: List[int] = species
        self.fidelities: List[str] = list(fidelities)
        self.cutoff = float(settings.cutoff)
        self.hparams = json.dumps(dict(species=species, fidelities=list(fidelities), **arch))
        self.species_table: Tensor  # declared for type checkers; registered as a buffer below
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_table", table, persistent=False)
        widths = [len(species)] + [settings.n_features] * settings.n_interactions
        self.blocks = nn.ModuleList([self._block(settings, arch, widths, n) for n in range(settings.n_interactions)])
        self.heads = HierarchicalHeads(widths, len(fidelities))
        if not 0 <= settings.branch_blocks <= settings.n_interactions:
            raise ValueError(
                f"branch_blocks must be in 0..n_interactions ({settings.n_interactions}), got {settings.branch_blocks}"
            )
        if bool(settings.branch_blocks) != bool(settings.branch_heads):
            raise ValueError(
                f"branch_blocks ({settings.branch_blocks}) and branch_heads ({settings.branch_heads}) go together: "
                "both set or neither"
            )
        unknown_heads = sorted(set(settings.branch_heads or []) - set(fidelities))
        if unknown_heads:
            raise ValueError(f"branch_heads {unknown_heads} are not fidelities of the model ({list(fidelities)})")
        self.branch = nn.ModuleList(
            [
                BranchBlock(self._block(settings, arch, widths, n), widths[n + 1], len(fidelities))
                for n in range(settings.n_interactions - settings.branch_blocks, settings.n_interactions)
            ]
        )
        self.branch_mask: Tensor  # (F,) bool: the heads that read the private blocks
        mask = torch.tensor([f in (settings.branch_heads or []) for f in fidelities], dtype=torch.bool)
        self.register_buffer("branch_mask", mask, persistent=False)

    @staticmethod
    def _block(settings: ModelSettings, arch: Dict, widths: List[int], n: int) -> Block:
        return Block(
            widths[n],
            widths[n + 1],
            settings.n_atom_layers,
            settings.resnet,
            n_sensitivities=settings.n_sensitivities,
            tensor_order=settings.tensor_order,
            soft_min=arch["soft_min"],
            soft_max=arch["soft_max"],
            cutoff=arch["cutoff"],
            cusp_reg=settings.cusp_reg,
        )

    @classmethod
    def from_hparams(cls, hparams: str) -> MultiFidelityHipnn:
        return cls(**json.loads(hparams))

    # ---- input checks (TorchScript raises these as plain errors with the message) -----------
    def _check_inputs(self, numbers: Tensor, positions: Tensor, mol_index: Tensor, n_mol: int) -> None:
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (n_atoms, 3), got " + str(list(positions.shape)))
        if numbers.shape[0] != positions.shape[0] or mol_index.shape[0] != positions.shape[0]:
            raise ValueError("numbers, positions and mol_index must have the same number of atoms")
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("positions contain NaN or infinite values")
        if positions.shape[0] > 0:
            if (
                bool((mol_index[1:] < mol_index[:-1]).any())
                or int(mol_index.min()) < 0
                or int(mol_index.max()) >= n_mol
            ):
                raise ValueError("mol_index must be sorted and in [0, n_mol)")

    # ---- the network -------------------------------------------------------------------------
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
        """Energies of all fidelities for a batch of structures.

        Args:
            numbers: (A,) int64 atomic numbers.
            positions: (A, 3) Angstrom (set ``requires_grad`` for forces).
            mol_index: (A,) int64 structure of each atom, sorted.
            n_mol: number of structures B.
            cell: (B, 3, 3) Angstrom lattice vectors as rows; with ``pbc`` for periodic systems.
            pbc: (B, 3) bool.
            pair_first, pair_second, shifts: a precomputed pair list (see
                :mod:`mfcalc.neighbors`); searched here when omitted.

        Returns:
            ``energy`` (B, F) eV; ``energy_levels`` (B, L, F) per-level sums;
            ``atom_energy`` (A, F) eV; ``hierarchicality`` (B, F) sum over atoms and levels
            n >= 1 of (E^n)^2 / ((E^n)^2 + (E^{n-1})^2).
        """
        self._check_inputs(numbers, positions, mol_index, n_mol)
        species = species_index(self.species_table, self.species, numbers)
        if pair_first is None or pair_second is None or shifts is None:
            pair_first, pair_second, shifts = radius_pairs(positions, mol_index, n_mol, self.cutoff, cell, pbc)
        vec = positions[pair_second] - positions[pair_first]
        if cell is not None and shifts.shape[0] > 0:
            offset = torch.bmm(shifts.to(positions.dtype)[:, None, :], cell.to(positions.dtype)[mol_index[pair_first]])
            vec = vec + offset.squeeze(1)
        r = torch.linalg.norm(vec, dim=1)
        rhat = vec / r[:, None]
        z = nn.functional.one_hot(species, len(self.species)).to(positions.dtype)
        features = [z]
        layout = pair_layout(pair_first, pair_second, positions.shape[0])
        r_table, rhat_table = pair_tables(layout, r[None], rhat[None], self.cutoff)
        for block in self.blocks:
            z = block(z, layout, r_table[0], rhat_table[0])
            features.append(z)
        atom_levels = self.heads(features)  # (A, L, F)
        if len(self.branch) > 0:
            first = len(features) - len(self.branch)  # the first level the branch heads take privately
            zb = features[first - 1]
            private: List[Tensor] = []
            for branch in self.branch:
                zb, level = branch(zb, layout, r_table[0], rhat_table[0])
                private.append(level)
            top = torch.where(self.branch_mask, torch.stack(private, dim=1), atom_levels[:, first:])
            atom_levels = torch.cat([atom_levels[:, :first], top], dim=1)
        n_levels, n_fid = atom_levels.shape[1], atom_levels.shape[2]
        mol_levels = torch.zeros(n_mol, n_levels, n_fid, dtype=positions.dtype, device=positions.device)
        mol_levels = mol_levels.index_add(0, mol_index, atom_levels)
        sq = atom_levels**2
        # (A, L-1, F); the 1e-12 keeps the ratio finite when two levels are both zero
        ratio = sq[:, 1:] / (sq[:, 1:] + sq[:, :-1] + 1e-12)
        hier = torch.zeros(n_mol, n_fid, dtype=positions.dtype, device=positions.device)
        hier = hier.index_add(0, mol_index, ratio.sum(dim=1))
        return {
            keys.ENERGY: mol_levels.sum(dim=1),
            keys.ENERGY_LEVELS: mol_levels,
            keys.ATOM_ENERGY: atom_levels.sum(dim=1),
            keys.HIERARCHICALITY: hier,
        }

    @torch.jit.export
    def fidelity_index(self, fidelity: str) -> int:
        """Head index of a fidelity name; raises naming the known ones."""
        return head_index(self.fidelities, fidelity)

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
        """One fidelity's energies (B,) eV and forces (A, 3) eV/Angstrom = -dE/dx by autograd.

        ``create_graph=True`` keeps the graph so a force loss can be back-propagated
        (training); leave it False for MD and optimisation.
        """
        if fidelity < 0 or fidelity >= len(self.fidelities):
            raise ValueError("fidelity index " + str(fidelity) + " out of range for " + str(self.fidelities))
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        out = self.forward(numbers, positions, mol_index, n_mol, cell, pbc, pair_first, pair_second, shifts)
        energy = out[keys.ENERGY][:, fidelity]
        return energy, grad.forces(energy, positions, create_graph)
