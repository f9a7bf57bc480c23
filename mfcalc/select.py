"""Query by committee: choose the candidate structures whose labels a model needs most.

ANI-1x was built this way: an ensemble is trained, candidates are scored by how much its
members disagree, the most disputed are labelled, and the ensemble is retrained.  Scores:

* ``spread`` (default): the member standard deviation of the energy at one head, divided by
  sqrt(N_atoms) (ANI-1x's rho, so large molecules are not favoured merely for their size);
* ``force-spread``: the mean over atoms of the norm of the member spread of the forces;
* ``heads:A,B``: disagreement between two heads after removing their mean offset, i.e. the
  residual of E_A - E_B after a least-squares fit on element counts, over sqrt(N_atoms).
  Where two levels disagree beyond what an element-wise shift explains, the expensive
  label teaches the most;
* ``energy:LEVEL``: the candidate's stored LEVEL energy above the lowest of its molecule
  (:func:`energy_above_lowest`), so the tops of torsion scans come first.  For a stratum whose
  barriers every member misses alike (the amide twist: all heads 7-10 kcal/mol where
  GFN2-xTB and wB97X give 18-28), a bias no spread can show; the committee still reports.

The selection is greedy by score with diversity: no near-duplicate of a structure already
picked (same molecule and atom order, every interatomic distance within ``min_distance_change``)
and at most ``per_molecule`` structures per molecule.  Ties are broken by a seeded shuffle.

The picks are returned (and written) in labelling order: every molecule's best pick, then
every molecule's second best, and so on, by score within each pass.  Labelling is hours to
days and may stop anywhere; sorted by score alone, the first 600 of 2,000 wB97X picks of the
campaign covered 15 molecules and no fluorine, so a model trained on them borrowed F's
reference and was off by 226 kcal/mol on difluorobenzene.  Any prefix of this order is
itself a diverse selection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.data.dataset import iterate_batches, read_structures, species_counts
from mfcalc.data.fidelity import head_index
from mfcalc.data.records import MFData, unnamed
from mfcalc.device import resolve_device
from mfcalc.elements import symbols
from mfcalc.progress import ProgressLines, stderr_line

QUANTILES = (0.5, 0.9, 0.99, 1.0)


@dataclass
class Scores:
    """Per candidate (S,): the ranking score and the committee's spreads (eV, eV/Angstrom);
    ``usable`` is False where the model cannot score the structure (unknown element)."""

    score: np.ndarray
    energy_spread: np.ndarray
    force_spread: np.ndarray
    usable: np.ndarray


def committee_scores(
    model_path: str,
    data: MFData,
    by: str = "spread",
    fidelity: Optional[str] = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: Optional[Callable[[str], None]] = None,
) -> Scores:
    """Score every structure of ``data`` with the ensemble in ``model_path``; ``progress``
    receives a line every few seconds (tens of thousands of candidates take minutes).

    Raises:
        ValueError: unknown criterion or head, or a spread asked of a single model.
    """
    dev = resolve_device(device)
    model, meta = export.load(model_path, device=dev)
    model = model.to(torch.float64)
    heads = list(meta[keys.META_FIDELITIES])
    head = head_index(heads, fidelity or meta.get(keys.META_DEFAULT_FIDELITY) or heads[-1])
    pair: Optional[List[int]] = None
    if by.startswith("heads:"):
        names = [t.strip() for t in by[len("heads:") :].split(",")]
        if len(names) != 2:
            raise ValueError(f"--by {by!r} must name two heads, e.g. heads:cc,dft")
        pair = [head_index(heads, n) for n in names]
    elif by not in ("spread", "force-spread"):
        raise ValueError(f"unknown selection criterion {by!r}; use spread, force-spread or heads:A,B")
    elif int(meta.get(keys.META_ENSEMBLE_SIZE, 1)) < 2:
        raise ValueError(f"--by {by} needs an ensemble (train with --ensemble K, K >= 2); {model_path} has one member")

    n = len(data)
    usable = np.ones(n, dtype=bool)
    known = set(meta[keys.META_SPECIES])
    owner = np.repeat(np.arange(n), data.n_atoms)
    unknown_atoms = ~np.isin(np.asarray(data.numbers), list(known))
    usable[np.unique(owner[unknown_atoms])] = False
    e_spread, f_spread, gap = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    rows = np.nonzero(usable)[0]
    lines = ProgressLines(progress or stderr_line, interval=10.0)
    done = 0
    for batch in iterate_batches(data, rows, batch_size, dtype=torch.float64):
        b = batch.to(dev)
        idx = batch.index.numpy()
        out = model.compute(b.numbers, b.positions, b.mol_index, b.n_mol, head, forces_spread=True)
        e_spread[idx] = out[keys.ENERGY_STD].detach().cpu().numpy()
        per_atom = out[keys.FORCES_STD].detach().norm(dim=1)
        f_spread[idx] = torch.zeros(b.n_mol, dtype=per_atom.dtype).index_add(
            0, b.mol_index, per_atom
        ).numpy() / np.bincount(b.mol_index.numpy(), minlength=b.n_mol)
        if pair is not None:
            with torch.no_grad():
                energy = model(b.numbers, b.positions, b.mol_index, b.n_mol)[keys.ENERGY]
            gap[idx] = (energy[:, pair[0]] - energy[:, pair[1]]).cpu().numpy()
        done += len(idx)
        lines(f"{done}/{len(rows)} candidates scored by {by}", force=done == len(rows))
    sqrt_n = np.sqrt(data.n_atoms.astype(np.float64))
    if pair is not None:
        counts = species_counts(data, sorted(known), rows)
        coef, *_ = np.linalg.lstsq(counts, gap[rows], rcond=None)
        score = np.full(n, np.nan)
        score[rows] = np.abs(gap[rows] - counts @ coef) / sqrt_n[rows]
    elif by == "force-spread":
        score = f_spread
    else:
        score = e_spread / sqrt_n
    return Scores(score=score, energy_spread=e_spread, force_spread=f_spread, usable=usable)


def choose(
    scores: np.ndarray,
    data: MFData,
    n: int,
    per_molecule: Optional[int] = None,
    min_distance_change: float = 0.1,
    group: str = "smiles",
    seed: int = 0,
    fill_to: Optional[int] = None,
    labelled: Optional[Dict[str, int]] = None,
) -> np.ndarray:
    """Indices of up to ``n`` structures, highest score first, diverse (see the module docstring).

    ``fill_to`` K caps each molecule at K structures *in all*, counting the ``labelled`` ones it
    has already (:func:`labelled_per_molecule`): a coverage round, which gives every molecule
    that the earlier rounds' committees passed over at least K labels and leaves those
    that have K alone.
    """
    if fill_to is not None and fill_to < 1:
        raise ValueError(f"--fill-to wants K >= 1, got {fill_to}")
    labelled = labelled or {}
    if n < 0:
        raise ValueError(f"--n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(len(scores))
    valid = shuffle[np.isfinite(scores[shuffle])]
    order = valid[np.argsort(-scores[valid], kind="stable")]
    molecule = molecule_labels(data, group)
    picked: List[int] = []
    per: Dict[str, List[np.ndarray]] = {}  # distance matrices of the structures picked per molecule
    for i in order:
        if len(picked) >= n:
            break
        mine = per.setdefault(str(molecule[i]), [])
        if per_molecule is not None and len(mine) >= per_molecule:
            continue
        if fill_to is not None and len(mine) + labelled.get(str(molecule[i]), 0) >= fill_to:
            continue
        d_i = _distances(data, int(i))
        if any(d.shape == d_i.shape and np.abs(d - d_i).max() < min_distance_change for d in mine):
            continue
        mine.append(d_i)
        picked.append(int(i))
    return labelling_order(np.array(picked, dtype=np.int64), molecule)


def labelling_order(picked: np.ndarray, molecule: np.ndarray) -> np.ndarray:
    """``picked`` (best score first) reordered into passes over the molecules: pass k holds
    every molecule's k-th best pick, in score order (see the module docstring)."""
    rank = np.empty(len(picked), dtype=np.int64)  # how many picks of the same molecule come before
    count: Dict[str, int] = {}
    for j, name in enumerate(molecule[picked]):
        rank[j] = count.get(str(name), 0)
        count[str(name)] = int(rank[j]) + 1
    return picked[np.lexsort((np.arange(len(picked)), rank))]


