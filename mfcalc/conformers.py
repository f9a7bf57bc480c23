"""Conformer search at a chosen fidelity: embed (RDKit), optimise (batched FIRE), prune, rank.

All conformers of a molecule are optimised together: one model call per step evaluates
every conformer still moving (a batch of structures), and each conformer carries its own
FIRE state (Bitzek et al., PRL 97, 170201, 2006; the update is ASE's ``FIRE``).  A conformer
whose energy or forces become non-finite, or that blows apart, is reported as failed and
the run goes on.  After optimisation, conformers are checked for a changed bond graph,
deduplicated by energy and symmetry-aware RMSD (RDKit ``GetBestRMS``), and ranked.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.units import KCAL_MOL_EV

# FIRE parameters (ASE's defaults)
FIRE_DT, FIRE_DTMAX, FIRE_MAXSTEP = 0.1, 1.0, 0.2
FIRE_NMIN, FIRE_FINC, FIRE_FDEC, FIRE_ASTART, FIRE_FA = 5, 1.1, 0.5, 0.1, 0.99
LBFGS_MEMORY, LBFGS_MAXSTEP, LBFGS_H0 = 20, 0.2, 1.0 / 70.0  # ASE's LBFGS: maxstep 0.2 A, alpha 70 eV/A^2
OPTIMIZERS = ("lbfgs", "fire")
SADDLE_CURVATURE = -0.01  # eV/A^2: below this the stationary point is a saddle, not a minimum
SADDLE_KICK = 0.1  # A, largest atomic displacement along the negative mode before re-optimising
EXPLODED_FORCE = 1e3  # eV/Angstrom: a conformer this far from any minimum is reported as failed


@dataclass
class ConformerRecord:
    """One input conformer after optimisation.

    ``status`` is ``"ranked"``, ``"duplicate of <id>"``, ``"above window"``,
    ``"connectivity changed"``, ``"saddle point ..."`` or ``"failed: <reason>"``; only ranked
    conformers have a rank.  Ranked conformers are minima: converged, and the lowest
    curvature of the energy surface (rigid motions projected out) is above
    ``SADDLE_CURVATURE``; saddle points are pushed off along their negative mode and
    re-optimised first.
    Energies in eV (absolute, ``energy_ev``) and kcal/mol relative to the lowest ranked one.
    """

    id: int
    status: str
    energy_ev: Optional[float]
    spread_ev: Optional[float]
    converged: bool
    steps: int
    rank: Optional[int] = None
    relative_kcal_mol: Optional[float] = None
    rmsd_to_lowest: Optional[float] = None
    positions: Optional[np.ndarray] = field(default=None, repr=False)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("positions")
        return d


@dataclass
class RankResult:
    smiles: str
    fidelity: str
    model: str
    records: List[ConformerRecord]
    mol: Any = field(repr=False, default=None)  # RDKit molecule with the optimised conformers

    @property
    def ranked(self) -> List[ConformerRecord]:
        return sorted((r for r in self.records if r.rank is not None), key=lambda r: r.rank)


# ---- input ---------------------------------------------------------------------------------
def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:  # pragma: no cover - rdkit is an extra
        raise ValueError("conformer search needs RDKit: pip install 'mfcalc[conformers]'") from None
    RDLogger.DisableLog("rdApp.*")
    return Chem


def embed_smiles(smiles: str, n_conformers: int, seed: int = 0):
    """RDKit molecule (explicit H) with up to ``n_conformers`` ETKDGv3 conformers."""
    Chem = _rdkit()
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES {smiles!r} (and no file of that name)")
    mol = Chem.AddHs(mol)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    params = AllChem.ETKDGv3()
    # RDKit gives every conformer the same coordinates when randomSeed is 0 (checked with
    # RDKit 2026.09 on ethanol), so the user's seed s maps to RDKit's seed s + 1
    params.randomSeed = int(seed) + 1
    params.numThreads = 1  # reproducible order
    ids = AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params)
    if len(ids) == 0:
        raise ValueError(f"RDKit could not embed any conformer of {smiles!r}")
    return mol


def read_conformers(path: str):
    """Conformers of one molecule from an SDF or a multi-frame XYZ (any ASE format) file."""
    Chem = _rdkit()
    if path.lower().endswith((".sdf", ".mol", ".sd")):
        supplier = Chem.SDMolSupplier(path, removeHs=False)
        mols = list(supplier)
        if not mols or any(m is None for m in mols):
            raise ValueError(f"cannot read every record of {path} as a molecule")
        smiles = {Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols}
        if len(smiles) > 1 or len({m.GetNumAtoms() for m in mols}) > 1:
            raise ValueError(f"{path} mixes different molecules: {sorted(smiles)}")
        mol = Chem.Mol(mols[0])
        for m in mols[1:]:
            mol.AddConformer(Chem.Conformer(m.GetConformer()), assignId=True)
        return mol
    import ase.io
    from rdkit.Chem import rdDetermineBonds

    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not frames:
        raise ValueError(f"{path} holds no structures")
    symbols = {tuple(a.get_chemical_symbols()) for a in frames}
    if len(symbols) > 1:
        raise ValueError(f"{path} mixes different molecules: {sorted(''.join(s) for s in symbols)}")
    first = frames[0]
    block = f"{len(first)}\n\n" + "\n".join(f"{s} {x:.8f} {y:.8f} {z:.8f}"
                                           for s, (x, y, z) in zip(first.get_chemical_symbols(), first.positions))
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        raise ValueError(f"RDKit cannot build a molecule from {path}")
    rdDetermineBonds.DetermineConnectivity(mol)
    mol.RemoveAllConformers()
    for a in frames:
        conf = Chem.Conformer(len(a))
        for i, p in enumerate(a.positions):
            conf.SetAtomPosition(i, p.tolist())
        mol.AddConformer(conf, assignId=True)
    return mol


# ---- batched optimisation ----------------------------------------------------------------------
class _BatchedLBFGS:
    """L-BFGS for many conformers at once, each with its own history (ASE's LBFGS, vectorised).

    Two-loop recursion over the last ``LBFGS_MEMORY`` steps; the initial inverse Hessian is
    ASE's 1/alpha before any curvature is known, then the usual s.y / y.y scaling.  A
    conformer whose energy went up, or whose new pair has no positive curvature, drops its
    history and takes a steepest-descent step; no atom moves more than ``LBFGS_MAXSTEP``.
    """

    def __init__(self, n_conf: int, n_dof: int):
        self.S = np.zeros((n_conf, LBFGS_MEMORY, n_dof))
        self.Y = np.zeros((n_conf, LBFGS_MEMORY, n_dof))
        self.rho = np.zeros((n_conf, LBFGS_MEMORY))  # 0 marks an empty slot: it then contributes nothing
        self.r0 = np.zeros((n_conf, n_dof))
        self.g0 = np.zeros((n_conf, n_dof))
        self.e0 = np.full(n_conf, np.inf)
        self.started = np.zeros(n_conf, dtype=bool)

    def step(self, idx: np.ndarray, r: np.ndarray, f: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Displacements (k, N, 3) for conformers ``idx`` at positions r, forces f, energies e."""
        k = len(idx)
        x, g = r.reshape(k, -1), -f.reshape(k, -1)
        prev = self.started[idx]
        s, y = x - self.r0[idx], g - self.g0[idx]
        sy = (s * y).sum(axis=1)
        keep = prev & (sy > 1e-12) & (e <= self.e0[idx] + 1e-6)
        reset = prev & ~keep
        S, Y, rho = self.S[idx], self.Y[idx], self.rho[idx]
        S[reset], Y[reset], rho[reset] = 0.0, 0.0, 0.0
        S[keep], Y[keep], rho[keep] = np.roll(S[keep], -1, axis=1), np.roll(Y[keep], -1, axis=1), \
            np.roll(rho[keep], -1, axis=1)
        S[keep, -1], Y[keep, -1], rho[keep, -1] = s[keep], y[keep], 1.0 / sy[keep]
        q = g.copy()
        alpha = np.zeros((k, LBFGS_MEMORY))
        for i in range(LBFGS_MEMORY - 1, -1, -1):
            alpha[:, i] = rho[:, i] * (S[:, i] * q).sum(axis=1)
            q -= alpha[:, i, None] * Y[:, i]
        yy = (Y[:, -1] * Y[:, -1]).sum(axis=1)
        h0 = np.where(rho[:, -1] > 0, 1.0 / np.maximum(rho[:, -1] * yy, 1e-300), LBFGS_H0)
        z = h0[:, None] * q
        for i in range(LBFGS_MEMORY):
            beta = rho[:, i] * (Y[:, i] * z).sum(axis=1)
            z += S[:, i] * (alpha[:, i] - beta)[:, None]
        p = -z
        uphill = (p * g).sum(axis=1) >= 0  # not a descent direction: forget and go downhill
        if uphill.any():
            S[uphill], Y[uphill], rho[uphill] = 0.0, 0.0, 0.0
            p[uphill] = -LBFGS_H0 * g[uphill]
        dr = p.reshape(r.shape)
        longest = np.linalg.norm(dr, axis=2).max(axis=1)
        dr *= np.where(longest > LBFGS_MAXSTEP, LBFGS_MAXSTEP / np.maximum(longest, 1e-300), 1.0)[:, None, None]
        self.S[idx], self.Y[idx], self.rho[idx] = S, Y, rho
        self.r0[idx], self.g0[idx], self.e0[idx] = x, g, e
        self.started[idx] = True
        return dr


def optimize_batched(model, numbers: np.ndarray, coords: np.ndarray, fidelity: int, fmax: float = 0.01,
                     max_steps: int = 500, device: torch.device = torch.device("cpu"),
                     dtype: torch.dtype = torch.float64,
                     progress: Optional[Callable[[int, int, int, float], None]] = None,
                     method: str = "lbfgs") -> Dict[str, np.ndarray]:
    """L-BFGS (default) or FIRE on all conformers at once; one model call per step for
    every active conformer.

    Args:
        model: an mfcalc model (``energy_forces_spread``), e.g. from :func:`mfcalc.export.load`.
        numbers: (N,) atomic numbers.
        coords: (C, N, 3) Angstrom starting geometries.
        fidelity: head index.
        fmax: eV/Angstrom, converged when every atom's force is below it (as in ASE).
        progress: called as ``progress(step, n_converged, n_failed, max_force)``.
        method: ``"lbfgs"`` (about 4x fewer steps, see tools/BENCHMARKS.md) or ``"fire"``.

    Returns:
        dict with ``positions`` (C, N, 3), ``energy`` (C,) eV, ``spread`` (C,) eV,
        ``converged`` (C,) bool, ``steps`` (C,) int, ``failed`` (C,) str ('' if fine).
    """
    if method not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {method!r}; use one of {', '.join(OPTIMIZERS)}")
    n_conf, n_atoms = coords.shape[:2]
    lbfgs = _BatchedLBFGS(n_conf, 3 * n_atoms) if method == "lbfgs" else None
    r = np.array(coords, dtype=np.float64, copy=True)
    v = np.zeros_like(r)
    dt = np.full(n_conf, FIRE_DT)
    a = np.full(n_conf, FIRE_ASTART)
    n_pos = np.zeros(n_conf, dtype=np.int64)
    energy = np.full(n_conf, np.nan)
    spread = np.full(n_conf, np.nan)
    converged = np.zeros(n_conf, dtype=bool)
    steps = np.zeros(n_conf, dtype=np.int64)
    failed = np.array([""] * n_conf, dtype=object)
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=device)
    started = np.zeros(n_conf, dtype=bool)
    for step in range(max_steps + 1):
        active = np.nonzero(~converged & (failed == ""))[0]
        if len(active) == 0:
            break
        k = len(active)
        pos = torch.as_tensor(r[active].reshape(-1, 3), dtype=dtype, device=device)
        mol = torch.arange(k, device=device).repeat_interleave(n_atoms)
        e, f, e_std, _ = model.energy_forces_spread(z.repeat(k), pos, mol, k, fidelity)
        e = e.detach().cpu().numpy().astype(np.float64)
        f = f.detach().cpu().numpy().astype(np.float64).reshape(k, n_atoms, 3)
        energy[active], spread[active] = e, e_std.detach().cpu().numpy()
        fnorm = np.linalg.norm(f, axis=2).max(axis=1)
        bad = ~np.isfinite(e) | ~np.isfinite(fnorm) | (fnorm > EXPLODED_FORCE)
        failed[active[bad]] = "failed: non-finite or exploding energy/forces"
        done = ~bad & (fnorm < fmax)
        converged[active[done]] = True
        steps[active] = step
        if progress is not None:
            progress(step, int(converged.sum()), int((failed != "").sum()), float(fnorm[~bad].max(initial=0.0)))
        move = ~bad & ~done
        idx, f = active[move], f[move]
        if step == max_steps or len(idx) == 0:
            continue
        if lbfgs is not None:
            r[idx] += lbfgs.step(idx, r[idx], f, e[move])
            continue
        # ---- FIRE update, per conformer (ASE's algorithm, vectorised) ----
        vi = v[idx]
        first = ~started[idx]
        vf = (vi * f).sum(axis=(1, 2))
        f_norm = np.sqrt((f * f).sum(axis=(1, 2)))
        v_norm = np.sqrt((vi * vi).sum(axis=(1, 2)))
        uphill = ~first & (vf <= 0)
        downhill = ~first & (vf > 0)
        ai, dti, ni = a[idx], dt[idx], n_pos[idx]
        mix = (ai / np.maximum(f_norm, 1e-300) * v_norm)[:, None, None]
        vi = np.where(downhill[:, None, None], (1 - ai)[:, None, None] * vi + mix * f, vi)
        grow = downhill & (ni > FIRE_NMIN)
        dti = np.where(grow, np.minimum(dti * FIRE_FINC, FIRE_DTMAX), dti)
        ai = np.where(grow, ai * FIRE_FA, ai)
        ni = np.where(downhill, ni + 1, ni)
        vi = np.where(uphill[:, None, None], 0.0, vi)
        ai = np.where(uphill, FIRE_ASTART, ai)
        dti = np.where(uphill, dti * FIRE_FDEC, dti)
        ni = np.where(uphill, 0, ni)
        vi = vi + dti[:, None, None] * f
        dr = dti[:, None, None] * vi
        norm_dr = np.sqrt((dr * dr).sum(axis=(1, 2)))
        scale = np.where(norm_dr > FIRE_MAXSTEP, FIRE_MAXSTEP / np.maximum(norm_dr, 1e-300), 1.0)
        r[idx] += dr * scale[:, None, None]
        v[idx], a[idx], dt[idx], n_pos[idx] = vi, ai, dti, ni
        started[idx] = True
    return {"positions": r, "energy": energy, "spread": spread, "converged": converged, "steps": steps,
            "failed": failed}


