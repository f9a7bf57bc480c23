"""Unit factors, in one place.

mfcalc works in eV and Angstrom everywhere past the file readers.  Readers call
:func:`energy_factor` / :func:`forces_factor` once, with the unit the user declared for
each key; nothing downstream converts or guesses a unit.
"""

from __future__ import annotations

import ase.units

HARTREE_EV: float = float(ase.units.Hartree)  # 27.211386... eV
BOHR_ANGSTROM: float = float(ase.units.Bohr)  # 0.529177... Angstrom
KCAL_MOL_EV: float = float(ase.units.kcal / ase.units.mol)  # 0.0433641... eV
KJ_MOL_EV: float = float(ase.units.kJ / ase.units.mol)

ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "hartree": HARTREE_EV,
    "ha": HARTREE_EV,
    "kcal/mol": KCAL_MOL_EV,
    "kj/mol": KJ_MOL_EV,
    "mev": 1e-3,
}
LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "a": 1.0,
    "ang": 1.0,
    "bohr": BOHR_ANGSTROM,
    "nm": 10.0,
}


def _normalise(unit: str) -> str:
    return unit.strip().lower().replace(" ", "")


def energy_factor(unit: str) -> float:
    """Factor that turns an energy in ``unit`` into eV.

    Raises:
        ValueError: for a unit mfcalc does not know, listing the known ones.
    """
    key = _normalise(unit)
    if key not in ENERGY_UNITS:
        raise ValueError(f"unknown energy unit {unit!r}; known: {sorted(set(ENERGY_UNITS))}")
    return ENERGY_UNITS[key]


def length_factor(unit: str) -> float:
    """Factor that turns a length in ``unit`` into Angstrom."""
    key = _normalise(unit)
    if key not in LENGTH_UNITS:
        raise ValueError(f"unknown length unit {unit!r}; known: {sorted(set(LENGTH_UNITS))}")
    return LENGTH_UNITS[key]


def forces_factor(unit: str) -> float:
    """Factor that turns a force in ``unit`` (``"<energy>/<length>"``) into eV/Angstrom.

    Examples: ``"hartree/bohr"`` -> 51.42..., ``"hartree/angstrom"`` -> 27.21...,
    ``"kcal/mol/angstrom"`` -> 0.04336...
    """
    key = _normalise(unit)
    energy, sep, length = key.rpartition("/")
    if not sep:
        raise ValueError(f"force unit {unit!r} must look like '<energy>/<length>', e.g. 'hartree/bohr'")
    return energy_factor(energy) / length_factor(length)