def molecule_labels(data: MFData, group: str = "smiles") -> np.ndarray:
    """Which molecule each structure is: its ``group`` label (SMILES), or its formula where
    that is missing or empty."""
    formula = data.group_labels("formula")
    if group not in data.groups:
        return formula
    labels = data.group_labels(group)
    return np.where(labels == "", formula, labels)


def labelled_geometries(store: str, level: str) -> Dict[str, str]:
    """``{geometry key: molecule}`` of the structures in the label file ``store`` (an HDF5 file
    of ``mfcalc-label``) that carry a ``level`` energy; the molecule is its SMILES, or formula."""
    from mfcalc.data.hdf5 import per_structure_values
    from mfcalc.data.identity import geometry_keys

    if not os.path.exists(store):
        raise FileNotFoundError(f"--skip-labelled: no label file {store}")
    energies = per_structure_values(store, f"{level}.energy")
    if energies is None:
        return {}
    stored = read_structures(store)[0]
    return {k: str(m) for k, m, e in zip(geometry_keys(stored), molecule_labels(stored), energies) if np.isfinite(e)}


def already_labelled(data: MFData, store: str, level: str) -> np.ndarray:
    """(S,) True where the candidate's geometry carries a ``level`` energy in the label store
    ``store``: such a candidate teaches nothing new."""
    from mfcalc.data.identity import geometry_keys

    done = labelled_geometries(store, level)
    return np.array([k in done for k in geometry_keys(data)], dtype=bool)


