"""Levels of theory mfcalc can label structures with, each verified against its own definition.

=============  ==========================================  ============================
name           method                                      engine
=============  ==========================================  ============================
gfn2_xtb       GFN2-xTB                                    tblite
wb97x_dz       wB97X/6-31G*, density fitting               PySCF (RKS/UKS)
ccsd(t)_dz     frozen-core CCSD(T)/cc-pVDZ                 PySCF (RHF/UHF -> CCSD -> (T))
=============  ==========================================  ============================

These are the levels of ``data/mf_reference.h5`` (ANI-1x's DFT level and ANI-1ccx's
coupled-cluster level without the CBS step), and they reproduce its energies.  Two settings
are tighter than the engines' defaults so that forces are exactly -dE/dx: GFN2-xTB's SCF
accuracy, and the grid response of the DFT gradient.  Every level returns energies in Hartree and
forces in Hartree/Angstrom, the units of that file, converted here once from each engine's
own units with the engine's own Bohr constant.  Forces are the analytic gradients; the
CCSD(T) gradient is taken *with* the (T) lambda amplitudes solved first: without them
PySCF silently uses the CCSD ones and the (T) part comes out wrong (data/README.md).
``tests/integration/test_label_levels.py`` checks every level against central finite
differences of its own energy and against the stored reference values.

A calculation that does not converge raises :class:`LabelError`; the caller records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional, Tuple

import numpy as np

Result = Tuple[float, Optional[np.ndarray]]  # (energy Ha, forces (N, 3) Ha/Angstrom or None)


class LabelError(RuntimeError):
    """A calculation that could not produce a trustworthy number (no convergence, bad input)."""


@dataclass(frozen=True)
class Level:
    """A named level of theory.

    Attributes:
        name: the key prefix in data files (``<name>.energy``, ``<name>.forces``).
        description: method and basis, for logs and data READMEs.
        elements: atomic numbers the engine and basis set can treat.
        forces_by_default: whether forces are computed unless told otherwise (cheap levels).
        extra: the Python packages it needs (the ``label`` extra).
    """

    name: str
    description: str
    elements: FrozenSet[int]
    forces_by_default: bool
    compute: Callable[[np.ndarray, np.ndarray, int, int, bool], Result]
    extra: str


# ---- GFN2-xTB (tblite) -------------------------------------------------------------------------
def _gfn2_xtb(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int, forces: bool) -> Result:
    from ase.units import Bohr  # tblite's ASE interface uses the same constant
    from tblite.interface import Calculator

    try:
        calc = Calculator(
            "GFN2-xTB",
            np.asarray(numbers),
            np.asarray(positions) / Bohr,
            charge=float(charge),
            uhf=int(multiplicity) - 1,
        )
        calc.set("verbosity", 0)
        # 100x tighter SCF than tblite's default: forces then match finite differences of the
        # energy to 1e-7 Hartree/Angstrom instead of 1.5e-6 (energies move by ~1e-8 Hartree)
        calc.set("accuracy", 0.01)
        res = calc.singlepoint()
    except Exception as exc:  # tblite raises its own RuntimeError subclasses for SCF failures
        raise LabelError(f"GFN2-xTB failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
    energy = float(res.get("energy"))
    return energy, (-np.asarray(res.get("gradient")) / Bohr if forces else None)


# ---- PySCF ---------------------------------------------------------------------------------------
def _mole(numbers: np.ndarray, positions: np.ndarray, basis: str, charge: int, multiplicity: int):
    from pyscf import gto

    try:
        return gto.M(
            atom=[(int(z), tuple(map(float, p))) for z, p in zip(numbers, positions)],
            basis=basis,
            unit="Angstrom",
            charge=int(charge),
            spin=int(multiplicity) - 1,
            verbose=0,
        )
    except RuntimeError as exc:  # e.g. electron count and spin inconsistent
        raise LabelError(f"PySCF cannot build the molecule: {exc}") from None


def _bohr() -> float:
    from pyscf.lib.parameters import BOHR

    return float(BOHR)


def _wb97x(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int, forces: bool) -> Result:
    from pyscf import dft

    mol = _mole(numbers, positions, "6-31g*", charge, multiplicity)
    mf = (dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)).density_fit()
    mf.xc = "wb97x"
    mf.max_cycle = 100
    energy = mf.kernel()
    if not mf.converged:
        mf = mf.newton()  # second-order SCF rescues most stubborn cases
        energy = mf.kernel()
        if not mf.converged:
            raise LabelError("wB97X SCF did not converge (also not with second-order SCF)")
    if not forces:
        return float(energy), None
    gradients = mf.nuc_grad_method()
    # the integration grid moves with the atoms: without its response the analytic forces
    # miss ~7e-6 Hartree/Angstrom of -dE/dx (checked by finite differences)
    gradients.grid_response = True
    grad = gradients.kernel()  # Hartree/Bohr
    return float(energy), -np.asarray(grad) / _bohr()


def _ccsd_t(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int, forces: bool) -> Result:
    from pyscf import cc, scf

    mol = _mole(numbers, positions, "cc-pvdz", charge, multiplicity)
    mf = scf.RHF(mol) if mol.spin == 0 else scf.UHF(mol)
    mf.max_cycle = 100
    mf.kernel()
    if not mf.converged:
        mf = mf.newton()
        mf.kernel()
        if not mf.converged:
            raise LabelError("Hartree-Fock reference for CCSD(T) did not converge")
    mycc = cc.CCSD(mf).set_frozen()
    mycc.max_cycle = 100
    mycc.kernel()
    if not mycc.converged:
        raise LabelError("CCSD amplitudes did not converge")
    e_t = mycc.ccsd_t()
    energy = float(mycc.e_tot + e_t)
    if not forces:
        return energy, None
    if mol.spin != 0:
        raise LabelError("CCSD(T) forces are implemented for closed-shell molecules only")
    from pyscf.cc import ccsd_t_lambda
    from pyscf.grad import ccsd_t as ccsd_t_grad

    eris = mycc.ao2mo()
    conv, l1, l2 = ccsd_t_lambda.kernel(mycc, eris, mycc.t1, mycc.t2, verbose=0)  # the (T) lambdas
    if not conv:
        raise LabelError("CCSD(T) lambda equations did not converge")
    grad = ccsd_t_grad.Gradients(mycc).kernel(t1=mycc.t1, t2=mycc.t2, l1=l1, l2=l2, eris=eris)
    return energy, -np.asarray(grad) / _bohr()


_TBLITE = frozenset(range(1, 87))  # GFN2-xTB is parametrised for H-Rn
# basis sets as PySCF ships them (checked with pyscf.gto.basis.load, PySCF 2.14)
_631GS = frozenset(range(1, 37))  # 6-31G*: H-Kr
_CCPVDZ = frozenset(list(range(1, 19)) + list(range(20, 37)))  # cc-pVDZ: H-Ar, Ca-Kr (no K)

LEVELS: Dict[str, Level] = {
    "gfn2_xtb": Level("gfn2_xtb", "GFN2-xTB (tblite)", _TBLITE, True, _gfn2_xtb, "tblite"),
    "wb97x_dz": Level("wb97x_dz", "wB97X/6-31G*, density fitting (PySCF)", _631GS, True, _wb97x, "pyscf"),
    "ccsd(t)_dz": Level("ccsd(t)_dz", "frozen-core CCSD(T)/cc-pVDZ (PySCF)", _CCPVDZ, False, _ccsd_t, "pyscf"),
}


def get_level(name: str) -> Level:
    """The level called ``name``; a clear error lists the known ones."""
    if name not in LEVELS:
        raise ValueError(f"unknown level of theory {name!r}; known: {', '.join(LEVELS)}")
    return LEVELS[name]


def check_available(level: Level) -> None:
    """Raise if the level's engine is not installed, naming the extra that provides it."""
    import importlib.util

    if importlib.util.find_spec(level.extra) is None:
        raise ValueError(f"level {level.name} needs {level.extra}: pip install 'mfcalc[label]'")
