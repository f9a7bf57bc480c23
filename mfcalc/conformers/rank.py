"""The conformer search as a short sequence of named steps.

load the model -> embed or read conformers -> check the molecule is in the model's domain
-> optimise all conformers together -> push saddle points off and re-optimise -> drop
conformers whose bonds changed -> merge duplicates -> rank within the energy window.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.chem import rdkit_chem
from mfcalc.conformers.hessian import SADDLE_CURVATURE, lowest_curvature
from mfcalc.conformers.molecules import (
    SDF_SUFFIXES,
    atomic_numbers,
    best_rmsd,
    bond_graph,
    conformer_coordinates,
    distinct,
    electronic_state,
    embed_smiles,
    read_conformers,
)
from mfcalc.conformers.optimize import STALL_STEPS, model_evaluator, optimize
from mfcalc.data.fidelity import head_index
from mfcalc.device import resolve_device
from mfcalc.elements import check_elements, electronic_state_problem, unlabelled_elements_warning
from mfcalc.progress import ProgressLines, stderr_line
from mfcalc.units import KCAL_MOL_EV

SADDLE_KICK = 0.1  # A, largest atomic displacement along the negative mode before re-optimising
SADDLE_PUSHES = 2


@dataclass
class ConformerRecord:
    """One input conformer after optimisation.

    ``status`` is ``"ranked"``, ``"duplicate of <id>"``, ``"above window"``,
    ``"connectivity changed"``, ``"saddle point ..."`` or ``"failed: <reason>"`` (which
    includes a stalled optimisation); only ranked conformers have a rank.  Ranked
    conformers are minima: converged, and the lowest curvature of the energy surface (rigid
    motions projected out) is above ``SADDLE_CURVATURE``.
    Energies in eV (absolute, ``energy_ev``) and kcal/mol relative to the lowest ranked one;
    ``spread_ev`` and ``initial_spread_ev`` are the ensemble energy spreads of the optimised
    and the starting geometry at the ranking's head, ``domain_spread_ev`` and
    ``initial_domain_spread_ev`` those of the head the model's domain check uses
    (:func:`mfcalc.export.spread_check`: the head that saw the whole training domain; the same
    numbers when that is the ranking's head), ``relative_spread_kcal_mol`` the members' spread
    of the relative energy (each member's energy minus its own energy of the lowest conformer:
    the uncertainty of the ranking, free of the offset the members share), and
    ``outside_domain`` whether a domain spread exceeded the model's warning threshold.
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
    initial_spread_ev: Optional[float] = None
    relative_spread_kcal_mol: Optional[float] = None
    domain_spread_ev: Optional[float] = None
    initial_domain_spread_ev: Optional[float] = None
    outside_domain: bool = False
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)

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
    warnings: List[str] = field(default_factory=list)  # why the molecule may be outside the model's domain

    @property
    def ranked(self) -> List[ConformerRecord]:
        return sorted((r for r in self.records if r.rank is not None), key=lambda r: r.rank or 0)


@dataclass
class _Model:
    net: Any
    meta: Dict[str, Any]
    path: str
    fidelity: str
    index: int
    device: torch.device
    spread_index: Optional[int] = None  # the head of the domain check (None: ``index``)
    source: Any = None  # the loaded module before freezing: its weights rebuild the members

    @property
    def is_ensemble(self) -> bool:
        return int(self.meta.get(keys.META_ENSEMBLE_SIZE, 1)) > 1


