"""The labelled data set under construction: journal first, HDF5 replaced whole, nothing lost twice."""

import h5py
import numpy as np
import pytest

from conftest import REFERENCE_H5
from mfcalc.data import parse_fidelity, read_hdf5
from mfcalc.label.store import LabelStore, formula, structure_key

WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]]))


def test_keys_ignore_atom_order_and_noise_below_the_rounding():
    z, x = WATER
    assert structure_key(np.sort(z), x[np.argsort(z, kind="stable")]) == structure_key(
        np.sort(z), x[np.argsort(z, kind="stable")] + 1e-9
    )
    assert structure_key(z, x) != structure_key(z, x + 1e-3)
    assert formula(z) == "H2O1"


def test_labels_survive_a_kill_through_the_journal_and_a_cut_last_line(tmp_path):
    path = tmp_path / "w.h5"
    store = LabelStore(str(path), merge_seconds=1e9)
    key = store.add(*WATER, smiles="O")
    store.record(key, "gfn2_xtb", -5.07, np.ones((3, 3)), 0.1)
    store.record_failure(key, "ccsd(t)_dz", "CCSD amplitudes did not converge")
    # killed here: no merge; the journal holds everything, with a half-written last line
    with open(store.journal_path, "a") as fh:
        fh.write('{"kind": "label", "key": "')
    again = LabelStore(str(path))
    assert again.has(key, "gfn2_xtb", forces=True) and again.has(key, "ccsd(t)_dz")  # a failure is final
    assert not again.has(key, "wb97x_dz")
    again.close()
    assert not (tmp_path / "w.h5.journal").exists()
    with h5py.File(path) as f:
        g = f["H2O1"]
        assert g["gfn2_xtb.energy"][0] == -5.07 and g["gfn2_xtb.forces"].shape == (1, 3, 3)
        assert "ccsd(t)_dz.energy" not in g  # a failed level leaves no label
        assert f["failures/message"][0] == b"CCSD amplitudes did not converge"


def test_a_later_level_fills_the_same_rows_and_keeps_earlier_forces(tmp_path):
    path = tmp_path / "w.h5"
    store = LabelStore(str(path))
    key = store.add(*WATER)
    store.record(key, "gfn2_xtb", -5.0, np.zeros((3, 3)), 0.1)
    store.close()
    store = LabelStore(str(path))
    assert store.add(WATER[0][[1, 0, 2]], WATER[1][[1, 0, 2]]) == key  # same geometry, other atom order
    store.record(key, "wb97x_dz", -76.3, None, 2.0)
    store.record(key, "gfn2_xtb", -5.0, None, 0.1)  # an energy-only rerun
    store.close()
    with h5py.File(path) as f:
        g = f["H2O1"]
        assert len(g["coordinates"]) == 1
        assert g["wb97x_dz.energy"][0] == -76.3 and "wb97x_dz.forces" not in g
        assert np.isfinite(g["gfn2_xtb.forces"][0]).all()


def test_the_reference_file_round_trips_through_the_store(tmp_path):
    """Reading data/mf_reference.h5 into a store and writing it back keeps every label."""
    copy = tmp_path / "ref.h5"
    copy.write_bytes(REFERENCE_H5.read_bytes())
    store = LabelStore(str(copy))
    store._dirty = True
    store.close()
    specs = [
        parse_fidelity("xtb=gfn2_xtb.energy,gfn2_xtb.forces"),
        parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces"),
        parse_fidelity("cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces"),
    ]
    a, b = read_hdf5(str(REFERENCE_H5), specs), read_hdf5(str(copy), specs)
    assert len(a) == len(b) == 1024
    order_a = np.lexsort(a.energy.T[::-1])
    order_b = np.lexsort(b.energy.T[::-1])
    np.testing.assert_array_equal(a.energy[order_a], b.energy[order_b])
    assert sorted(a.group_labels("smiles")) == sorted(b.group_labels("smiles"))
    with h5py.File(copy) as f, h5py.File(REFERENCE_H5) as r:  # same units (Hartree) and values in the file
        for key in ("gfn2_xtb.energy", "ccsd(t)_dz.energy"):
            np.testing.assert_array_equal(np.sort(f["C1H4O1"][key][()]), np.sort(r["C1H4O1"][key][()]))


def test_a_copy_without_some_structures_keeps_every_other_label(tmp_path):
    """write_copy: the dropped keys are gone, every other label (forces included) is as it was,
    the source is unchanged, and an existing target is refused."""
    source = LabelStore(str(REFERENCE_H5))
    keys = list(source.structures)
    drop = set(keys[::3])
    n = source.write_copy(str(tmp_path / "copy.h5"), drop=drop)
    assert n == len(keys) - len(drop) and len(source) == len(keys)
    copy = LabelStore(str(tmp_path / "copy.h5"))
    assert set(copy.structures) == set(keys) - drop
    for key, s in copy.structures.items():
        old = source.structures[key]
        assert set(s.labels) == set(old.labels)
        for level, lab in s.labels.items():
            assert lab.energy == old.labels[level].energy
            assert (lab.forces is None) == (old.labels[level].forces is None)
            if lab.forces is not None:
                np.testing.assert_array_equal(lab.forces, old.labels[level].forces)
    with pytest.raises(ValueError, match="exists"):
        source.write_copy(str(tmp_path / "copy.h5"))


def test_a_truncated_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(REFERENCE_H5.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read .* as HDF5"):
        LabelStore(str(bad))


def test_a_smiles_learnt_later_fills_an_empty_one_and_survives_a_kill(tmp_path):
    path = tmp_path / "w.h5"
    store = LabelStore(str(path))
    key = store.add(*WATER)  # no SMILES known
    store.record(key, "gfn2_xtb", -5.0, None, 0.1)
    store.close()
    store = LabelStore(str(path), merge_seconds=1e9)
    assert store.add(*WATER, smiles="O") == key
    assert store.add(*WATER, smiles="[OH2]") == key  # a known SMILES is never replaced
    again = LabelStore(str(path))  # the first was killed before merging: the journal has it
    assert again.structures[key].smiles == "O"
    again.close()
    with h5py.File(path) as f:
        assert f["H2O1/smiles"][0] == b"O" and f["H2O1/gfn2_xtb.energy"][0] == -5.0


def test_dropping_unlabelled_structures_never_drops_a_label_or_a_failure(tmp_path):
    path = tmp_path / "w.h5"
    store = LabelStore(str(path))
    z, x = WATER
    labelled = store.add(z, x)
    store.record(labelled, "gfn2_xtb", -5.0, None, 0.1)
    failed = store.add(z, x + 0.01)
    store.record_failure(failed, "ccsd(t)_dz", "did not converge")
    kept = store.add(z, x + 0.02)
    stale = store.add(z, x + 0.03)
    assert store.drop_unlabelled(keep={kept}) == 1
    store.close()
    again = LabelStore(str(path))
    assert set(again.structures) == {labelled, failed, kept}
    assert again.drop_unlabelled(keep=set()) == 1 and stale not in again.structures