def internal_curvatures(hessian: np.ndarray, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (eV/A^2) and eigenvectors (3N, M) of a Cartesian Hessian (3N, 3N) with the
    rigid motions (translations, rotations about the centre) projected out and dropped: M is
    3N - 6, or 3N - 5 for a linear molecule."""
    n = len(positions)
    r = positions - positions.mean(axis=0)
    rigid = [np.tile(np.eye(3)[a], n) for a in range(3)] + [np.cross(np.eye(3)[a], r).reshape(-1) for a in range(3)]
    basis, sv, _ = np.linalg.svd(np.array(rigid).T, full_matrices=False)
    basis = basis[:, sv > 1e-8 * sv.max()]
    proj = np.eye(3 * n) - basis @ basis.T
    vals, vecs = np.linalg.eigh(proj @ (0.5 * (hessian + hessian.T)) @ proj)
    internal = np.abs(vecs.T @ basis).sum(axis=1) < 0.5  # the rigid eigenvectors (eigenvalue 0)
    return vals[internal], vecs[:, internal]


def lowest_curvature(model, numbers: np.ndarray, positions: np.ndarray, fidelity: int,
                     step: float = 5e-3, device: torch.device = torch.device("cpu"),
                     dtype: torch.dtype = torch.float64) -> Tuple[np.ndarray, np.ndarray]:
    """Lowest curvature (eV/A^2) of each geometry's energy surface, rigid motions projected out.

    The Hessian comes from central differences of the model's forces: 6N batched model calls
    for all geometries at once.  A clearly negative value means the optimiser stopped at a
    saddle point (e.g. an eclipsed methyl), not a minimum.

    Returns:
        ``(curvature (K,), mode (K, N, 3))``: the lowest eigenvalue and its unit eigenvector.
    """
    k, n = positions.shape[:2]
    dof = 3 * n
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=device).repeat(2 * k)
    mol = torch.arange(2 * k, device=device).repeat_interleave(n)
    hess = np.zeros((k, dof, dof))
    flat = positions.reshape(k, dof)
    for d in range(dof):
        shifted = np.concatenate([flat, flat])
        shifted[:k, d] += step
        shifted[k:, d] -= step
        pos = torch.as_tensor(shifted.reshape(-1, 3), dtype=dtype, device=device)
        _, f, _, _ = model.energy_forces_spread(z, pos, mol, 2 * k, fidelity)
        f = f.detach().cpu().numpy().astype(np.float64).reshape(2 * k, dof)
        hess[:, :, d] = -(f[:k] - f[k:]) / (2 * step)
    curvature, modes = np.zeros(k), np.zeros((k, n, 3))
    for c in range(k):
        vals, vecs = internal_curvatures(hess[c], positions[c])
        i = int(np.argmin(vals))
        curvature[c], modes[c] = vals[i], vecs[:, i].reshape(n, 3)
    return curvature, modes


# ---- analysis ----------------------------------------------------------------------------------
def _bond_graph(mol, positions: np.ndarray) -> np.ndarray:
    """Adjacency matrix from geometry (RDKit's connect-the-dots on covalent radii)."""
    Chem = _rdkit()
    from rdkit.Chem import rdDetermineBonds

    rw = Chem.RWMol(mol)
    for bond in list(rw.GetBonds()):
        rw.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    rw.RemoveAllConformers()
    conf = Chem.Conformer(rw.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, p.tolist())
    rw.AddConformer(conf, assignId=True)
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
    rdDetermineBonds.DetermineConnectivity(rw)
    return Chem.GetAdjacencyMatrix(rw)


def _single_conformer(mol, positions: np.ndarray, heavy_only: bool):
    Chem = _rdkit()
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, p.tolist())
    m.AddConformer(conf, assignId=True)
    return Chem.RemoveHs(m, sanitize=False) if heavy_only else m


def best_rmsd(mol, a: np.ndarray, b: np.ndarray, heavy_only: bool = True) -> float:
    """Symmetry-aware RMSD (Angstrom) between two geometries of ``mol`` after alignment."""
    from rdkit.Chem import rdMolAlign

    pa, pb = _single_conformer(mol, a, heavy_only), _single_conformer(mol, b, heavy_only)
    if pa.GetNumAtoms() < 2:
        return float(np.sqrt(((a - a.mean(0) - (b - b.mean(0))) ** 2).sum(1).mean())) if heavy_only else 0.0
    return float(rdMolAlign.GetBestRMS(pa, pb, maxMatches=10000))


# ---- the whole job -------------------------------------------------------------------------------
def rank(source: str, model: Optional[str] = None, fidelity: Optional[str] = None, n_conformers: int = 50,
         fmax: float = 0.01, max_steps: int = 500, window: float = 10.0, prune_rmsd: float = 0.3,
         energy_tol: float = 0.1, device: str = "auto", seed: int = 0,
         log: Optional[Callable[[str], None]] = None, optimizer: str = "lbfgs") -> RankResult:
    """Generate (or read), optimise and rank conformers of one molecule at one fidelity.

    Args:
        source: a SMILES, or a path to an SDF / multi-frame XYZ of one molecule's conformers.
        model: model file; ``None`` or ``"default"`` for the shipped default model.
        fidelity: head to rank at; ``None`` uses the model's default.
        n_conformers: conformers to embed from a SMILES.
        fmax: eV/Angstrom convergence; max_steps: optimiser steps at most.
        optimizer: ``"lbfgs"`` or ``"fire"``, both batched over all conformers.
        window: kcal/mol above the lowest beyond which conformers are not ranked.
        prune_rmsd: Angstrom; two conformers within ``energy_tol`` kcal/mol whose
            heavy-atom and all-atom symmetry-aware RMSDs are below this are duplicates.
        log: receives progress lines (default: stderr).

    Raises:
        ValueError: invalid SMILES, unreadable or mixed file, element unknown to the model,
            unknown fidelity.
    """
    from mfcalc.calculator import _resolve_device, default_model_path

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    Chem = _rdkit()
    path = default_model_path() if model in (None, "default") else model
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    dev = _resolve_device(device)
    net, meta = export.load(path, device=dev)
    net = export.freeze(net.to(torch.float64))
    fidelities = list(meta[keys.META_FIDELITIES])
    fidelity = fidelity or meta.get(keys.META_DEFAULT_FIDELITY) or fidelities[-1]
    if fidelity not in fidelities:
        raise ValueError(f"unknown fidelity {fidelity!r}; this model has: {', '.join(fidelities)}")
    mol = read_conformers(source) if os.path.exists(source) else embed_smiles(source, n_conformers, seed)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    unknown = sorted({Chem.GetPeriodicTable().GetElementSymbol(int(z)) for z in numbers
                      if int(z) not in meta[keys.META_SPECIES]})
    if unknown:
        known = [Chem.GetPeriodicTable().GetElementSymbol(int(z)) for z in meta[keys.META_SPECIES]]
        raise ValueError(f"element(s) {', '.join(unknown)} not known to this model; it knows {', '.join(known)}")
    coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    say(f"{smiles}: {len(coords)} conformers, optimising at fidelity {fidelity!r} (batched {optimizer}, "
        f"fmax {fmax} eV/A)")

    t0 = time.perf_counter()
    last = [0.0]

    def progress(step, n_conv, n_fail, worst):
        if time.perf_counter() - last[0] > 2.0 or n_conv + n_fail == len(coords):
            last[0] = time.perf_counter()
            say(f"  step {step:4d}: {n_conv}/{len(coords)} converged, {n_fail} failed, max force {worst:.3f} eV/A")

    opt = optimize_batched(net, numbers, coords, fidelities.index(fidelity), fmax, max_steps, dev, torch.float64,
                           progress, method=optimizer)
    fid_index = fidelities.index(fidelity)

    def saddles(candidates: np.ndarray):
        """Those of ``candidates`` that converged at saddle points, with their negative modes.
        The Hessian is computed for one conformer per energy level (duplicates and mirror
        images share the spectrum) and then for every member of a level that is a saddle."""
        done = candidates[opt["converged"][candidates] & (opt["failed"][candidates] == "")]
        done = done[np.argsort(opt["energy"][done])]
        if len(done) == 0:
            return done, np.zeros((0, len(numbers), 3))
        level = np.concatenate([[0], np.cumsum(np.diff(opt["energy"][done]) > 1e-4)])
        reps = np.array([done[level == g][0] for g in range(level[-1] + 1)])
        curv, _ = lowest_curvature(net, numbers, opt["positions"][reps], fid_index, device=dev)
        suspects = done[np.isin(level, np.nonzero(curv < SADDLE_CURVATURE)[0])]
        if len(suspects) == 0:
            return suspects, np.zeros((0, len(numbers), 3))
        curv, modes = lowest_curvature(net, numbers, opt["positions"][suspects], fid_index, device=dev)
        return suspects[curv < SADDLE_CURVATURE], modes[curv < SADDLE_CURVATURE]

    candidates = np.arange(len(coords))  # after a push, only the pushed conformers can have changed
    for _ in range(2):  # push saddle points off along their negative mode, re-optimise
        saddle, kick = saddles(candidates)
        if len(saddle) == 0:
            break
        say(f"  {len(saddle)} conformer(s) stopped at a saddle point; pushing them off along the negative "
            f"mode and re-optimising")
        kick *= SADDLE_KICK / np.linalg.norm(kick, axis=2).max(axis=1)[:, None, None]
        again = optimize_batched(net, numbers, opt["positions"][saddle] + kick, fid_index, fmax, max_steps, dev,
                                 torch.float64, None, method=optimizer)
        for key in ("positions", "energy", "spread", "converged", "failed"):
            opt[key][saddle] = again[key]
        opt["steps"][saddle] += again["steps"]
        candidates = saddle
    else:
        opt["failed"][saddles(candidates)[0]] = "saddle point (negative curvature after 2 pushes)"
    say(f"optimised in {time.perf_counter() - t0:.1f} s")

    records: List[ConformerRecord] = []
    for i in range(len(coords)):
        records.append(ConformerRecord(
            id=i, status=opt["failed"][i] or "ranked",
            energy_ev=float(opt["energy"][i]) if np.isfinite(opt["energy"][i]) else None,
            spread_ev=float(opt["spread"][i]) if meta.get(keys.META_ENSEMBLE_SIZE, 1) > 1 else None,
            converged=bool(opt["converged"][i]), steps=int(opt["steps"][i]), positions=opt["positions"][i]))
    for rec in records:
        if rec.status == "ranked" and not np.array_equal(_bond_graph(mol, coords[rec.id]),
                                                         _bond_graph(mol, rec.positions)):
            rec.status = "connectivity changed"
    candidates = sorted((r for r in records if r.status == "ranked"), key=lambda r: r.energy_ev)
    kept: List[ConformerRecord] = []
    for rec in candidates:
        for ref in kept:
            if abs(rec.energy_ev - ref.energy_ev) / KCAL_MOL_EV < energy_tol \
                    and best_rmsd(mol, rec.positions, ref.positions, True) < prune_rmsd \
                    and best_rmsd(mol, rec.positions, ref.positions, False) < prune_rmsd:
                rec.status = f"duplicate of {ref.id}"
                break
        else:
            kept.append(rec)
    if kept:
        lowest = kept[0]
        rank_no = 0
        for rec in kept:
            rel = (rec.energy_ev - lowest.energy_ev) / KCAL_MOL_EV
            if rel > window:
                rec.status = "above window"
                continue
            rank_no += 1
            rec.rank = rank_no
            rec.relative_kcal_mol = rel
            rec.rmsd_to_lowest = best_rmsd(mol, rec.positions, lowest.positions, True)
    out_mol = Chem.Mol(mol)
    for rec in records:
        conf = out_mol.GetConformer(mol.GetConformers()[rec.id].GetId())
        for j, p in enumerate(rec.positions):
            conf.SetAtomPosition(j, p.tolist())
    return RankResult(smiles=smiles, fidelity=fidelity, model=os.path.abspath(path), records=records, mol=out_mol)


# ---- output --------------------------------------------------------------------------------------
def format_table(result: RankResult) -> str:
    has_spread = any(r.spread_ev is not None for r in result.records)
    head = f"{'rank':>4} {'id':>4} {'rel. E':>10} " + (f"{'spread':>9} " if has_spread else "") + \
        f"{'RMSD':>7} {'conv.':>5} {'steps':>5}"
    units = f"{'':>4} {'':>4} {'kcal/mol':>10} " + (f"{'kcal/mol':>9} " if has_spread else "") + \
        f"{'A':>7} {'':>5} {'':>5}"
    lines = [f"{result.smiles} at fidelity {result.fidelity!r}", head, units]
    for r in result.ranked:
        spread = f"{r.spread_ev / KCAL_MOL_EV:9.3f} " if has_spread else ""
        lines.append(f"{r.rank:>4} {r.id:>4} {r.relative_kcal_mol:10.3f} {spread}{r.rmsd_to_lowest:7.3f} "
                     f"{'yes' if r.converged else 'no':>5} {r.steps:>5}")
    others: Dict[str, int] = {}
    for r in result.records:
        if r.rank is None:
            key = "duplicate" if r.status.startswith("duplicate") else r.status
            others[key] = others.get(key, 0) + 1
    if others:
        lines.append("not ranked: " + ", ".join(f"{n} {k}" for k, n in sorted(others.items())))
    flagged = [r for r in result.records if r.status in ("connectivity changed",) or r.status.startswith("failed")]
    for r in flagged:
        lines.append(f"  conformer {r.id}: {r.status}")
    return "\n".join(lines)


def write_sdf(result: RankResult, path: str) -> None:
    """Ranked conformers, lowest first, with energies and ranks as SDF properties."""
    Chem = _rdkit()
    writer = Chem.SDWriter(path)
    conf_ids = [c.GetId() for c in result.mol.GetConformers()]
    for r in result.ranked:
        m = Chem.Mol(result.mol)
        keep = conf_ids[r.id]
        for cid in [c for c in conf_ids if c != keep]:
            m.RemoveConformer(cid)
        m.SetProp("_Name", f"{result.smiles} conformer {r.id}")
        m.SetIntProp("mfcalc_rank", r.rank)
        m.SetIntProp("mfcalc_id", r.id)
        m.SetDoubleProp("mfcalc_energy_ev", r.energy_ev)
        m.SetDoubleProp("mfcalc_relative_kcal_mol", r.relative_kcal_mol)
        if r.spread_ev is not None:
            m.SetDoubleProp("mfcalc_spread_ev", r.spread_ev)
        m.SetDoubleProp("mfcalc_rmsd_to_lowest", r.rmsd_to_lowest)
        m.SetProp("mfcalc_fidelity", result.fidelity)
        m.SetProp("mfcalc_converged", "yes" if r.converged else "no")
        m.SetIntProp("mfcalc_steps", r.steps)
        writer.write(m)
    writer.close()


def write_json(result: RankResult, path: str) -> None:
    doc = {"smiles": result.smiles, "fidelity": result.fidelity, "model": result.model,
           "conformers": [r.to_json() for r in sorted(result.records, key=lambda r: (r.rank is None, r.rank or 0,
                                                                                    r.id))]}
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
