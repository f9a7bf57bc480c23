"""Candidate structures around a molecule: minima, torsion scans, normal-mode samples, MD snapshots.

* **Minima**: ETKDG conformers optimised together (batched L-BFGS) with the engine; those that
  kept their bonds are deduplicated, stationary points with negative curvature (saddles such as
  an eclipsed rotor, by the finite-difference Hessian) are dropped, and every distinct minimum
  within an energy window is kept.
* **Torsion scans**: every rotatable bond (single, not in a ring, neither end terminal nor
  linear; methyl and hydroxyl rotors included) is turned in steps through 360 degrees from the
  lowest minimum.  *Relaxed* (default): at each step the dihedral is held (ASE ``FixInternals``),
  with those of every substituent of a three-connected end such as an amide nitrogen, so the
  whole group turns while everything else relaxes, and the scan crosses the barrier (for a
  conjugated nitrogen kept planar, somewhat above the pyramidal transition state); *rigid*:
  only the rotating group moves.
* **Normal modes** (ANI-1's sampling): at each minimum, the Hessian's modes i with force
  constants K_i are displaced by R_i = +-sqrt(3 c_i N_a k_B T / K_i), with random c_i >= 0
  whose sum is uniform in [0, 1], so the harmonic energy is at most 3/2 N_a k_B T.
* **MD**: Langevin dynamics at each temperature, a snapshot every ``interval_fs`` after
  ``equilibration_fs``.

Samples whose bonds changed (RDKit connect-the-dots) or with atoms closer than 0.6 Angstrom
are dropped: they would teach the model chemistry outside its purpose.  Everything is
reproducible from the random generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mfcalc.conformers.hessian import SADDLE_CURVATURE, hessians, internal_curvatures
from mfcalc.conformers.molecules import atomic_numbers, bond_graph, conformer_coordinates, distinct
from mfcalc.conformers.optimize import optimize
from mfcalc.sample.engines import Engine
from mfcalc.units import KCAL_MOL_EV

K_BOLTZMANN_EV = 8.617333262e-5  # eV/K
MIN_DISTANCE = 0.6  # Angstrom
SOFT_MODE = 0.1  # eV/A^2: softer modes are displaced as if this stiff (harmonic amplitudes diverge)
ENERGY_TOL, PRUNE_RMSD = 0.1, 0.3  # kcal/mol, Angstrom: the duplicate rule of the conformer search
SADDLE_KICK = 0.1  # Angstrom: largest atomic displacement along a saddle's negative mode


@dataclass
class Sample:
    positions: np.ndarray
    kind: str  # "minimum", "torsion", "normal_mode", "md"
    info: Dict[str, Any] = field(default_factory=dict)
    hessian: Optional[np.ndarray] = field(default=None, repr=False)  # (3N, 3N) eV/A^2, minima only


class Checker:
    """Keeps the bonds of a molecule and tells whether a geometry still has them."""

    def __init__(self, mol: Any, reference: np.ndarray):
        self.mol = mol
        self.graph = bond_graph(mol, reference)

    def ok(self, positions: np.ndarray) -> bool:
        d = np.linalg.norm(positions[:, None] - positions[None], axis=2) + np.eye(len(positions)) * 1e9
        return bool(d.min() > MIN_DISTANCE) and np.array_equal(bond_graph(self.mol, positions), self.graph)


def find_minima(
    mol: Any,
    engine: Engine,
    charge: int,
    window: float,
    say: Callable[[str], None],
    fmax: float = 0.01,
    max_steps: int = 1000,
    max_minima: Optional[int] = None,
) -> List[Sample]:
    """Distinct minima of ``mol``'s conformers within ``window`` kcal/mol of the lowest, lowest
    first; only the lowest ``max_minima`` when given (a floppy drug-sized molecule has dozens).

    Candidates are checked (one finite-difference Hessian each, the costly part) in order of
    energy, and the check stops at the first one above the window or past the cap.  A
    candidate at a saddle point (an optimiser can stop on a symmetric one, such as a planar
    carboxylic acid that is twisted at its minimum) is pushed along its negative mode and
    optimised once more, so that a molecule whose every conformer stopped there still gets
    its minima."""
    numbers = atomic_numbers(mol)
    coords = conformer_coordinates(mol)
    graph = bond_graph(mol, coords[0])
    evaluate = engine.evaluator(numbers, charge)

    def intact(start: np.ndarray) -> List[Tuple[float, np.ndarray]]:
        opt = optimize(evaluate, start, fmax=fmax, max_steps=max_steps)
        return [
            (float(opt["energy"][i]), opt["positions"][i])
            for i in range(len(start))
            if opt["converged"][i]
            and not opt["failed"][i]
            and np.array_equal(bond_graph(mol, start[i]), bond_graph(mol, opt["positions"][i]))
            and np.array_equal(bond_graph(mol, opt["positions"][i]), graph)
        ]

    candidates = intact(coords)
    if not candidates:
        say(f"  no conformer converged with its bonds intact ({len(coords)} tried)")
        return []
    found, saddles = _check_minima(mol, candidates, evaluate, window, max_minima)
    if saddles:
        kicked = np.array([p + SADDLE_KICK * m / np.linalg.norm(m, axis=1).max() for p, m in saddles])
        found += _check_minima(mol, intact(kicked), evaluate, window, max_minima)[0]
    if not found:
        say("  no converged conformer is a minimum")
        return []
    energies = [e for e, _, _ in found]
    unique = [
        found[i]
        for i, same in distinct(mol, [p for _, p, _ in found], energies, ENERGY_TOL, PRUNE_RMSD)
        if same is None
    ]
    lowest = unique[0][0]
    out = [
        Sample(p, "minimum", {"relative_kcal_mol": round((e - lowest) / KCAL_MOL_EV, 4)}, h)
        for e, p, h in unique
        if (e - lowest) / KCAL_MOL_EV <= window
    ]
    return out[:max_minima] if max_minima is not None else out


def _check_minima(
    mol: Any,
    candidates: List[Tuple[float, np.ndarray]],
    evaluate: Any,
    window: float,
    max_minima: Optional[int],
) -> Tuple[List[Tuple[float, np.ndarray, np.ndarray]], List[Tuple[np.ndarray, np.ndarray]]]:
    """The distinct candidates that are minima (energy, positions, Hessian), lowest first, up to
    the window and the cap; and the saddle points met on the way, with their negative modes."""
    energies = [e for e, _ in candidates]
    kept = [
        i for i, same in distinct(mol, [p for _, p in candidates], energies, ENERGY_TOL, PRUNE_RMSD) if same is None
    ]
    minima: List[Tuple[float, np.ndarray, np.ndarray]] = []
    saddles: List[Tuple[np.ndarray, np.ndarray]] = []
    for i in kept:  # lowest first
        energy, positions = candidates[i]
        if minima and (energy - minima[0][0]) / KCAL_MOL_EV > window:
            break
        if max_minima is not None and len(minima) >= max_minima:
            break
        hess = hessians(evaluate, positions[None])[0]
        values, vectors = internal_curvatures(hess, positions)
        if values.min() < SADDLE_CURVATURE:
            saddles.append((positions, vectors[:, 0].reshape(-1, 3)))
            continue
        minima.append((energy, positions, hess))
    return minima, saddles


def rotatable_torsions(mol: Any) -> List[Tuple[int, int, int, int]]:
    """One dihedral (a, b, c, d) per rotatable bond b-c; a and d are the heaviest neighbours."""
    from rdkit import Chem

    out = []
    for bond in mol.GetBonds():
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing():
            continue
        b, c = bond.GetBeginAtom(), bond.GetEndAtom()
        if b.GetDegree() < 2 or c.GetDegree() < 2:
            continue
        if any(x.GetBondType() == Chem.BondType.TRIPLE for atom in (b, c) for x in atom.GetBonds()):
            continue  # a bond to a linear group turns nothing
        a = max(
            (n for n in b.GetNeighbors() if n.GetIdx() != c.GetIdx()), key=lambda n: (n.GetAtomicNum(), -n.GetIdx())
        )
        d = max(
            (n for n in c.GetNeighbors() if n.GetIdx() != b.GetIdx()), key=lambda n: (n.GetAtomicNum(), -n.GetIdx())
        )
        out.append((a.GetIdx(), b.GetIdx(), c.GetIdx(), d.GetIdx()))
    return out


def _substituent_dihedrals(mol: Any, torsion: Tuple[int, int, int, int]) -> List[Tuple[int, int, int, int]]:
    """The other dihedrals across bond b-c that must turn with a-b-c-d: a-b-c-d_k and a_i-b-c-d
    for the substituents of a three-connected end (an amine or amide nitrogen, which can wag
    or invert); a four-connected end cannot undo the turn, and holding its substituents too
    over-determines the constraints (ASE's iteration then fails, e.g. for tert-butylamine)."""
    a, b, c, d = torsion

    def others(atom: int, skip: Tuple[int, int]) -> List[int]:
        neighbours = [n.GetIdx() for n in mol.GetAtomWithIdx(atom).GetNeighbors()]
        return [n for n in neighbours if n not in skip] if len(neighbours) == 3 else []

    return [(a, b, c, k) for k in others(c, (b, d))] + [(i, b, c, d) for i in others(b, (a, c))]


def _moving_side(mol: Any, b: int, c: int) -> np.ndarray:
    """Mask of the atoms on c's side of the bond b-c."""
    seen, stack = {c}, [c]
    while stack:
        for n in mol.GetAtomWithIdx(stack.pop()).GetNeighbors():
            if n.GetIdx() not in seen and n.GetIdx() != b:
                seen.add(n.GetIdx())
                stack.append(n.GetIdx())
    return np.isin(np.arange(mol.GetNumAtoms()), sorted(seen))


def torsion_scan(
    mol: Any,
    start: np.ndarray,
    torsion: Tuple[int, int, int, int],
    engine: Engine,
    charge: int,
    step: float = 30.0,
    relaxed: bool = True,
    fmax: float = 0.05,
    max_steps: int = 200,
) -> List[Sample]:
    """Geometries every ``step`` degrees around one torsion, starting from ``start``.

    A relaxed scan holds, besides a-b-c-d, the dihedrals of the other substituents of a
    three-connected end (a-b-c-d_k, a_i-b-c-d), each turned by the same angle, so the whole
    group turns.  Holding a-b-c-d alone lets a cheaply inverting atom undo the turn: an amide's
    NH2 wagged its other hydrogen back towards the plane for half of the scan (formamide's
    -90-degree point came out 12 kcal/mol up at GFN2-xTB with one half-turned NH2, 24 with the
    group turned; the pyramidal transition state lies between).  A point whose held dihedrals
    ASE cannot keep is left out; the next starts from its rotated, unrelaxed geometry."""
    from ase import Atoms
    from ase.constraints import FixInternals
    from ase.optimize import BFGS

    a, b, c, d = torsion
    atoms = Atoms(numbers=atomic_numbers(mol), positions=start)
    atoms.calc = engine.calculator(charge)
    mask = _moving_side(mol, b, c)
    phi0 = atoms.get_dihedral(a, b, c, d)
    held = [(a, b, c, d)] + _substituent_dihedrals(mol, torsion)
    held0 = [atoms.get_dihedral(*q) for q in held]
    checker = Checker(mol, start)
    samples = []
    for k in range(1, int(round(360.0 / step))):
        target = (phi0 + k * step) % 360.0
        atoms.set_dihedral(a, b, c, d, target, mask=mask)
        if relaxed:
            before = atoms.positions.copy()
            targets = [[(phi + k * step) % 360.0, list(q)] for phi, q in zip(held0, held)]
            atoms.set_constraint(FixInternals(dihedrals_deg=targets))
            try:
                BFGS(atoms, logfile=None).run(fmax=fmax, steps=max_steps)
            except ValueError:  # ASE could not keep every held dihedral (its iteration diverged): skip the point
                atoms.set_constraint()
                atoms.positions = before
                continue
            atoms.set_constraint()
        if checker.ok(atoms.positions):
            samples.append(
                Sample(
                    atoms.positions.copy(),
                    "torsion",
                    {
                        "torsion": f"{a}-{b}-{c}-{d}",
                        "angle": round(float(atoms.get_dihedral(a, b, c, d)), 2),
                        "relaxed": relaxed,
                    },
                )
            )
    return samples


def normal_mode_samples(
    mol: Any,
    minimum: np.ndarray,
    engine: Engine,
    charge: int,
    temperatures: Sequence[float],
    per_temperature: int,
    rng: np.random.Generator,
    max_tries: int = 5,
    hessian: Optional[np.ndarray] = None,
) -> List[Sample]:
    """ANI-1's normal-mode sampling around one minimum (see the module docstring)."""
    numbers = atomic_numbers(mol)
    hess = hessian if hessian is not None else hessians(engine.evaluator(numbers, charge), minimum[None])[0]
    values, vectors = internal_curvatures(hess, minimum)
    stiffness = np.maximum(values, SOFT_MODE)
    checker = Checker(mol, minimum)
    samples = []
    for temperature in temperatures:
        scale = 3.0 * len(numbers) * K_BOLTZMANN_EV * float(temperature)
        for _ in range(per_temperature):
            for _try in range(max_tries):
                c = rng.uniform(size=len(stiffness))
                c *= rng.uniform() / c.sum()
                amplitude = rng.choice([-1.0, 1.0], size=len(c)) * np.sqrt(scale * c / stiffness)
                positions = minimum + (vectors @ amplitude).reshape(-1, 3)
                if checker.ok(positions):
                    samples.append(Sample(positions, "normal_mode", {"temperature": float(temperature)}))
                    break
    return samples


def md_samples(
    mol: Any,
    start: np.ndarray,
    engine: Engine,
    charge: int,
    temperatures: Sequence[float],
    per_temperature: int,
    rng: np.random.Generator,
    timestep_fs: float = 0.5,
    interval_fs: float = 10.0,
    equilibration_fs: float = 100.0,
) -> List[Sample]:
    """Langevin snapshots at each temperature (ASE, friction 0.02 / ASE time unit)."""
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    checker = Checker(mol, start)
    samples = []
    for temperature in temperatures:
        atoms = Atoms(numbers=atomic_numbers(mol), positions=start)
        atoms.calc = engine.calculator(charge)
        thermalize_momenta(atoms, temperature_K=float(temperature), rng=rng)
        dyn = Langevin(
            atoms, timestep_fs * units.fs, temperature_K=float(temperature), friction=0.02, fixcm=False, rng=rng
        )
        dyn.run(int(round(equilibration_fs / timestep_fs)))
        for _ in range(per_temperature):
            dyn.run(int(round(interval_fs / timestep_fs)))
            if checker.ok(atoms.positions):
                samples.append(Sample(atoms.positions.copy(), "md", {"temperature": float(temperature)}))
    return samples
