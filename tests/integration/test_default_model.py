"""The shipped default model: loads with no arguments, and its card's numbers reproduce."""

import json
import os

import numpy as np
import pytest
from ase.build import molecule

from conftest import REFERENCE_H5, REPO
from mfcalc import MFCalculator, keys
from mfcalc.data import parse_fidelity
from mfcalc.evaluate import evaluate_file
from mfcalc.models import default_model_path

CARD = REPO / "models"
BINDINGS = [
    "xtb=gfn2_xtb.energy,gfn2_xtb.forces",
    "dft=wb97x_dz.energy,wb97x_dz.forces",
    "cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces",
]


def test_default_model_ships_inside_the_package_and_loads_without_arguments():
    path = default_model_path()
    assert os.path.getsize(path) < 20 * 2**20
    calc = MFCalculator(device="cpu")
    assert calc.fidelities == ("xtb", "dft", "cc") and calc.fidelity == "cc"
    meta = calc.metadata
    assert meta[keys.META_ENSEMBLE_SIZE] >= 4 and meta[keys.META_SPECIES] == [1, 6, 7, 8]
    assert meta[keys.META_SPREAD_WARNING] > 0
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and calc.results["energy_std"] >= 0


def test_out_of_domain_structure_warns_and_unknown_element_raises():
    calc = MFCalculator(device="cpu")
    atoms = molecule("CH3CH2OH")
    atoms.positions *= 0.6  # squeezed far outside anything in the training data
    atoms.calc = calc
    with pytest.warns(UserWarning, match="outside the model's training domain"):
        atoms.get_potential_energy()
    s = molecule("CH3SH")
    s.calc = calc
    with pytest.raises(ValueError, match="S not known to this model"):
        s.get_potential_energy()


def test_mfcalc_eval_on_the_held_out_split_reproduces_the_card():
    card = json.loads((CARD / "default_metrics.json").read_text())
    split = np.load(CARD / "default_split.npz")["test"]
    metrics = evaluate_file(
        default_model_path(), [str(REFERENCE_H5)], [parse_fidelity(b) for b in BINDINGS], structures=split
    )
    for fid, m in card.items():
        for key in ("energy_rmse_kcal_mol", "forces_rmse_kcal_mol_a", "n_energy", "n_force_components"):
            if m[key] is None:
                assert metrics[fid][key] is None
            else:
                assert metrics[fid][key] == pytest.approx(m[key], rel=1e-6), (fid, key)
