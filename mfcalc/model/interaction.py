"""HIP-NN-TS interaction layers with tensor sensitivities of order l = 0, 1, 2.

For pair p = (i, j) with unit vector r_hat and sensitivities s_nu(r), the layer forms
environment sums of the sender features z_j for the components

    l = 0:  s_nu                       (1 component)
    l = 1:  s_nu * r_hat^a             (3 components)
    l = 2:  s_nu * (r_hat r_hat^T - I/3)  [xx, xy, xz, yy, yz]  (5 components, traceless)

and contracts them with one weight tensor V shared by all orders (weight tying):

    u^c_i = sum_p sum_nu s^c_nu(p) (z_j V_nu)                       (A, C, F_out)
    a_i   = u^0_i + t1 * sqrt(|u^{1}_i|^2 + eps) + t2 * sqrt(||U^{2}_i||_F^2 + eps) + W z_i + b

The work per pair is kept small and dense:

* the product z_j V_nu is formed per atom before the pair sum (the same linear map as
  hippynn's envsum-then-GEMM, but no (P, C, N_s, F_in) tensor is ever materialised);
* every tensor component factorises into an angular part and the radial sensitivities,
  s^c_nu(p) = a^c(r_hat_p) s_nu(r_p), so the sum over nu is done once per pair,
  g_p = sum_nu s_nu(r_p) (z_j V_nu), and the C components are a^c(r_hat_p) g_p;
* both sums run as batched matrix products over padded neighbour tables
  (:func:`pair_layout`): g = S_j (z_j V) per sender j with S_j its (M x N_s) pair
  sensitivities, then u_i = A_i^T G_i per receiver i, with one permutation between the two
  tables.  Sensitivities and angular factors are computed in the tables directly, so per
  pair only about N_s + 2F + C numbers are written; gathering z_j V (N_s x F per pair) and
  scattering (C x F per pair), as before, moved 10x more (tools/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from mfcalc.model.sensitivity import InverseSensitivity

# Where each pair sits in the two padded neighbour tables, built once per forward pass and
# shared by every layer and ensemble member: (sender_slot (P,), receiver_slot (P,), width M,
# to_receiver (A * M,)).  Both tables are (A x M); to_receiver is a permutation of their slots
# that takes every pair from its sender slot to its receiver slot (and padding to padding).
PairLayout = Tuple[Tensor, Tensor, int, Tensor]


def _table_slots(owner: Tensor, n_atoms: int, width: int) -> Tensor:
    """Slot of each pair in an (n_atoms x width) table whose row is the pair's ``owner``."""
    counts = torch.bincount(owner, minlength=n_atoms)
    order = torch.argsort(owner, stable=True)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(owner)
    rank[order] = torch.arange(owner.shape[0], device=owner.device) - start[owner[order]]
    return owner * width + rank


def pair_layout(pair_first: Tensor, pair_second: Tensor, n_atoms: int) -> PairLayout:
    """Padded-table positions of the pairs (receiver ``pair_first``, sender ``pair_second``).

    Any pair list works: any order, not necessarily symmetric, atoms without pairs.  The width
    M is the most pairs any atom has on either side, so both tables have as many padding
    slots as each other and moving between them is a permutation: a scatter-copy forward and
    a gather backward, with no accumulating scatter (deterministic on GPUs too).
    """
    device = pair_first.device
    counts = torch.maximum(
        torch.bincount(pair_first, minlength=n_atoms), torch.bincount(pair_second, minlength=n_atoms)
    )
    width = int(counts.max()) if pair_first.shape[0] > 0 else 0
    sender_slot = _table_slots(pair_second, n_atoms, width)
    receiver_slot = _table_slots(pair_first, n_atoms, width)
    n_slots = n_atoms * width
    free_sender = torch.ones(n_slots, dtype=torch.bool, device=device).index_fill(0, sender_slot, False)
    free_receiver = torch.ones(n_slots, dtype=torch.bool, device=device).index_fill(0, receiver_slot, False)
    to_receiver = torch.empty(n_slots, dtype=torch.long, device=device)
    to_receiver = to_receiver.index_copy(0, sender_slot, receiver_slot)
    to_receiver = to_receiver.index_copy(
        0, torch.nonzero(free_sender).squeeze(1), torch.nonzero(free_receiver).squeeze(1)
    )
    return sender_slot, receiver_slot, width, to_receiver


def pair_tables(layout: PairLayout, r: Tensor, rhat: Tensor, cutoff: float) -> Tuple[Tensor, Tensor]:
    """Per-pair geometry into the tables, once for all layers: distances (K, P) -> (K, A * M)
    in the sender table (padding at 2 x cutoff, where every sensitivity is exactly 0), unit
    vectors (K, P, 3) -> (K, A * M, 3) in the receiver table (padding 0)."""
    sender_slot, receiver_slot, width, to_receiver = layout
    k, n_slots = r.shape[0], to_receiver.shape[0]
    r_table = torch.full((k, n_slots), 2.0 * cutoff, dtype=r.dtype, device=r.device).index_copy(1, sender_slot, r)
    rhat_table = torch.zeros(k, n_slots, 3, dtype=rhat.dtype, device=rhat.device).index_copy(1, receiver_slot, rhat)
    return r_table, rhat_table