def rank(
    source: str,
    model: Optional[str] = None,
    fidelity: Optional[str] = None,
    n_conformers: int = 50,
    fmax: float = 0.01,
    max_steps: int = 500,
    window: float = 10.0,
    prune_rmsd: float = 0.3,
    energy_tol: float = 0.1,
    device: str = "auto",
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
    optimizer: str = "lbfgs",
    stall_steps: Optional[int] = STALL_STEPS,
) -> RankResult:
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
        stall_steps: stop a conformer that makes no progress for this many steps.

    Raises:
        ValueError: invalid SMILES, unreadable or mixed file, element unknown to the model,
            a charge or spin state the model was not trained on, unknown fidelity.
    """
    say = log or stderr_line
    job = _load_model(model, fidelity, device)
    from_file = os.path.exists(source)
    mol = read_conformers(source) if from_file else embed_smiles(source, n_conformers, seed)
    numbers = atomic_numbers(mol)
    check_elements(numbers, job.meta[keys.META_SPECIES])
    coords = conformer_coordinates(mol)
    smiles = rdkit_chem().MolToSmiles(rdkit_chem().RemoveHs(mol))
    state = electronic_state(mol, bonds_known=not from_file or source.lower().endswith(SDF_SUFFIXES))
    problem = electronic_state_problem(numbers, *state, job.meta.get(keys.META_DOMAIN))
    if problem:
        raise ValueError(f"{smiles} has {problem}; no ranking of it would mean anything")
    evaluate = model_evaluator(job.net, numbers, job.index, job.device)
    initial_spread = evaluate(coords)[2]
    initial_domain = _domain_spreads(job, numbers, coords, initial_spread)
    found = domain_warnings(job.meta, numbers, initial_domain, job.fidelity)
    for text in found:
        say(f"WARNING: {text}")
        warnings.warn(f"{smiles}: {text}", stacklevel=2)
    say(
        f"{smiles}: {len(coords)} conformers, optimising at fidelity {job.fidelity!r} (batched {optimizer}, "
        f"fmax {fmax} eV/A)"
    )
    t0 = time.perf_counter()
    lines = ProgressLines(say, timestamps=False)

    def progress(step: int, n_conv: int, n_fail: int, worst: float) -> None:
        lines(
            f"  step {step:4d}: {n_conv}/{len(coords)} converged, {n_fail} stopped, max force {worst:.3f} eV/A",
            force=n_conv + n_fail == len(coords),
        )

    opt = optimize(evaluate, coords, fmax, max_steps, optimizer, progress, stall_steps)
    _push_off_saddles(opt, job, numbers, fmax, max_steps, optimizer, stall_steps, say)
    say(f"optimised in {time.perf_counter() - t0:.1f} s")
    final_domain = _domain_spreads(job, numbers, opt["positions"], opt["spread"])
    records = _records(opt, initial_spread, initial_domain, final_domain, job)
    _mark_changed_bonds(records, mol, coords)
    kept = _merge_duplicates(records, mol, energy_tol, prune_rmsd)
    _assign_ranks(kept, window, mol)
    _relative_spreads(job, numbers, [r for r in kept if r.rank is not None])
    return RankResult(
        smiles=smiles,
        fidelity=job.fidelity,
        model=os.path.abspath(job.path),
        records=records,
        mol=_output_molecule(mol, records),
        warnings=found,
    )


# ---- the steps ---------------------------------------------------------------------------------------
def _load_model(model: Optional[str], fidelity: Optional[str], device: str) -> _Model:
    from mfcalc.models import default_model_path

    path = default_model_path() if model in (None, "default") else str(model)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    dev = resolve_device(device)
    net, meta = export.load(path, device=dev)
    fidelities = list(meta[keys.META_FIDELITIES])
    name = fidelity or meta.get(keys.META_DEFAULT_FIDELITY) or fidelities[-1]
    index = head_index(fidelities, name)
    net = net.to(torch.float64)
    return _Model(export.freeze(net), meta, path, name, index, dev, export.spread_head_index(meta), source=net)


def domain_warnings(meta: Dict[str, Any], numbers: np.ndarray, spreads: np.ndarray, fidelity: str) -> List[str]:
    """Reasons to doubt the model on this molecule, checked before any optimisation: an element
    the head never had a label for, more heavy atoms than in its training data, and ensemble
    spreads above its warning threshold."""
    found: List[str] = []
    domain = meta.get(keys.META_DOMAIN) or {}
    unlabelled = unlabelled_elements_warning(numbers, domain, fidelity)
    if unlabelled:
        found.append(unlabelled)
    heavy = int((np.asarray(numbers) > 1).sum())
    span = domain.get("heavy_atoms")
    if span and heavy > int(span[1]):
        found.append(
            f"the molecule has {heavy} heavy atoms; the model was trained on molecules with "
            f"{span[0]} to {span[1]}: expect errors well beyond its test metrics"
        )
    threshold, head = export.spread_check(meta)
    if threshold is not None and int(meta.get(keys.META_ENSEMBLE_SIZE, 1)) > 1:
        above = np.asarray(spreads) > float(threshold)
        if above.any():
            found.append(
                f"the ensemble members disagree by more than {threshold} eV (the model's warning "
                f"threshold, head '{head}') on {int(above.sum())} of {len(above)} starting conformers (largest "
                f"{float(np.max(spreads)):.2f} eV): this chemistry is outside the training data"
            )
    return found


def _push_off_saddles(
    opt: Dict[str, np.ndarray],
    job: _Model,
    numbers: np.ndarray,
    fmax: float,
    max_steps: int,
    optimizer: str,
    stall_steps: Optional[int],
    say: Callable[[str], None],
) -> None:
    """Converged conformers at saddle points are pushed along their negative mode and
    re-optimised (twice at most); any still at a saddle are marked, not ranked."""
    candidates = np.arange(len(opt["energy"]))  # after a push, only the pushed conformers can have changed
    lines = ProgressLines(say, interval=10.0, timestamps=False)
    for _ in range(SADDLE_PUSHES):
        saddle, kick = _saddles(opt, candidates, job, numbers, lines)
        if len(saddle) == 0:
            return
        say(
            f"  {len(saddle)} conformer(s) stopped at a saddle point; pushing them off along the negative "
            f"mode and re-optimising"
        )
        kick *= SADDLE_KICK / np.linalg.norm(kick, axis=2).max(axis=1)[:, None, None]
        evaluate = model_evaluator(job.net, numbers, job.index, job.device)

        def progress(step: int, n_conv: int, n_fail: int, worst: float, n: int = len(saddle)) -> None:
            lines(f"  re-optimising, step {step:4d}: {n_conv}/{n} converged, max force {worst:.3f} eV/A")

        again = optimize(evaluate, opt["positions"][saddle] + kick, fmax, max_steps, optimizer, progress, stall_steps)
        for key in ("positions", "energy", "spread", "converged", "failed"):
            opt[key][saddle] = again[key]
        opt["steps"][saddle] += again["steps"]
        candidates = saddle
    opt["failed"][_saddles(opt, candidates, job, numbers, lines)[0]] = (
        f"saddle point (negative curvature after {SADDLE_PUSHES} pushes)"
    )


def _saddles(
    opt: Dict[str, np.ndarray],
    candidates: np.ndarray,
    job: _Model,
    numbers: np.ndarray,
    lines: Callable[[str], None],
):
    """Those of ``candidates`` that converged at saddle points, with their negative modes.
    The Hessian is computed for one conformer per energy level (duplicates and mirror
    images share the spectrum) and then for the other members of a level that is a saddle."""
    none = (np.zeros(0, dtype=np.int64), np.zeros((0, len(numbers), 3)))
    done = candidates[opt["converged"][candidates] & (opt["failed"][candidates] == "")]
    done = done[np.argsort(opt["energy"][done])]
    if len(done) == 0:
        return none

    def curvatures(rows: np.ndarray, what: str):
        def progress(d: int, dof: int) -> None:
            lines(f"  saddle check: Hessians of {len(rows)} {what}, {d}/{dof} displacements")

        return lowest_curvature(
            job.net, numbers, opt["positions"][rows], job.index, device=job.device, progress=progress
        )

    level = np.concatenate([[0], np.cumsum(np.diff(opt["energy"][done]) > 1e-4)])
    first = np.array([np.nonzero(level == g)[0][0] for g in range(level[-1] + 1)])  # positions in ``done``
    curv_rep, mode_rep = curvatures(done[first], "conformers (one per energy level)")
    curv, modes = np.full(len(done), np.inf), np.zeros((len(done), len(numbers), 3))
    curv[first], modes[first] = curv_rep, mode_rep
    saddle_levels = np.nonzero(curv_rep < SADDLE_CURVATURE)[0]
    rest = np.setdiff1d(np.nonzero(np.isin(level, saddle_levels))[0], first)  # other members of saddle levels
    if len(rest):
        curv[rest], modes[rest] = curvatures(done[rest], "conformers sharing an energy with a saddle point")
    is_saddle = curv < SADDLE_CURVATURE
    return done[is_saddle], modes[is_saddle]


def _domain_spreads(job: _Model, numbers: np.ndarray, positions: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The spreads of the domain check's head at ``positions`` (k, N, 3); ``own`` (the
    ranking head's) when that is the same head.  Conformers with non-finite positions
    (exploded) keep ``own``."""
    if job.spread_index is None or job.spread_index == job.index:
        return own
    spreads = np.array(own, dtype=np.float64)
    finite = np.isfinite(positions).all(axis=(1, 2))
    if finite.any():  # energies only: one forward pass, no forces
        z, x, mol, k = _batch(numbers, positions[finite], job.device)
        with torch.no_grad():
            out = job.net(z, x, mol, k)
        spreads[finite] = out[keys.ENERGY_STD][:, job.spread_index].cpu().numpy()
    return spreads