def labelled_per_molecule(geometries: Dict[str, str]) -> Dict[str, int]:
    """How many distinct labelled geometries (:func:`labelled_geometries`, several files merged)
    each molecule has: what a coverage round (``fill_to`` of :func:`choose`) counts as there already."""
    counts: Dict[str, int] = {}
    for molecule in geometries.values():
        counts[molecule] = counts.get(molecule, 0) + 1
    return counts


def relaxed_geometries(paths: Sequence[str], level: str, fmax: float) -> set:
    """Geometry keys of the structures of ``paths`` (those that are HDF5 label files with
    ``level`` forces) whose forces are all below ``fmax`` eV/Angstrom per component: minima and
    relaxed scan points, the conformational energetics that conformer ranking rests on.  A
    committee's largest spreads are mostly on hot, distorted structures; this stratum makes
    sure the expensive level also sees the structures users rank."""
    from mfcalc.data.dataset import HDF5_SUFFIXES
    from mfcalc.data.fidelity import parse_fidelity
    from mfcalc.data.hdf5 import list_keys, read_hdf5
    from mfcalc.data.identity import geometry_keys

    largest: Dict[str, float] = {}
    for path in paths:
        if not str(path).lower().endswith(HDF5_SUFFIXES) or f"{level}.forces" not in set(list_keys(path)):
            continue
        labelled = read_hdf5(path, [parse_fidelity(f"f={level}.energy,{level}.forces")])
        component = np.abs(np.nan_to_num(np.asarray(labelled.forces["f"]), nan=np.inf)).max(axis=1)
        owner = np.repeat(np.arange(len(labelled)), labelled.n_atoms)
        per_structure = np.zeros(len(labelled))
        np.maximum.at(per_structure, owner, component)
        for key, f in zip(geometry_keys(labelled), per_structure):
            largest[key] = min(f, largest.get(key, np.inf))
    if not largest:
        raise ValueError(f"--relaxed: no candidate file is an HDF5 label file with {level}.forces")
    return {k for k, f in largest.items() if f < fmax}


def energy_above_lowest(data: MFData, paths: Sequence[str], level: str) -> np.ndarray:
    """(S,) eV: each candidate's ``level`` energy, read from those of ``paths`` that are HDF5
    label files carrying it, above the lowest such energy of the same molecule; NaN where the
    candidate has none (never picked).  Within a torsion scan that puts the barrier top first.

    Raises:
        ValueError: no candidate file holds ``level`` energies.
    """
    from mfcalc.data.dataset import HDF5_SUFFIXES
    from mfcalc.data.fidelity import parse_fidelity
    from mfcalc.data.hdf5 import list_keys, read_hdf5
    from mfcalc.data.identity import geometry_keys

    stored: Dict[str, float] = {}
    for path in paths:
        if not str(path).lower().endswith(HDF5_SUFFIXES) or f"{level}.energy" not in set(list_keys(path)):
            continue
        labelled = read_hdf5(path, [parse_fidelity(f"f={level}.energy")])  # in eV, as the file's units say
        for key, e in zip(geometry_keys(labelled), labelled.energy[:, 0]):
            if np.isfinite(e):
                stored[key] = float(e)
    if not stored:
        raise ValueError(f"--by energy:{level}: no candidate file is an HDF5 label file with {level}.energy")
    energy = np.array([stored.get(k, np.nan) for k in geometry_keys(data)])
    molecule = molecule_labels(data)
    above = np.full(len(data), np.nan)
    for name in np.unique(molecule):
        mine = molecule == name
        if np.isfinite(energy[mine]).any():
            above[mine] = energy[mine] - np.nanmin(energy[mine])
    return above


