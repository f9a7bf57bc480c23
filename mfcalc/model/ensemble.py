"""An ensemble of multi-fidelity models, evaluated in one pass; a single model is an ensemble of one.

Every exported model is an :class:`Ensemble`, so the calculator, the conformer search and
evaluation see one interface, :meth:`Ensemble.compute`: the mean energy and forces of one
fidelity, the member spread that flags extrapolation, and the stress of periodic cells.

The K members' weights are stacked with a leading member axis and every layer runs once for
all members (batched matrix products), so a small molecule pays the per-operation overhead
once, not K times, and the pair list is searched once.  Member forces come from a single
backward pass: the positions are replicated per member, (K, A, 3); member k's energy depends
only on replica k, so the gradient of the summed energies with respect to the replicas *is*
the stack of member forces, and their spread costs nothing extra.

It is built from trained :class:`~mfcalc.model.hipnn.MultiFidelityHipnn` members and computes
exactly what they compute one by one (tests/unit/model/test_ensemble.py).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mfcalc import keys
from mfcalc.data.fidelity import head_index
from mfcalc.model import grad
from mfcalc.model.hipnn import MultiFidelityHipnn, species_index
from mfcalc.model.interaction import PairLayout, angular_factors, environment, invariants, pair_layout, pair_tables
from mfcalc.model.sensitivity import sensitivities
from mfcalc.neighbors import radius_pairs


class StackedLinear(nn.Module):
    """K independent linear maps at once: (K, A, F_in) -> (K, A, F_out)."""

    def __init__(self, k: int, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(k, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(k, 1, n_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.bmm(x, self.weight)
        b = self.bias
        if b is not None:
            y = y + b
        return y

    @torch.jit.unused
    def load_members(self, linears: List[nn.Linear]) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.stack([lin.weight.t() for lin in linears]))
            if self.bias is not None:
                self.bias.copy_(torch.stack([lin.bias[None] for lin in linears]))


class StackedResidual(nn.Module):
    """y = R softplus(pre) + b_R + A x per member (A the identity when widths agree)."""

    def __init__(self, k: int, n_in: int, n_out: int):
        super().__init__()
        self.post = StackedLinear(k, n_out, n_out)
        self.skip = StackedLinear(k, n_in, n_out, bias=False) if n_in != n_out else None

    def forward(self, pre: Tensor, x: Tensor) -> Tensor:
        y = self.post(nn.functional.softplus(pre))
        skip = self.skip
        return y + (skip(x) if skip is not None else x)

    @torch.jit.unused
    def load_members(self, residuals: List[nn.Module]) -> None:
        self.post.load_members([r.post for r in residuals])  # type: ignore[misc]
        if self.skip is not None:
            self.skip.load_members([r.skip for r in residuals])  # type: ignore[misc]


class StackedAtomLayer(nn.Module):
    def __init__(self, k: int, width: int, resnet: bool):
        super().__init__()
        self.linear = StackedLinear(k, width, width)
        self.residual = StackedResidual(k, width, width) if resnet else None

    def forward(self, x: Tensor) -> Tensor:
        res = self.residual
        if res is not None:
            return res(self.linear(x), x)
        return nn.functional.softplus(self.linear(x))


class StackedInteraction(nn.Module):
    """:class:`~mfcalc.model.interaction.InteractionLayer` for K members at once (same formulas)."""

    def __init__(
        self, k: int, n_in: int, n_out: int, n_sensitivities: int, tensor_order: int, cutoff: float, cusp_reg: float
    ):
        super().__init__()
        self.tensor_order = tensor_order
        self.cutoff = float(cutoff)
        self.cusp_reg = float(cusp_reg)
        self.inv_mu = nn.Parameter(torch.zeros(k, 1, n_sensitivities))
        self.sigma = nn.Parameter(torch.zeros(k, 1, n_sensitivities))
        self.V = nn.Parameter(torch.zeros(k, n_sensitivities, n_in, n_out))
        self.self_linear = StackedLinear(k, n_in, n_out)
        self.t1 = nn.Parameter(torch.zeros(k, 1, n_out)) if tensor_order >= 1 else None
        self.t2 = nn.Parameter(torch.zeros(k, 1, n_out)) if tensor_order >= 2 else None

    def forward(self, z: Tensor, layout: PairLayout, r_table: Tensor, rhat_table: Tensor) -> Tensor:
        """z (K, A, F_in); r_table (K, A * M); rhat_table (K, A * M, 3) -> (K, A, F_out)."""
        z_v = torch.einsum("kaf,knfo->kano", z, self.V)  # (K, A, N_s, F_out)
        radial = sensitivities(r_table, self.inv_mu, self.sigma, self.cutoff)  # (K, A * M, N_s)
        u = environment(z_v, radial, angular_factors(rhat_table, self.tensor_order), layout)
        return invariants(u, self.t1, self.t2, self.cusp_reg) + self.self_linear(z)


class StackedBlock(nn.Module):
    """Interaction, atom layers, and the energy head of this hierarchy level."""

    def __init__(
        self,
        k: int,
        n_in: int,
        n_out: int,
        n_atom_layers: int,
        resnet: bool,
        n_sensitivities: int,
        tensor_order: int,
        cutoff: float,
        cusp_reg: float,
        n_fidelities: int,
    ):
        super().__init__()
        self.interaction = StackedInteraction(k, n_in, n_out, n_sensitivities, tensor_order, cutoff, cusp_reg)
        self.residual = StackedResidual(k, n_in, n_out) if resnet else None
        self.atom_layers = nn.ModuleList([StackedAtomLayer(k, n_out, resnet) for _ in range(n_atom_layers)])
        self.head = StackedLinear(k, n_out, n_fidelities)

    def forward(self, z: Tensor, layout: PairLayout, r_table: Tensor, rhat_table: Tensor) -> Tuple[Tensor, Tensor]:
        """-> new features (K, A, F) and this level's atom energies (K, A, n_fidelities)."""
        pre = self.interaction(z, layout, r_table, rhat_table)
        res = self.residual
        z = res(pre, z) if res is not None else nn.functional.softplus(pre)
        for layer in self.atom_layers:
            z = layer(z)
        return z, self.head(z)