def _records(
    opt: Dict[str, np.ndarray],
    initial_spread: np.ndarray,
    initial_domain: np.ndarray,
    final_domain: np.ndarray,
    job: _Model,
) -> List[ConformerRecord]:
    threshold = export.spread_check(job.meta)[0]
    records = []
    for i in range(len(opt["energy"])):
        spread = float(opt["spread"][i]) if job.is_ensemble else None
        start = float(initial_spread[i]) if job.is_ensemble else None
        domain = float(final_domain[i]) if job.is_ensemble else None
        domain_start = float(initial_domain[i]) if job.is_ensemble else None
        outside = (
            threshold is not None
            and job.is_ensemble
            and max(np.nan_to_num(domain or 0.0), domain_start or 0.0) > float(threshold)
        )
        records.append(
            ConformerRecord(
                id=i,
                status=opt["failed"][i] or "ranked",
                energy_ev=float(opt["energy"][i]) if np.isfinite(opt["energy"][i]) else None,
                spread_ev=spread,
                converged=bool(opt["converged"][i]),
                steps=int(opt["steps"][i]),
                initial_spread_ev=start,
                domain_spread_ev=domain,
                initial_domain_spread_ev=domain_start,
                outside_domain=bool(outside),
                positions=opt["positions"][i],
            )
        )
    return records


