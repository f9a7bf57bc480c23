"""Readers: documented counts and units of the reference file, masks, layouts, bad files."""

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mfcalc.data import FidelitySpec, MFData, load_data, parse_fidelity, read_ase, read_hdf5
from mfcalc.units import BOHR_ANGSTROM, HARTREE_EV

THREE = [
    parse_fidelity("xtb=gfn2_xtb.energy,gfn2_xtb.forces"),
    parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces"),
    parse_fidelity("cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces"),
]


@pytest.fixture(scope="module")
def ref(reference_h5) -> MFData:
    return read_hdf5(str(reference_h5), THREE)


def test_reference_counts_match_the_data_readme(ref):
    assert len(ref) == 1024
    assert len(ref.groups["formula"][1]) == 25
    assert len(ref.groups["smiles"][1]) == 29
    em, fm = ref.energy_mask, ref.forces_mask()
    assert em[:, 0].sum() == 1024 and em[:, 1].sum() == 1024
    assert em[:, 2].sum() == 928  # 96 four-heavy-atom structures have no CCSD(T)
    assert fm[:, 0].sum() == 1024 and fm[:, 1].sum() == 1024
    assert fm[:, 2].sum() == 20
    heavy = np.bincount(np.repeat(np.arange(len(ref)), ref.n_atoms), weights=ref.numbers > 1)
    assert set(heavy[~em[:, 2]]) == {4.0}


def test_energies_and_forces_are_converted_from_hartree_to_ev(ref, reference_h5):
    with h5py.File(reference_h5, "r") as f:
        raw_e = f["C1H4"]["wb97x_dz.energy"][0]
        raw_f = f["C1H4"]["wb97x_dz.forces"][0]
        raw_x = f["C1H4"]["coordinates"][0]
    s = list(ref.groups["formula"][1]).index("C1H4")
    row = int(np.nonzero(ref.groups["formula"][0] == s)[0][0])
    atoms = slice(ref.offsets[row], ref.offsets[row + 1])
    assert ref.energy[row, 1] == pytest.approx(raw_e * HARTREE_EV, rel=1e-12)
    np.testing.assert_allclose(ref.forces["dft"][atoms], raw_f * HARTREE_EV, rtol=1e-12)
    np.testing.assert_allclose(ref.positions[atoms], raw_x)
    # a methane DFT energy is about -40.5 Hartree = -1102 eV
    assert -1110 < ref.energy[row, 1] < -1095


def test_nan_labels_become_masks_not_numbers(ref):
    em = ref.energy_mask
    assert np.isnan(ref.energy[~em]).all() and np.isfinite(ref.energy[em]).all()
    fm = ref.forces_mask()
    owner = np.repeat(np.arange(len(ref)), ref.n_atoms)
    cc_f = ref.forces["cc"]
    assert np.isfinite(cc_f[fm[owner, 2]]).all()
    assert np.isnan(cc_f[~fm[owner, 2]]).all()


def test_energy_only_binding_has_no_forces(reference_h5):
    data = read_hdf5(str(reference_h5), [parse_fidelity("cc=ccsd(t)_dz.energy")])
    assert data.forces == {} and not data.forces_mask().any()


def test_ani1_nested_layout_with_declared_hartree_per_bohr(external_dir):
    path = external_dir / "C2H6_DFT+Force_NMS.h5"
    spec = FidelitySpec("dft", "energies", "forces", energy_unit="hartree", forces_unit="hartree/bohr")
    data = read_hdf5(str(path), [spec])
    assert len(data) == 10080 and set(data.numbers.tolist()) == {1, 6}
    with h5py.File(path, "r") as f:
        raw = f["gdb11_s02/gdb11_s02-10/forces"][0]
        order = np.asarray(f["gdb11_s02/gdb11_s02-10/species"][()])
    row = list(data.groups["formula"][1]).index("gdb11_s02/gdb11_s02-10")
    first = int(np.nonzero(data.groups["formula"][0] == row)[0][0])
    atoms = slice(data.offsets[first], data.offsets[first + 1])
    np.testing.assert_allclose(data.forces["dft"][atoms], raw * HARTREE_EV / BOHR_ANGSTROM, rtol=1e-12)
    assert [b.decode() for b in order].count("C") == 2


def test_ani1_smiles_stored_as_characters_is_one_label(external_dir):
    data = read_hdf5(str(external_dir / "C2H6_CAS_NMS.h5"), [FidelitySpec("cas", "energies")])
    assert len(data) == 480
    # the file stores its SMILES as the characters [b"C", b"O"]: joined into one label per
    # group, taken as given (the label is the file's own and does not match its C2H6 species)
    assert data.groups["smiles"][1] == ["CO"]


def _write_extxyz(path, frames):
    ase.io.write(str(path), frames, format="extxyz")


def test_extxyz_per_fidelity_keys_and_declared_units(tmp_path):
    frames = []
    for k in range(3):
        a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0.0 + 0.01 * k]])
        a.info["xtb_energy"] = -5.0 - k
        a.info["cc_energy_kcal"] = -100.0 * (k + 1)
        a.arrays["xtb_forces"] = np.full((3, 3), 0.1 * k)
        a.info["smiles"] = "O"
        frames.append(a)
    frames[1].info.pop("cc_energy_kcal")  # one frame lacks the high level
    path = tmp_path / "water.extxyz"
    _write_extxyz(path, frames)
    specs = [
        FidelitySpec("xtb", "xtb_energy", "xtb_forces"),
        FidelitySpec("cc", "cc_energy_kcal", energy_unit="kcal/mol"),
    ]
    data = read_ase(str(path), specs)
    assert len(data) == 3
    np.testing.assert_allclose(data.energy[:, 0], [-5.0, -6.0, -7.0])
    assert np.isnan(data.energy[1, 1])
    assert data.energy[2, 1] == pytest.approx(-300 * 0.0433641, rel=1e-5)
    np.testing.assert_allclose(data.forces["xtb"][6:9], 0.2)
    assert data.groups["smiles"][1] == ["O"]