def _load_block(block: Any, src: List[Any], heads: List[nn.Linear]) -> None:
    """Stack the members' blocks ``src`` and their level heads into ``block`` (a StackedBlock)."""
    inter = block.interaction
    inter.V.copy_(torch.stack([b.interaction.V for b in src]))
    inter.inv_mu.copy_(torch.stack([b.interaction.sensitivity.inv_mu for b in src]))
    inter.sigma.copy_(torch.stack([b.interaction.sensitivity.sigma for b in src]))
    inter.self_linear.load_members([b.interaction.self_linear for b in src])
    if inter.t1 is not None:
        inter.t1.copy_(torch.stack([b.interaction.t1[None] for b in src]))
    if inter.t2 is not None:
        inter.t2.copy_(torch.stack([b.interaction.t2[None] for b in src]))
    if block.residual is not None:
        block.residual.load_members([b.residual for b in src])
    for a, layer in enumerate(block.atom_layers):
        layer.linear.load_members([b.atom_layers[a].linear for b in src])
        if layer.residual is not None:
            layer.residual.load_members([b.atom_layers[a].residual for b in src])
    block.head.load_members(heads)


def _take(lin: Any, k: int, target: nn.Linear) -> None:
    """Member k of a StackedLinear into a plain Linear."""
    target.weight.copy_(lin.weight[k].t())
    if lin.bias is not None:
        target.bias.copy_(lin.bias[k, 0])


def _take_block(block: Any, k: int, dst: Any, head: nn.Linear) -> None:
    """The inverse of :func:`_load_block` for member k."""
    inter, out = block.interaction, dst.interaction
    out.V.copy_(inter.V[k])
    out.sensitivity.inv_mu.copy_(inter.inv_mu[k])
    out.sensitivity.sigma.copy_(inter.sigma[k])
    _take(inter.self_linear, k, out.self_linear)
    if inter.t1 is not None:
        out.t1.copy_(inter.t1[k, 0])
    if inter.t2 is not None:
        out.t2.copy_(inter.t2[k, 0])
    for src_res, dst_res in ((block.residual, dst.residual),) + tuple(
        (a.residual, b.residual) for a, b in zip(block.atom_layers, dst.atom_layers)
    ):
        if src_res is not None:
            _take(src_res.post, k, dst_res.post)
            if src_res.skip is not None:
                _take(src_res.skip, k, dst_res.skip)
    for a, b in zip(block.atom_layers, dst.atom_layers):
        _take(a.linear, k, b.linear)
    _take(block.head, k, head)


