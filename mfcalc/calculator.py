"""MFCalculator: an ASE calculator on a TorchScript mfcalc model, fidelity picked at run time.

Only the model file is needed (loading goes through :mod:`mfcalc.export`; no training code
is imported).  Energies are in eV, forces in eV/Angstrom (``-dE/dx`` by autograd, so MD
conserves energy), stress in eV/Angstrom^3 for periodic cells (strain derivative).

The member spread of an ensemble is in ``calc.results`` too (zeros for a single model,
which is an ensemble of one):

* ``energy_std``: standard deviation of the members' energies, eV;
* ``forces_std``: (N, 3) standard deviation of the members' forces, eV/Angstrom;
* ``domain_std``: the energy spread of the head the model file sets its warning threshold
  on (the head that saw the whole training domain; :func:`mfcalc.export.spread_check`),
  eV: above the threshold the calculator warns that the structure is outside the domain.

A charge or spin the structure carries (``atoms.info["charge"]`` / ``["multiplicity"]``, or
initial charges and magnetic moments) is no input of the network; one the model was not
trained on, or an odd electron count where it knows closed shells only, gets a warning.

The work is done by :class:`mfcalc.potential.Potential` (checks once per change of
elements or cell, a pair list reused within its skin, one ``compute`` call per step);
this module only speaks ASE.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mfcalc.potential import ModelLike, Potential


def electronic_state(atoms: Any) -> Tuple[int, Optional[int]]:
    """``(charge, multiplicity)`` as ASE structures carry them: ``atoms.info["charge"]`` (else
    the sum of the initial charges) and ``atoms.info["multiplicity"]`` (else one more than the
    summed initial magnetic moments, where any is set; ``None`` leaves it to the electron count)."""
    charge = atoms.info.get("charge")
    if charge is None:
        charge = float(atoms.get_initial_charges().sum())
    multiplicity = atoms.info.get("multiplicity")
    moments = atoms.get_initial_magnetic_moments()
    if multiplicity is None and moments.any():
        multiplicity = int(round(abs(float(moments.sum())))) + 1
    return int(round(float(charge))), None if multiplicity is None else int(multiplicity)


class MFCalculator(Calculator):
    """ASE calculator for multi-fidelity mfcalc models.

    Args:
        model: path of a ``model.pt`` from ``mfcalc-train``, an already loaded model
            (TorchScript or eager), or ``None`` for the default model shipped with mfcalc.
        fidelity: head to use, e.g. ``"cc"``; ``None`` takes the model's default (the last
            fidelity it was trained with). Change it later with ``calc.fidelity = "dft"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        dtype: ``None`` keeps the model's dtype; ``"float64"`` is worth it for NVE MD and
            tight optimisations.
        skin: Angstrom added to the cutoff for the reusable pair list (0 rebuilds every call).
        neighbor_backend: ``"auto"``, ``"torch"`` or ``"cluster"`` (torch-cluster).
        spread_warning: warn when the ensemble energy spread exceeds this many eV; ``None``
            takes the model file's documented threshold (``spread_warning_ev``), if any.
        freeze: TorchScript-freeze the model (weights become constants; ~1.5x faster per
            call for small molecules).  ``calc.model`` is then inference-only.
        compile: compile the network with ``torch.compile``: for one model and a small
            molecule 1.3-2.3x faster per call, after a one-off compilation of about a minute;
            for long MD.  No consistent gain for a 4-member ensemble.

    Raises:
        FileNotFoundError: no such model file (or no default model shipped).
        ValueError: not an mfcalc model file, unknown fidelity (lists the known ones), bad device.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std", "domain_std"]
    default_parameters: Dict[str, Any] = {}

    def __init__(
        self,
        model: ModelLike = None,
        fidelity: Optional[str] = None,
        device: str = "auto",
        dtype: Optional[str] = None,
        skin: float = 0.5,
        neighbor_backend: str = "auto",
        spread_warning: Optional[float] = None,
        freeze: bool = True,
        compile: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.potential = Potential(
            model, fidelity, device, dtype, skin, neighbor_backend, spread_warning, freeze, compile
        )
        p = self.potential
        self.metadata, self.fidelities, self.species, self.cutoff = p.metadata, p.fidelities, p.species, p.cutoff
        self.n_members, self.device, self.dtype, self.model = p.n_members, p.device, p.dtype, p.model

    @property
    def fidelity(self) -> str:
        return self.potential.fidelity

    @fidelity.setter
    def fidelity(self, name: str) -> None:
        if name != self.potential.fidelity:
            self.potential.fidelity = name
            self.reset()  # cached results belong to the old head

    def calculate(self, atoms=None, properties: Sequence[str] = ("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        results = self.potential.evaluate(
            atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, want_stress, *electronic_state(atoms)
        )
        warning = self.potential.outside_domain(results)
        if warning:
            warnings.warn(warning, stacklevel=2)
        if want_stress:
            results["stress"] = full_3x3_to_voigt_6_stress(results["stress"])
        results["free_energy"] = results["energy"]
        self.results.update(results)