def matching_substructure(data: MFData, smarts: str) -> np.ndarray:
    """(S,) True where the candidate's molecule (its SMILES) contains the SMARTS pattern: a
    round aimed at a chemical motif that the benchmark or a user found weak (intramolecular
    hydrogen bonds, say), picked by the committee within it.  Candidates without a SMILES
    never match."""
    from mfcalc.chem import rdkit_chem

    Chem = rdkit_chem()
    pattern = Chem.MolFromSmarts(smarts)
    if pattern is None:
        raise ValueError(f"--smarts: RDKit cannot read the pattern {smarts!r}")
    if "smiles" not in data.groups:
        raise ValueError("--smarts: the candidates carry no SMILES (mfcalc-sample writes them)")
    codes, names = data.groups["smiles"]
    hits = np.zeros(len(names), dtype=bool)
    for k, name in enumerate(names):
        mol = None if unnamed(name) else Chem.MolFromSmiles(name)
        hits[k] = mol is not None and mol.HasSubstructMatch(pattern)
    return hits[np.asarray(codes)]


def _distances(data: MFData, i: int) -> np.ndarray:
    x = np.asarray(data.positions[data.offsets[i] : data.offsets[i + 1]])
    return np.linalg.norm(x[:, None] - x[None], axis=2)


def distribution(values: np.ndarray) -> Dict[str, float]:
    """Median, 90th and 99th percentile and maximum of the finite values (NaN when none)."""
    v = values[np.isfinite(values)]
    names = ("median", "p90", "p99", "max")
    if len(v) == 0:
        return {k: float("nan") for k in names}
    return {k: float(np.quantile(v, q)) for k, q in zip(names, QUANTILES)}


def read_candidates(paths: Sequence[str]) -> MFData:
    """Candidate geometries from any files mfcalc reads, concatenated."""
    from mfcalc.data.records import concatenate

    if not paths:
        raise ValueError("no candidate files given")
    return concatenate([read_structures(p)[0] for p in paths])


def write_selected(
    data: MFData, picked: np.ndarray, scores: Scores, out: str, numbers: Optional[np.ndarray] = None
) -> None:
    """The chosen structures as extxyz with their scores and where they came from (``numbers``:
    each structure's position in the candidate files, when ``data`` is a subset of them)."""
    import io

    import ase.io
    from ase import Atoms

    from mfcalc.files import atomic_write_text

    smiles = data.group_labels("smiles") if "smiles" in data.groups else None
    frames = []
    for i in picked:
        atoms = data.atom_index(np.array([i]))
        a = Atoms(numbers=np.asarray(data.numbers[atoms]), positions=np.asarray(data.positions[atoms]))
        a.info.update(
            {
                "candidate": int(i if numbers is None else numbers[i]),
                "score": float(scores.score[i]),
                "energy_spread_ev": float(scores.energy_spread[i]),
                "force_spread_ev_a": float(scores.force_spread[i]),
            }
        )
        if smiles is not None:
            a.info["smiles"] = str(smiles[i])
        frames.append(a)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    atomic_write_text(out, buf.getvalue())


def unscorable_message(data: MFData, scores: Scores, known: Sequence[int]) -> str:
    n_bad = int((~scores.usable).sum())
    if not n_bad:
        return ""
    bad = sorted(set(np.asarray(data.numbers).tolist()) - set(known))
    return f"{n_bad} candidate(s) contain element(s) {', '.join(symbols(bad))} the model does not know: not scored"


def report(scores: Scores, picked: np.ndarray, baseline: Optional[Scores] = None) -> Dict[str, Any]:
    """Distributions of the energy spread per sqrt(atom) and the force spread over all
    candidates and over the chosen ones (and the same for a baseline committee)."""
    out: Dict[str, Any] = {}
    for name, s in (("current", scores), ("baseline", baseline)):
        if s is None:
            continue
        out[name] = {
            subset: {
                "score": distribution(s.score[idx]),
                "energy_spread_ev": distribution(s.energy_spread[idx]),
                "force_spread_ev_a": distribution(s.force_spread[idx]),
            }
            for subset, idx in (("all", np.arange(len(s.score))), ("selected", picked))
        }
    return out


def format_report(doc: Dict[str, Any]) -> str:
    lines = [f"{'committee':<10} {'subset':<9} {'quantity':<18} {'median':>10} {'p90':>10} {'p99':>10} {'max':>10}"]
    for committee, subsets in doc.items():
        for subset, quantities in subsets.items():
            for quantity, q in quantities.items():
                lines.append(
                    f"{committee:<10} {subset:<9} {quantity:<18} "
                    + " ".join(f"{q[k]:10.4f}" for k in ("median", "p90", "p99", "max"))
                )
    return "\n".join(lines)
