"""The shipped default model: loads with no arguments, and its card's numbers reproduce."""

import json
import os

import h5py
import numpy as np
import pytest
from ase.build import molecule
from ase.data import chemical_symbols

from conftest import REPO
from mfcalc import MFCalculator, keys
from mfcalc.data import parse_fidelity
from mfcalc.evaluate import evaluate_file
from mfcalc.models import default_model_path

CARD = REPO / "models"
# the elements a default model may know (ANI-2x's set, the campaign's domain), and those it must
DOMAIN, CORE = {1, 6, 7, 8, 9, 16, 17}, {1, 6, 7, 8}


def card_bindings(meta, frozen) -> list:
    """The model's own fidelity bindings, each with the forces its frozen test file holds (the card
    measures every label in that file: the CCSD(T) forces there were never trained on)."""
    with h5py.File(frozen, "r") as f:
        present = {name for group in f.values() for name in group}
    bindings = []
    for name, b in meta[keys.META_TRAINING]["fidelities"].items():
        forces = b["energy"].rsplit(".", 1)[0] + ".forces"
        bindings.append(parse_fidelity(f"{name}={b['energy']}" + (f",{forces}" if forces in present else "")))
    return bindings


def test_default_model_ships_inside_the_package_and_loads_without_arguments():
    path = default_model_path()
    assert os.path.getsize(path) < 20 * 2**20
    calc = MFCalculator(device="cpu")
    assert calc.fidelities == ("xtb", "dft", "cc") and calc.fidelity == "cc"
    meta = calc.metadata
    assert meta[keys.META_ENSEMBLE_SIZE] >= 4 and CORE <= set(meta[keys.META_SPECIES]) <= DOMAIN
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
    bromide = molecule("CH3Cl")
    bromide[1].symbol = "Br"  # outside every default model's domain
    bromide.calc = calc
    with pytest.raises(ValueError, match="Br not known to this model") as err:
        bromide.get_potential_energy()
    known = {chemical_symbols[z] for z in calc.metadata[keys.META_SPECIES]}
    assert all(symbol in str(err.value) for symbol in known)  # and the message names what it knows


def test_mfcalc_eval_on_the_frozen_test_structures_reproduces_the_card():
    card = json.loads((CARD / "default_metrics.json").read_text())
    frozen = CARD / "default_test.h5"
    meta = MFCalculator(device="cpu").metadata
    metrics = evaluate_file(default_model_path(), [str(frozen)], card_bindings(meta, frozen))
    assert set(metrics) == set(card)
    for fid, m in card.items():
        for key in ("energy_rmse_kcal_mol", "forces_rmse_kcal_mol_a", "n_energy", "n_force_components"):
            if m[key] is None:
                assert metrics[fid][key] is None
            else:
                assert metrics[fid][key] == pytest.approx(m[key], rel=1e-6), (fid, key)
