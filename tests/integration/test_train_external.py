"""Per-fidelity files, keys and units from a TOML config, on the third-party ethane data."""

import json

import h5py
import numpy as np
import pytest

from mfcalc.cli.train import main as train_main
from mfcalc.config import RunConfig, load_run_data
from mfcalc.units import BOHR_ANGSTROM, HARTREE_EV

CONFIG = """
out = "{out}"

[model]
n_features = 8
n_sensitivities = 6
n_atom_layers = 1

[train]
epochs = 2
batch_size = 32
max_structures = 400
device = "cpu"

[fidelity.dft]
files = ["{dft}"]
energy = "energies"
forces = "forces"
energy_unit = "hartree"
forces_unit = "hartree/bohr"

[fidelity.caspt2]
files = ["{cas}"]
energy = "energies"
energy_unit = "hartree"
"""


def test_config_binds_each_fidelity_to_its_own_files_and_units(external_dir, tmp_path):
    dft, cas = external_dir / "C2H6_DFT+Force_NMS.h5", external_dir / "C2H6_CAS_NMS.h5"
    cfg_path = tmp_path / "ethane.toml"
    cfg_path.write_text(CONFIG.format(out=tmp_path / "run", dft=dft, cas=cas))
    cfg = RunConfig.from_toml(str(cfg_path)).validate()
    data = load_run_data(cfg)
    assert data.fidelities == ("dft", "caspt2")
    # the 480 CASPT2 geometries are DFT geometries: merged, each carries both labels
    both = data.energy_mask.all(axis=1)
    assert 470 <= both.sum() <= 480
    # forces were converted from Hartree/Bohr: compare one structure with the raw file
    with h5py.File(dft) as f:
        raw_x = f["gdb11_s02/gdb11_s02-10/coordinates"][0]
        raw_f = f["gdb11_s02/gdb11_s02-10/forces"][0]
        raw_e = f["gdb11_s02/gdb11_s02-10/energies"][0]
    pos = np.asarray(data.positions).reshape(len(data), 8, 3)
    row = int(np.nonzero(np.abs(pos - raw_x).max(axis=(1, 2)) == 0)[0][0])
    np.testing.assert_allclose(
        data.forces["dft"][row * 8 : (row + 1) * 8], raw_f * HARTREE_EV / BOHR_ANGSTROM, rtol=1e-12
    )
    assert data.energy[row, 0] == pytest.approx(raw_e * HARTREE_EV, rel=1e-12)

    assert train_main(["--config", str(cfg_path)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["dft"]["n_force_components"] > 0
    resolved = (run / "config.toml").read_text()
    assert 'forces_unit = "hartree/bohr"' in resolved and "caspt2" in resolved
    # the resolved config reproduces the run
    again = RunConfig.from_toml(str(run / "config.toml"))
    assert again.to_dict() == RunConfig.from_toml(str(cfg_path)).validate().to_dict() | {"out": str(run), "data": []}
