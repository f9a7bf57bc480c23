"""Radial sensitivity functions with a smooth cutoff (HIP-NN, inverse-distance form)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def cosine_cutoff(r: Tensor, cutoff: float) -> Tensor:
    """f_c(r) = cos^2(pi r / (2 r_c)) for r < r_c, else 0.  f_c and f_c' vanish at r_c (C^1)."""
    fc = torch.cos(r * (math.pi / (2.0 * cutoff))) ** 2
    return torch.where(r < cutoff, fc, torch.zeros_like(fc))


def sensitivities(r: Tensor, inv_mu: Tensor, sigma: Tensor, cutoff: float) -> Tensor:
    """(...,) distances -> (..., N_s): exp(-1/2 sigma^2 (1/r - 1/mu)^2) f_c(r); the parameters
    broadcast against ``r[..., None]`` (one model: (1, N_s); K stacked members: (K, 1, N_s))."""
    x = sigma * (1.0 / r[..., None] - inv_mu)
    return torch.exp(-0.5 * x * x) * cosine_cutoff(r, cutoff)[..., None]


class InverseSensitivity(nn.Module):
    """s_nu(r) = exp(-1/2 sigma_nu^2 (1/r - 1/mu_nu)^2) f_c(r).

    Centres are parameterised by 1/mu directly (cannot cross r = 0) and start evenly
    spaced in 1/r between ``1/soft_max`` (index 0, long range) and ``1/soft_min``; every
    width sigma starts at ``2 * n * soft_min`` (hippynn's choice).

    Args:
        n_sensitivities: number of radial functions N_s.
        soft_min, soft_max: Angstrom, where the centres start.
        cutoff: Angstrom, hard cutoff r_c.
    """

    def __init__(self, n_sensitivities: int, soft_min: float, soft_max: float, cutoff: float):
        super().__init__()
        if not 0 < soft_min < soft_max <= cutoff:
            raise ValueError(f"need 0 < soft_min < soft_max <= cutoff, got {soft_min}, {soft_max}, {cutoff}")
        self.cutoff = float(cutoff)
        inv_mu = torch.linspace(1.0 / soft_max, 1.0 / soft_min, n_sensitivities)
        self.inv_mu = nn.Parameter(inv_mu[None, :])
        self.sigma = nn.Parameter(torch.full((1, n_sensitivities), 2.0 * n_sensitivities * soft_min))

    def forward(self, r: Tensor) -> Tensor:
        """(P,) distances in Angstrom -> (P, N_s) sensitivities."""
        return sensitivities(r, self.inv_mu, self.sigma, self.cutoff)
