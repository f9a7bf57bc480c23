"""The reference-data generator (needs PySCF and tblite; skipped without them)."""

import importlib.util
import sys

import numpy as np
import pytest

from conftest import REPO
from mfcalc.data import parse_fidelity, read_hdf5
from mfcalc.units import HARTREE_EV

pytest.importorskip("pyscf")
pytest.importorskip("tblite")


def test_generates_ani_layout_that_mfcalc_reads(tmp_path):
    spec = importlib.util.spec_from_file_location("make_reference_data", REPO / "tools" / "make_reference_data.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules["make_reference_data"] = tool
    spec.loader.exec_module(tool)
    out = tmp_path / "water.h5"
    assert tool.main(["--smiles", "O", "--snapshots", "2", "--out", str(out), "--cc-forces"]) == 0
    data = read_hdf5(
        str(out),
        [
            parse_fidelity("xtb=gfn2_xtb.energy,gfn2_xtb.forces"),
            parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces"),
            parse_fidelity("cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces"),
        ],
    )
    assert len(data) == 2 and data.numbers.tolist()[:3] == [1, 1, 8]  # atoms sorted by atomic number
    assert data.energy_mask.all() and data.forces_mask().all()
    assert -76.5 * HARTREE_EV < data.energy[0, 2] < -76.0 * HARTREE_EV  # water, CCSD(T)/cc-pVDZ
    # forces of the three levels agree to within the levels' differences (same geometry, Ha/A scale)
    assert np.abs(data.forces["cc"] - data.forces["dft"]).max() < 1.0  # eV/A
