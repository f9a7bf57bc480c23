"""OpenMM systems on an mfcalc fidelity head: pure ML, or an ML region inside a force field.

The interface follows openmm-ml's ``MLPotential`` so that an OpenMM script changes one
line::

    potential = MFPotential(fidelity="cc")               # instead of MLPotential("ani2x")
    system = potential.createSystem(topology)
    mixed = potential.createMixedSystem(topology, mm_system, ligand_atoms)

The model runs inside any integrator through ``openmm.PythonForce`` (OpenMM >= 8.4),
evaluated by :class:`mfcalc.potential.Potential`: the same checks, pair list with skin and
one ``compute`` call per step as :class:`mfcalc.MFCalculator`.  Units are OpenMM's at
this boundary (nm, kJ/mol, kJ/mol/nm) and converted once here; the model works in
Angstrom and eV.

In ``createMixedSystem`` the ML region replaces every classical term that lies wholly
inside it: bonds, angles and torsions whose atoms are all ML atoms are dropped, the
nonbonded interactions between two ML atoms become exclusions (zero), and constraints
between ML atoms are removed (``removeConstraints``).  Interactions between the ML region
and the rest (electrostatics, Lennard-Jones, bonded terms that cross the boundary) stay
classical: mechanical embedding, as in openmm-ml.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from mfcalc.elements import check_elements
from mfcalc.potential import ModelLike, Potential
from mfcalc.units import KJ_MOL_EV

try:
    import openmm
    from openmm import unit as mm_unit
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("mfcalc.openmm needs OpenMM >= 8.4: pip install 'mfcalc[openmm]'") from exc

if not hasattr(openmm, "PythonForce"):  # pragma: no cover
    raise ImportError(f"mfcalc.openmm needs openmm.PythonForce (OpenMM >= 8.4); this is OpenMM {openmm.__version__}")

EV_TO_KJ_MOL = 1.0 / KJ_MOL_EV
NM_TO_ANGSTROM = 10.0
FORCES_TO_OPENMM = EV_TO_KJ_MOL * NM_TO_ANGSTROM  # eV/A -> kJ/mol/nm

# classical terms that the ML region replaces when all their particles are ML atoms
_BONDED = {
    "HarmonicBondForce": ("getNumBonds", "getBondParameters", "addBond", 2),
    "HarmonicAngleForce": ("getNumAngles", "getAngleParameters", "addAngle", 3),
    "PeriodicTorsionForce": ("getNumTorsions", "getTorsionParameters", "addTorsion", 4),
    "RBTorsionForce": ("getNumTorsions", "getTorsionParameters", "addTorsion", 4),
    "CustomBondForce": ("getNumBonds", "getBondParameters", "addBond", 2),
    "CustomAngleForce": ("getNumAngles", "getAngleParameters", "addAngle", 3),
    "CustomTorsionForce": ("getNumTorsions", "getTorsionParameters", "addTorsion", 4),
}


class _Evaluate:
    """The PythonForce callback: OpenMM State in, (kJ/mol, kJ/mol/nm) out."""

    def __init__(self, potential: Potential, numbers: np.ndarray, periodic: bool):
        self.potential, self.numbers, self.periodic = potential, numbers, periodic
        self.pbc = np.full(3, periodic)
        self.warned = False

    def __call__(self, state):
        x = state.getPositions(asNumpy=True).value_in_unit(mm_unit.nanometer) * NM_TO_ANGSTROM
        cell = None
        if self.periodic:
            cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(mm_unit.nanometer) * NM_TO_ANGSTROM
        out = self.potential.evaluate(self.numbers, np.asarray(x), None if cell is None else np.asarray(cell), self.pbc)
        if not self.warned:
            text = self.potential.outside_domain(out)
            if text:
                warnings.warn(text + " (said once per force)", stacklevel=2)
                self.warned = True
        return out["energy"] * EV_TO_KJ_MOL, out["forces"] * FORCES_TO_OPENMM


class MFPotential:
    """Factory of OpenMM Systems that use an mfcalc model's fidelity head.

    Args:
        model: path of a ``model.pt``, a loaded model, or ``None`` for the shipped default.
        fidelity: the head to use (``"cc"`` by default); an unknown name lists the known ones.
        device: ``"auto"`` runs on CUDA when a GPU is present (whatever OpenMM platform
            integrates), ``"cpu"`` or ``"cuda"`` to choose.
        dtype: ``None`` keeps the model's dtype; ``"float64"`` for energy-conserving NVE.
        skin: Angstrom added to the cutoff for the pair list reused across steps.
        neighbor_backend: ``"auto"``, ``"torch"`` or ``"cluster"``.
        compile: compile the network with ``torch.compile`` (faster steps for long runs after
            a one-off compilation of about a minute; :class:`mfcalc.potential.Potential`).
    """

    def __init__(
        self,
        model: ModelLike = None,
        fidelity: Optional[str] = "cc",
        device: str = "auto",
        dtype: Optional[str] = None,
        skin: float = 0.5,
        neighbor_backend: str = "auto",
        compile: bool = False,
    ):
        # loaded now: a bad model file or fidelity fails here, not at the first step
        self.potential = Potential(model, fidelity, device, dtype, skin, neighbor_backend, compile=compile)

    @property
    def fidelities(self) -> Sequence[str]:
        return self.potential.fidelities

    # ---- the two openmm-ml entry points -------------------------------------------------------
    def createSystem(self, topology, removeCMMotion: bool = True, forceGroup: int = 0) -> openmm.System:
        """A System whose only interaction is the model, over every atom of ``topology``
        (periodic when the topology has box vectors)."""
        system = openmm.System()
        box = topology.getPeriodicBoxVectors()
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        for atom in topology.atoms():
            system.addParticle(0.0 if atom.element is None else atom.element.mass)
        self.addForces(topology, system, None, forceGroup, periodic=box is not None)
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system

    def createMixedSystem(
        self,
        topology,
        system: openmm.System,
        atoms: Iterable[int],
        removeConstraints: bool = True,
        forceGroup: int = 0,
    ) -> openmm.System:
        """A copy of the classical ``system`` in which the model replaces every interaction
        among ``atoms`` (indices into ``topology``); ML-MM interactions stay classical."""
        ml = self._check_atoms(topology, atoms, system.getNumParticles())
        inside = np.zeros(system.getNumParticles(), dtype=bool)
        inside[ml] = True
        new = copy.deepcopy(system)
        for k in reversed(range(new.getNumForces())):
            force = new.getForce(k)
            name = type(force).__name__
            if name in _BONDED:
                replacement = _without_terms_inside(force, inside)
                new.removeForce(k)
                new.addForce(replacement)
            elif name == "NonbondedForce":
                for i, j in itertools.combinations(ml.tolist(), 2):
                    force.addException(i, j, 0.0, 1.0, 0.0, True)
            elif name == "CustomNonbondedForce":
                have = {tuple(sorted(force.getExclusionParticles(e))) for e in range(force.getNumExclusions())}
                for i, j in itertools.combinations(ml.tolist(), 2):
                    if (i, j) not in have:
                        force.addExclusion(i, j)
            elif name == "CMAPTorsionForce" and _cmap_inside(force, inside):
                raise ValueError("CMAP torsions inside the ML region are not supported; leave those atoms classical")
        if removeConstraints:
            for k in reversed(range(new.getNumConstraints())):
                i, j, _ = new.getConstraintParameters(k)
                if inside[i] and inside[j]:
                    new.removeConstraint(k)
        self.addForces(topology, new, ml, forceGroup)
        return new

    def addForces(
        self,
        topology,
        system: openmm.System,
        atoms: Optional[Iterable[int]] = None,
        forceGroup: int = 0,
        periodic: Optional[bool] = None,
    ):
        """Add the model's force over ``atoms`` (all atoms when ``None``) to ``system``;
        periodic when ``periodic`` says so, else when the system's other forces are."""
        n = topology.getNumAtoms()
        ml = np.arange(n) if atoms is None else self._check_atoms(topology, atoms, system.getNumParticles())
        all_atoms = list(topology.atoms())
        if any(all_atoms[i].element is None for i in ml):
            raise ValueError("the ML atoms include particles without an element (virtual sites?); leave them out")
        numbers = np.array([all_atoms[i].element.atomic_number for i in ml], dtype=np.int64)
        check_elements(numbers, self.potential.species, "this mfcalc model")
        if periodic is None:
            periodic = system.usesPeriodicBoundaryConditions()
        potential = self.potential.fresh()  # one per force: its own pair list and cached tensors
        force = openmm.PythonForce(_Evaluate(potential, numbers, periodic))
        if atoms is not None:
            force.setParticles([int(i) for i in ml])
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setForceGroup(forceGroup)
        force.setName(f"mfcalc {potential.fidelity}")
        system.addForce(force)
        return force

    @staticmethod
    def _check_atoms(topology, atoms: Iterable[int], n_particles: int) -> np.ndarray:
        ml = np.asarray(list(atoms), dtype=np.int64)
        if ml.size == 0:
            raise ValueError("the ML region is empty: pass the indices of the atoms the model should describe")
        n = topology.getNumAtoms()
        if n != n_particles:
            raise ValueError(f"the topology has {n} atoms but the system {n_particles} particles")
        bad = ml[(ml < 0) | (ml >= n)]
        if bad.size:
            raise ValueError(f"ML atom indices {sorted(set(bad.tolist()))[:10]} out of range for {n} atoms")
        if len(np.unique(ml)) != len(ml):
            raise ValueError("the ML atom indices contain duplicates")
        return np.sort(ml)