def test_extxyz_smiles_that_look_like_booleans_stay_smiles(tmp_path):
    """extxyz reads ``smiles=F`` (hydrogen fluoride) as False; one such frame once blanked the
    SMILES of a whole 43,729-structure campaign."""
    frames = [
        Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]]),
        Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
    ]
    frames[0].info["smiles"], frames[1].info["smiles"] = "F", "O"
    frames.append(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]))  # no SMILES at all
    path = tmp_path / "mixed.extxyz"
    ase.io.write(str(path), frames, format="extxyz")
    assert ase.io.read(str(path), index=0).info["smiles"] is False  # the trap itself
    data = read_ase(str(path), [])
    assert list(data.group_labels("smiles")) == ["F", "O", ""]


def test_extxyz_plain_energy_and_forces_from_singlepoint_calculator(tmp_path):
    a = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    a.calc = SinglePointCalculator(a, energy=-31.5, forces=np.array([[0.5, 0, 0], [-0.5, 0, 0]]))
    path = tmp_path / "h2.extxyz"
    ase.io.write(str(path), a, format="extxyz")
    data = load_data([str(path)], [FidelitySpec("dft", "energy", "forces")])
    assert data.energy[0, 0] == pytest.approx(-31.5)
    np.testing.assert_allclose(data.forces["dft"][0], [0.5, 0, 0])


# ---- bad input ---------------------------------------------------------------------------------
def test_missing_hdf5_key_names_the_key_and_lists_the_file_keys(reference_h5):
    with pytest.raises(ValueError, match=r"'ccsd\(t\)_tz.energy'.*wb97x_dz.energy"):
        read_hdf5(str(reference_h5), [parse_fidelity("cc=ccsd(t)_tz.energy")])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_hdf5(str(tmp_path / "nope.h5"), THREE)


def test_truncated_hdf5_is_a_clear_error(tmp_path, reference_h5):
    bad = tmp_path / "cut.h5"
    bad.write_bytes(reference_h5.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read .*cut.h5"):
        read_hdf5(str(bad), THREE)


def test_text_file_posing_as_hdf5_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("this is not hdf5\n")
    with pytest.raises(ValueError, match="cannot read"):
        read_hdf5(str(bad), THREE)


def test_unreadable_ase_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "junk.extxyz"
    bad.write_text("3\nnot a comment line with = signs\nX 0 0\n")
    with pytest.raises(ValueError, match="cannot read .*junk.extxyz"):
        read_ase(str(bad), [FidelitySpec("dft", "energy")])


def test_empty_hdf5_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_group("C1H4")
    with pytest.raises(ValueError, match="no group with a 'coordinates'"):
        read_hdf5(str(path), THREE)
    with h5py.File(path, "w") as f:
        g = f.create_group("C1H4")
        g["atomic_numbers"] = np.array([6, 1, 1, 1, 1])
        g["coordinates"] = np.zeros((0, 5, 3))
        g["e"] = np.zeros(0)
    with pytest.raises(ValueError, match="no structures"):
        read_hdf5(str(path), [FidelitySpec("x", "e")])


def test_nan_coordinates_in_a_file_are_rejected(tmp_path):
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("H2")
        g["atomic_numbers"] = np.array([1, 1])
        g["coordinates"] = np.array([[[0, 0, 0], [np.nan, 0, 0]]])
        g["e"] = np.array([-1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        read_hdf5(str(path), [FidelitySpec("x", "e")])


def test_unknown_element_symbol_is_named(tmp_path):
    path = tmp_path / "xx.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("mol")
        g["species"] = np.array([b"C", b"Qq"])
        g["coordinates"] = np.zeros((1, 2, 3))
        g["energies"] = np.array([-1.0])
    with pytest.raises(ValueError, match="'Qq'"):
        read_hdf5(str(path), [FidelitySpec("x", "energies")])


@pytest.mark.parametrize("text", ["cc", "=e", "cc=", "cc=a,b,c", "bad name=e"])
def test_malformed_fidelity_binding(text):
    with pytest.raises(ValueError):
        parse_fidelity(text)


def test_duplicate_fidelity_names_are_rejected(reference_h5):
    with pytest.raises(ValueError, match="more than once"):
        read_hdf5(str(reference_h5), [parse_fidelity("a=wb97x_dz.energy"), parse_fidelity("a=gfn2_xtb.energy")])


def test_hdf5_read_straight_into_memory_mapped_cache(reference_h5, tmp_path, ref):
    cached = read_hdf5(str(reference_h5), THREE, cache_dir=str(tmp_path / "cache"))
    assert isinstance(cached.positions, np.memmap) and isinstance(cached.forces["dft"], np.memmap)
    np.testing.assert_array_equal(cached.positions, ref.positions)
    np.testing.assert_array_equal(cached.forces["cc"], ref.forces["cc"])
    np.testing.assert_array_equal(cached.energy, ref.energy)
    again = MFData.load(str(tmp_path / "cache"))
    assert list(again.group_labels("smiles")) == list(ref.group_labels("smiles"))