def angular_factors(rhat: Tensor, tensor_order: int) -> Tensor:
    """(..., 3) unit vectors -> (..., C) angular factors [1, r_hat, traceless r_hat r_hat^T (5)]."""
    parts = [torch.ones_like(rhat[..., :1])]
    if tensor_order >= 1:
        parts.append(rhat)
    if tensor_order >= 2:
        x, y, z = rhat[..., 0], rhat[..., 1], rhat[..., 2]
        parts.append(torch.stack([x * x - 1.0 / 3.0, x * y, x * z, y * y - 1.0 / 3.0, y * z], dim=-1))
    return torch.cat(parts, dim=-1)


def environment(z_v: Tensor, radial: Tensor, angular: Tensor, layout: PairLayout) -> Tensor:
    """u^c_i = sum_(p = (i, j)) a^c(p) sum_nu s_nu(p) (z_j V_nu), for K stacked members.

    Args:
        z_v: (K, A, N_s, F) per-atom products z V.
        radial: (K, A * M, N_s) sensitivities in the sender table (0 in padding).
        angular: (K, A * M, C) angular factors in the receiver table.

    Returns:
        (K, A, C, F).
    """
    to_receiver, width = layout[3], layout[2]
    k, n_atoms, n_s, f = z_v.shape[0], z_v.shape[1], z_v.shape[2], z_v.shape[3]
    c = angular.shape[2]
    g = torch.bmm(radial.reshape(k * n_atoms, width, n_s), z_v.reshape(k * n_atoms, n_s, f))  # per sender
    g = torch.zeros_like(g).reshape(k, n_atoms * width, f).index_copy(1, to_receiver, g.reshape(k, -1, f))
    a_table = angular.reshape(k * n_atoms, width, c).transpose(1, 2)
    return torch.bmm(a_table, g.reshape(k * n_atoms, width, f)).reshape(k, n_atoms, c, f)


def invariants(u: Tensor, t1: Optional[Tensor], t2: Optional[Tensor], cusp_reg: float) -> Tensor:
    """(K, A, C, F) environments -> (K, A, F): u^0 + t1 |u^1| + t2 ||U^2||_F (eps-regularised)."""
    out = u[:, :, 0]
    if t1 is not None:
        out = out + t1 * torch.sqrt((u[:, :, 1:4] ** 2).sum(dim=2) + cusp_reg)
    if t2 is not None:
        q = u[:, :, 4:9]  # xx, xy, xz, yy, yz of a traceless symmetric tensor: ||Q||^2 below
        frob2 = 2.0 * ((q**2).sum(dim=2) + q[:, :, 0] * q[:, :, 3])
        out = out + t2 * torch.sqrt(frob2 + cusp_reg)
    return out


class InteractionLayer(nn.Module):
    """One HIP-NN-TS interaction; returns the pre-activation (A, F_out).

    Args:
        n_in, n_out: feature widths.
        n_sensitivities: N_s radial functions.
        tensor_order: 0 (HIP-NN), 1 or 2 (HIP-NN-TS).
        soft_min, soft_max, cutoff: Angstrom, see :class:`InverseSensitivity`.
        cusp_reg: eps inside the norms' square roots (keeps second derivatives finite).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_sensitivities: int,
        tensor_order: int,
        soft_min: float,
        soft_max: float,
        cutoff: float,
        cusp_reg: float = 1e-2,
    ):
        super().__init__()
        if tensor_order not in (0, 1, 2):
            raise ValueError(f"tensor_order must be 0, 1 or 2, got {tensor_order}")
        self.tensor_order = tensor_order
        self.cusp_reg = float(cusp_reg)
        self.sensitivity = InverseSensitivity(n_sensitivities, soft_min, soft_max, cutoff)
        std = math.sqrt(2.0 / (n_sensitivities * n_in + n_out))
        self.V = nn.Parameter(torch.randn(n_sensitivities, n_in, n_out) * std)
        self.self_linear = nn.Linear(n_in, n_out)
        nn.init.xavier_normal_(self.self_linear.weight)
        self.t1 = nn.Parameter(torch.randn(n_out)) if tensor_order >= 1 else None
        self.t2 = nn.Parameter(torch.randn(n_out)) if tensor_order >= 2 else None

    def forward(self, z: Tensor, layout: PairLayout, r_table: Tensor, rhat_table: Tensor) -> Tensor:
        """z (A, F_in); layout and tables (A * M,), (A * M, 3) from :func:`pair_layout` and
        :func:`pair_tables` -> (A, F_out)."""
        z_v = torch.einsum("af,nfo->ano", z, self.V)  # (A, N_s, F_out)
        angular = angular_factors(rhat_table, self.tensor_order)
        u = environment(z_v[None], self.sensitivity(r_table)[None], angular[None], layout)
        return invariants(u, self.t1, self.t2, self.cusp_reg)[0] + self.self_linear(z)
