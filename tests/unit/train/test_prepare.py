"""A data set grown level by level: files may lack a level that others have."""

import h5py
import pytest

from conftest import REFERENCE_H5
from mfcalc.config import FidelityConfig, RunConfig, load_run_data


@pytest.fixture
def xtb_only(tmp_path):
    """Ethanol-group structures with GFN2-xTB labels only, shifted so they are new geometries."""
    path = tmp_path / "xtb_only.h5"
    with h5py.File(REFERENCE_H5) as src, h5py.File(path, "w") as dst:
        g = dst.create_group("C2H6O1")
        g["atomic_numbers"] = src["C2H6O1/atomic_numbers"][()]
        g["coordinates"] = src["C2H6O1/coordinates"][()] + 0.01
        for key in ("gfn2_xtb.energy", "gfn2_xtb.forces"):
            g[key] = src["C2H6O1"][key][()]
    return path


def config(*files, cc_key="ccsd(t)_dz.energy"):
    return RunConfig(
        data=[str(f) for f in files],
        fidelities=[
            FidelityConfig("xtb", "gfn2_xtb.energy", "gfn2_xtb.forces"),
            FidelityConfig("dft", "wb97x_dz.energy", "wb97x_dz.forces"),
            FidelityConfig("cc", cc_key),
        ],
    )


def test_a_file_without_a_level_adds_structures_without_its_labels(xtb_only):
    data = load_run_data(config(REFERENCE_H5, xtb_only), say=lambda _m: None)
    with h5py.File(xtb_only) as f:
        n_new = len(f["C2H6O1/coordinates"])
    assert len(data) == 1024 + n_new
    assert data.energy_mask[:, 0].sum() == 1024 + n_new  # xtb everywhere
    assert data.energy_mask[:, 1].sum() == 1024 and data.forces_mask()[:, 1].sum() == 1024  # dft: reference only


def test_a_key_in_no_file_is_still_an_error_naming_it(xtb_only):
    with pytest.raises(ValueError, match=r"key\(s\) \['ccsd\(t\)_dz.energi'\] are in none of the files"):
        load_run_data(config(REFERENCE_H5, xtb_only, cc_key="ccsd(t)_dz.energi"), say=lambda _m: None)