def _without_terms_inside(force: Any, inside: np.ndarray):
    """A new force of the same kind and settings without the terms whose particles are all
    inside the ML region (OpenMM forces cannot remove a term, so the rest are copied)."""
    name = type(force).__name__
    count, get, add, n_atoms = _BONDED[name]
    if name.startswith("Custom"):
        new = type(force)(force.getEnergyFunction())
        per = {2: "Bond", 3: "Angle", 4: "Torsion"}[n_atoms]
        for p in range(getattr(force, f"getNumPer{per}Parameters")()):
            getattr(new, f"addPer{per}Parameter")(getattr(force, f"getPer{per}ParameterName")(p))
        for p in range(force.getNumGlobalParameters()):
            new.addGlobalParameter(force.getGlobalParameterName(p), force.getGlobalParameterDefaultValue(p))
    else:
        new = type(force)()
    new.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    new.setName(force.getName())
    new.setForceGroup(force.getForceGroup())
    for k in range(getattr(force, count)()):
        term = getattr(force, get)(k)  # particles, then parameters (a tuple for custom forces)
        if not inside[[int(i) for i in term[:n_atoms]]].all():
            getattr(new, add)(*term)
    return new


def _cmap_inside(force: Any, inside: np.ndarray) -> bool:
    for k in range(force.getNumTorsions()):
        p = force.getTorsionParameters(k)[1:]
        if inside[list(p)].all():
            return True
    return False


def ml_atoms_of_residues(topology, names: Sequence[str]) -> List[int]:
    """Indices of the atoms of every residue named in ``names`` (e.g. a ligand's ``"LIG"``)."""
    wanted = set(names)
    return [a.index for a in topology.atoms() if a.residue.name in wanted]