class Ensemble(nn.Module):
    """Mean and spread of K :class:`MultiFidelityHipnn` members with the same hyper-parameters.

    Args:
        members: trained members; their weights are copied into the stacked layers.
    """

    def __init__(self, members: List[MultiFidelityHipnn]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(m.hparams != members[0].hparams for m in members):
            raise ValueError("ensemble members must share species, fidelities and hyper-parameters")
        hparams = members[0].hparams
        hp = json.loads(hparams)
        self.hparams = hparams
        self.n_members = len(members)
        self.species: List[int] = [int(z) for z in hp["species"]]
        self.fidelities: List[str] = [str(f) for f in hp["fidelities"]]
        self.cutoff = float(hp["cutoff"])
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("species_table", table, persistent=False)
        self.species_table: Tensor  # declared for type checkers; registered as a buffer above
        k = self.n_members
        widths = [len(self.species)] + [int(hp["n_features"])] * int(hp["n_interactions"])
        n_fid = len(self.fidelities)
        self.blocks = nn.ModuleList(
            [self._stacked_block(k, hp, widths, n, n_fid) for n in range(int(hp["n_interactions"]))]
        )
        self.reference = StackedLinear(k, widths[0], n_fid, bias=False)  # level 0: per-species energies
        n_int, d = int(hp["n_interactions"]), int(hp.get("branch_blocks", 0))
        self.branch = nn.ModuleList([self._stacked_block(k, hp, widths, n, n_fid) for n in range(n_int - d, n_int)])
        branch_heads = list(hp.get("branch_heads") or [])
        mask = torch.tensor([f in branch_heads for f in self.fidelities], dtype=torch.bool)
        self.register_buffer("branch_mask", mask, persistent=False)
        self.branch_mask: Tensor  # (F,) bool: the heads that read the private top blocks
        self.to(next(members[0].parameters()).dtype)
        self._copy_members(members)

    @staticmethod
    @torch.jit.unused
    def _stacked_block(k: int, hp: Dict[str, Any], widths: List[int], n: int, n_fid: int) -> StackedBlock:
        return StackedBlock(
            k,
            widths[n],
            widths[n + 1],
            int(hp["n_atom_layers"]),
            bool(hp["resnet"]),
            int(hp["n_sensitivities"]),
            int(hp["tensor_order"]),
            float(hp["cutoff"]),
            float(hp["cusp_reg"]),
            n_fid,
        )

    @torch.jit.unused
    def _copy_members(self, members: List[MultiFidelityHipnn]) -> None:
        """Copy the members' weights into the stacked layers (member k -> index k)."""
        out: Any = self  # module attributes, typed loosely (nn.Module's __getattr__)
        with torch.no_grad():
            for n, block in enumerate(out.blocks):
                _load_block(block, [m.blocks[n] for m in members], [m.heads.linears()[n + 1] for m in members])
            for n, block in enumerate(out.branch):
                src: List[Any] = [m.branch[n] for m in members]
                _load_block(block, [b.block for b in src], [b.head for b in src])
            out.reference.load_members([m.heads.linears()[0] for m in members])
        out.reference.weight.requires_grad_(False)  # the reference energies stay frozen, as in the members

    @torch.jit.unused
    def member(self, k: int) -> MultiFidelityHipnn:
        """Member ``k`` as a stand-alone :class:`MultiFidelityHipnn` (the inverse of stacking)."""
        if not 0 <= k < self.n_members:
            raise ValueError(f"member {k} out of range: this ensemble has {self.n_members}")
        m: Any = MultiFidelityHipnn(**json.loads(self.hparams)).to(self.reference.weight.dtype)
        me: Any = self

        with torch.no_grad():
            linears = m.heads.linears()
            for n, (block, dst) in enumerate(zip(me.blocks, m.blocks)):
                _take_block(block, k, dst, linears[n + 1])
            for block, dst in zip(me.branch, m.branch):
                _take_block(block, k, dst.block, dst.head)
            _take(me.reference, k, linears[0])
        m.heads.linears()[0].weight.requires_grad_(False)
        return m

    @torch.jit.unused
    def reference_energies(self) -> Tensor:
        """(F, n_species) eV: level 0 of the first member (all members share it)."""
        return self.reference.weight[0].t().detach()

    def members_forward(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        pair_first: Tensor,
        pair_second: Tensor,
        shifts: Tensor,
        cell: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-member outputs for positions (K, A, 3): energy levels (K, B, L, F), atom
        energies (K, A, L, F) and the hierarchicality (K, B, F)."""
        z, layout = self.inputs(numbers, positions, pair_first, pair_second)
        mol_levels, atom_levels = self.levels(
            z, positions, mol_index, n_mol, pair_first, pair_second, shifts, cell, layout
        )
        sq = atom_levels**2
        ratio = sq[:, :, 1:] / (sq[:, :, 1:] + sq[:, :, :-1] + 1e-12)
        hier = torch.zeros(
            mol_levels.shape[0], n_mol, mol_levels.shape[3], dtype=positions.dtype, device=positions.device
        )
        hier = hier.index_add(1, mol_index, ratio.sum(dim=2))
        return mol_levels, atom_levels, hier

    def inputs(
        self, numbers: Tensor, positions: Tensor, pair_first: Tensor, pair_second: Tensor
    ) -> Tuple[Tensor, PairLayout]:
        """The checked, data-dependent part of a pass: species one-hot (K, A, S) and the pair
        layout.  Everything after it (:meth:`levels`) is fixed-shape tensor algebra."""
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("positions contain NaN or infinite values")
        species = species_index(self.species_table, self.species, numbers)
        z = nn.functional.one_hot(species, len(self.species)).to(positions.dtype)
        z = z[None].expand(self.n_members, z.shape[0], z.shape[1])
        return z, pair_layout(pair_first, pair_second, positions.shape[1])

    def levels(
        self,
        z: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        pair_first: Tensor,
        pair_second: Tensor,
        shifts: Tensor,
        cell: Optional[Tensor],
        layout: PairLayout,
    ) -> Tuple[Tensor, Tensor]:
        """The network proper: energy levels per structure (K, B, L, F) and per atom
        (K, A, L, F).  No checks, no data-dependent shapes, no host synchronisation, so
        ``torch.compile`` can take it whole (:func:`mfcalc.export.compile_for_inference`)."""
        vec = positions[:, pair_second] - positions[:, pair_first]  # (K, P, 3)
        if cell is not None and shifts.shape[0] > 0:
            offset = torch.bmm(shifts.to(positions.dtype)[:, None, :], cell.to(positions.dtype)[mol_index[pair_first]])
            vec = vec + offset.squeeze(1)[None]
        r = torch.linalg.norm(vec, dim=2)
        rhat = vec / r[:, :, None]
        levels: List[Tensor] = [self.reference(z)]
        r_table, rhat_table = pair_tables(layout, r, rhat, self.cutoff)
        features: List[Tensor] = [z]
        for block in self.blocks:
            z, level = block(z, layout, r_table, rhat_table)
            levels.append(level)
            features.append(z)
        atom_levels = torch.stack(levels, dim=2)  # (K, A, L, F)
        if len(self.branch) > 0:  # the branch heads' top levels from their private blocks
            first = len(levels) - len(self.branch)
            zb = features[first - 1]
            private: List[Tensor] = []
            for private_block in self.branch:
                zb, level = private_block(zb, layout, r_table, rhat_table)
                private.append(level)
            top = torch.where(self.branch_mask, torch.stack(private, dim=2), atom_levels[:, :, first:])
            atom_levels = torch.cat([atom_levels[:, :, :first], top], dim=2)
        mol_levels = torch.zeros(
            atom_levels.shape[0],
            n_mol,
            atom_levels.shape[2],
            atom_levels.shape[3],
            dtype=positions.dtype,
            device=positions.device,
        )
        return mol_levels.index_add(1, mol_index, atom_levels), atom_levels

    def _pairs(
        self,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        cell: Optional[Tensor],
        pbc: Optional[Tensor],
        pair_first: Optional[Tensor],
        pair_second: Optional[Tensor],
        shifts: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor]:
        if pair_first is None or pair_second is None or shifts is None:
            return radius_pairs(positions.detach(), mol_index, n_mol, self.cutoff, cell, pbc)
        return pair_first, pair_second, shifts

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
        """As :meth:`Ensemble.forward`: member means of every output plus ``energy_std`` (B, F)."""
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (n_atoms, 3), got " + str(list(positions.shape)))
        pf, ps, sh = self._pairs(positions, mol_index, n_mol, cell, pbc, pair_first, pair_second, shifts)
        rep = positions[None].expand(self.n_members, positions.shape[0], 3)
        mol_levels, atom_levels, hier = self.members_forward(numbers, rep, mol_index, n_mol, pf, ps, sh, cell)
        energy = mol_levels.sum(dim=2)  # (K, B, F)
        return {
            keys.ENERGY: energy.mean(dim=0),
            keys.ENERGY_LEVELS: mol_levels.mean(dim=0),
            keys.ATOM_ENERGY: atom_levels.sum(dim=2).mean(dim=0),
            keys.HIERARCHICALITY: hier.mean(dim=0),
            keys.ENERGY_STD: grad.spread(energy),
        }

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
        prepared: Optional[Tuple[Tensor, PairLayout]] = None,
    ) -> Dict[str, Tensor]:
        """As :meth:`Ensemble.compute`, in one forward and one backward pass for all members
        (the member forces, and so their spread, come with the mean at no extra cost).

        ``prepared``: what :meth:`inputs` returned for these atomic numbers and this pair list,
        kept by a caller that reuses the pair list over many steps (MD), so that the species
        check and the pair layout are not redone every step; the caller then checks that
        the positions are finite."""
        if fidelity < 0 or fidelity >= len(self.fidelities):
            raise ValueError("fidelity index " + str(fidelity) + " out of range for " + ", ".join(self.fidelities))
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("positions must have shape (n_atoms, 3), got " + str(list(positions.shape)))
        pf, ps, sh = self._pairs(positions, mol_index, n_mol, cell, pbc, pair_first, pair_second, shifts)
        k = self.n_members
        replicas = positions.detach()[None].repeat(k, 1, 1).requires_grad_(True)  # (K, A, 3)
        used, used_cell = replicas, cell
        strain = torch.zeros(0)
        if stress:
            if cell is None:
                raise ValueError("the stress needs a periodic cell")
            flat, used_cell, strain = grad.strained(replicas.reshape(-1, 3), cell, mol_index.repeat(k))
            used = flat.reshape(k, -1, 3)
        if prepared is None:
            z, layout = self.inputs(numbers, used, pf, ps)
        else:
            z, layout = prepared
        mol_levels, _ = self.levels(z, used, mol_index, n_mol, pf, ps, sh, used_cell, layout)
        heads = mol_levels.sum(dim=2)  # (K, B, F)
        e = heads[:, :, fidelity]  # (K, B)
        if stress:
            f_all, virial = grad.forces_and_virial(e, replicas, strain, create_graph)
        else:
            f_all, virial = grad.forces(e, replicas, create_graph), torch.zeros(0)
        result: Dict[str, Tensor] = {
            keys.ENERGY: e.mean(dim=0),
            keys.ENERGY_STD: grad.spread(e),
            keys.HEAD_ENERGY_STD: grad.spread(heads.detach()),
            keys.FORCES: f_all.mean(dim=0),
        }
        if forces_spread:
            result[keys.FORCES_STD] = grad.spread(f_all)
        if stress and cell is not None:
            result[keys.STRESS] = grad.stress(virial / float(k), cell)
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
            None,
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
            None,
        )
        return out[keys.ENERGY], out[keys.FORCES], out[keys.ENERGY_STD], out[keys.FORCES_STD]