def _mark_changed_bonds(records: List[ConformerRecord], mol: Any, coords: np.ndarray) -> None:
    for rec in records:
        if rec.status == "ranked" and not np.array_equal(
            bond_graph(mol, coords[rec.id]), bond_graph(mol, rec.positions)
        ):
            rec.status = "connectivity changed"


def _merge_duplicates(
    records: List[ConformerRecord], mol: Any, energy_tol: float, prune_rmsd: float
) -> List[ConformerRecord]:
    """The distinct conformers, lowest first; the others are marked ``duplicate of <id>``."""
    candidates = [r for r in records if r.status == "ranked"]
    energies = [r.energy_ev or 0.0 for r in candidates]
    kept: List[ConformerRecord] = []
    for i, same in distinct(mol, [r.positions for r in candidates], energies, energy_tol, prune_rmsd):
        if same is None:
            kept.append(candidates[i])
        else:
            candidates[i].status = f"duplicate of {candidates[same].id}"
    return kept


def _assign_ranks(kept: List[ConformerRecord], window: float, mol: Any) -> None:
    if not kept:
        return
    lowest = kept[0]
    rank_no = 0
    for rec in kept:
        rel = ((rec.energy_ev or 0.0) - (lowest.energy_ev or 0.0)) / KCAL_MOL_EV
        if rel > window:
            rec.status = "above window"
            continue
        rank_no += 1
        rec.rank = rank_no
        rec.relative_kcal_mol = rel
        rec.rmsd_to_lowest = best_rmsd(mol, rec.positions, lowest.positions, True)


def _relative_spreads(job: _Model, numbers: np.ndarray, ranked: List[ConformerRecord]) -> None:
    """Each member's energies of the ranked conformers (one batched call per member), relative
    to its own energy of the lowest: their spread is what the ranking's uncertainty is."""
    if not job.is_ensemble or len(ranked) < 1:
        return
    members = export.eager_model(job.source, job.meta, job.path).double()
    z, x, mol, c = _batch(numbers, np.stack([r.positions for r in ranked]), torch.device("cpu"))
    with torch.no_grad():
        e = torch.stack([members.member(k)(z, x, mol, c)[keys.ENERGY][:, job.index] for k in range(members.n_members)])
    relative = (e - e[:, :1]) / KCAL_MOL_EV  # (K, C), the lowest is ranked first
    for rec, spread in zip(ranked, relative.std(dim=0, unbiased=False).tolist()):
        rec.relative_spread_kcal_mol = float(spread)


def _batch(numbers: np.ndarray, positions: np.ndarray, device: torch.device):
    """Conformers (k, N, 3) of one molecule as one batched model input: numbers, positions
    (float64), molecule index, k."""
    k, n = len(positions), len(numbers)
    z = torch.as_tensor(np.tile(numbers, k), dtype=torch.long, device=device)
    x = torch.as_tensor(positions.reshape(-1, 3), dtype=torch.float64, device=device)
    return z, x, torch.arange(k, device=device).repeat_interleave(n), k


def _output_molecule(mol: Any, records: List[ConformerRecord]) -> Any:
    """A copy of ``mol`` whose conformers hold the optimised geometries."""
    out = rdkit_chem().Mol(mol)
    conf_ids = [c.GetId() for c in mol.GetConformers()]
    for rec in records:
        conf = out.GetConformer(conf_ids[rec.id])
        for j, p in enumerate(rec.positions):
            conf.SetAtomPosition(j, p.tolist())
    return out
