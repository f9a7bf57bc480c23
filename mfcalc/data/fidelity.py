"""Binding of fidelity names to the keys (and units) that hold their labels in data files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from mfcalc import units

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class FidelitySpec:
    """Names only: which keys of a file hold one fidelity's energies and forces.

    Args:
        name: fidelity name used by the model and the calculator, e.g. ``"cc"``.
        energy_key: key of the per-structure energies, e.g. ``"ccsd(t)_dz.energy"``.
        forces_key: key of the per-atom forces, or ``None`` when the fidelity has none.
        energy_unit: unit of the energies in the file; ``None`` takes the reader's
            format default (Hartree for HDF5, eV for ASE files).
        forces_unit: unit of the forces, ``"<energy>/<length>"``; ``None`` means
            ``energy_unit + "/angstrom"`` (the ANI-1x convention).
    """

    name: str
    energy_key: str
    forces_key: Optional[str] = None
    energy_unit: Optional[str] = None
    forces_unit: Optional[str] = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"fidelity name {self.name!r} must be a word (letters, digits, '_' or '-')")
        if not self.energy_key:
            raise ValueError(f"fidelity {self.name!r} needs an energy key")
        if self.energy_unit is not None:
            units.energy_factor(self.energy_unit)
        if self.forces_unit is not None:
            units.forces_factor(self.forces_unit)

    def energy_to_ev(self, default_unit: str) -> float:
        return units.energy_factor(self.energy_unit or default_unit)

    def forces_to_ev_per_angstrom(self, default_unit: str) -> float:
        unit = self.forces_unit or f"{self.energy_unit or default_unit}/angstrom"
        return units.forces_factor(unit)


def parse_fidelity(text: str, energy_unit: Optional[str] = None, forces_unit: Optional[str] = None) -> FidelitySpec:
    """Parse the command-line form ``NAME=ENERGY_KEY[,FORCES_KEY]``.

    Example: ``parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces")``.
    """
    name, sep, keys = text.partition("=")
    if not sep or not name.strip() or not keys.strip():
        raise ValueError(f"fidelity binding {text!r} must look like NAME=ENERGY_KEY[,FORCES_KEY]")
    parts = [p.strip() for p in keys.split(",")]
    if len(parts) > 2 or not parts[0]:
        raise ValueError(f"fidelity binding {text!r} must look like NAME=ENERGY_KEY[,FORCES_KEY]")
    forces_key = parts[1] if len(parts) == 2 and parts[1] else None
    return FidelitySpec(name.strip(), parts[0], forces_key, energy_unit, forces_unit)


def check_unique(specs: list[FidelitySpec] | tuple[FidelitySpec, ...], allow_none: bool = False) -> None:
    """Raise if two specs share a name, or none is given (unless ``allow_none``: geometries only)."""
    if not specs and not allow_none:
        raise ValueError("at least one fidelity binding is needed")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"fidelity names bound more than once: {dup}")


def head_index(heads: List[str], name: str) -> int:
    """Position of fidelity ``name`` among a model's heads; raises naming the known ones.

    The one name -> head lookup: the exported (TorchScript) model, the calculator, the
    conformer search and evaluation all use it, so every caller gets the same message.
    """
    for k, head in enumerate(heads):
        if head == name:
            return k
    raise ValueError("unknown fidelity '" + name + "'; this model has: " + ", ".join(heads))
