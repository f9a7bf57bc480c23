"""What moves sampled geometries: GFN2-xTB (tblite) or an mfcalc model, behind one interface.

An :class:`Engine` gives a batched evaluator (for optimising many conformers and for
finite-difference Hessians, in eV and Angstrom) and fresh ASE calculators (for molecular
dynamics and constrained torsion scans).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from mfcalc.conformers.optimize import Evaluator
from mfcalc.units import HARTREE_EV


@dataclass
class Engine:
    """Energies and forces for sampling.

    Attributes:
        name: ``gfn2_xtb`` or ``model:<file>@<fidelity>``, recorded with every sample.
        evaluator: ``evaluator(numbers, charge)`` -> positions (k, N, 3) -> energies (k,) eV,
            forces (k, N, 3) eV/Angstrom, spreads (k,) eV.
        calculator: ``calculator(charge)`` -> a fresh ASE calculator.
    """

    name: str
    evaluator: Callable[[np.ndarray, int], Evaluator]
    calculator: Callable[[int], Any]


def xtb_engine() -> Engine:
    """GFN2-xTB through tblite (the ``label`` extra)."""
    from ase.units import Bohr

    def evaluator(numbers: np.ndarray, charge: int) -> Evaluator:
        from tblite.interface import Calculator

        def evaluate(positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
            k = len(positions)
            energy, forces = np.full(k, np.nan), np.full(positions.shape, np.nan)
            for i in range(k):
                try:
                    calc = Calculator("GFN2-xTB", np.asarray(numbers), positions[i] / Bohr, charge=float(charge))
                    calc.set("verbosity", 0)
                    res = calc.singlepoint()
                except Exception:  # no SCF convergence: the optimiser reports the conformer as failed
                    continue
                energy[i] = float(res.get("energy")) * HARTREE_EV
                forces[i] = -np.asarray(res.get("gradient")) * HARTREE_EV / Bohr
            return energy, forces, np.zeros(k)

        return evaluate

    def calculator(charge: int) -> Any:
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", charge=charge, verbosity=0)

    return Engine("gfn2_xtb", evaluator, calculator)


def model_engine(path: str, fidelity: Optional[str] = None, device: str = "cpu") -> Engine:
    """An mfcalc model file (e.g. for sampling with a model trained in an earlier round)."""
    import torch

    from mfcalc import export, keys
    from mfcalc.calculator import MFCalculator
    from mfcalc.conformers.optimize import model_evaluator
    from mfcalc.data.fidelity import head_index
    from mfcalc.device import resolve_device

    dev = resolve_device(device)
    net, meta = export.load(path, device=dev)
    name = fidelity or meta.get(keys.META_DEFAULT_FIDELITY) or meta[keys.META_FIDELITIES][-1]
    index = head_index(list(meta[keys.META_FIDELITIES]), name)
    frozen = export.freeze(net.to(torch.float64))

    def evaluator(numbers: np.ndarray, charge: int) -> Evaluator:
        if charge:
            raise ValueError("mfcalc models describe neutral molecules; sample charged ones with GFN2-xTB")
        return model_evaluator(frozen, numbers, index, dev)

    def calculator(charge: int) -> Any:
        return MFCalculator(path, fidelity=name, device=str(dev), dtype="float64")

    return Engine(f"model:{path}@{name}", evaluator, calculator)
