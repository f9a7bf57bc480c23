"""Splits, batches, persistence and reference-energy fits."""

import warnings

import numpy as np
import pytest
import torch

from mfcalc.data import (
    MFData,
    collate,
    concatenate,
    fit_reference_energies,
    iterate_batches,
    parse_fidelity,
    read_hdf5,
    split_indices,
)

SPECS = [parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces"), parse_fidelity("cc=ccsd(t)_dz.energy")]


@pytest.fixture(scope="module")
def ref(reference_h5):
    return read_hdf5(str(reference_h5), SPECS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_never_shares_a_smiles(ref, seed):
    split = split_indices(ref, 0.15, 0.15, by="smiles", seed=seed)
    labels = ref.group_labels("smiles")
    sets = {k: set(labels[v]) for k, v in split.items()}
    assert not sets["train"] & sets["valid"] and not sets["train"] & sets["test"] and not sets["valid"] & sets["test"]
    assert sum(len(v) for v in split.values()) == len(ref)
    assert all(len(v) > 0 for v in split.values())


def test_random_split_is_a_seeded_partition(ref):
    a = split_indices(ref, 0.1, 0.2, seed=3)
    b = split_indices(ref, 0.1, 0.2, seed=3)
    c = split_indices(ref, 0.1, 0.2, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    allidx = np.concatenate(list(a.values()))
    assert np.array_equal(np.sort(allidx), np.arange(len(ref)))
    assert abs(len(a["test"]) - 0.2 * len(ref)) <= 1


def test_split_that_would_be_empty_is_an_error(ref):
    one_group = ref.subset(np.nonzero(ref.group_labels("smiles") == "CC")[0])
    with pytest.raises(ValueError, match="split is empty"):
        split_indices(one_group, 0.1, 0.1, by="smiles")
    with pytest.raises(ValueError, match="no group column 'inchi'"):
        split_indices(ref, 0.1, 0.1, by="inchi")
    with pytest.raises(ValueError, match="leave no training"):
        split_indices(ref, 0.5, 0.5)


def test_collate_builds_flat_batches_in_order(ref):
    idx = np.array([5, 900, 17])
    b = collate(ref, idx, dtype=torch.float64)
    n = ref.n_atoms[idx]
    assert b.positions.shape == (n.sum(), 3) and b.n_mol == 3
    assert torch.equal(b.mol_index, torch.repeat_interleave(torch.arange(3), torch.from_numpy(n)))
    np.testing.assert_array_equal(
        b.positions[n[0] : n[0] + n[1]].numpy(), ref.positions[ref.offsets[900] : ref.offsets[901]]
    )
    assert b.energy_mask.dtype == torch.bool and b.energy.shape == (3, 2)
    assert torch.isfinite(b.forces).all()  # absent labels are zeros, masked
    assert b.forces_mask[:, 1].sum() == 0 and b.forces_mask[:, 0].all()


def test_iterate_batches_covers_every_structure_once(ref):
    seen = torch.cat(
        [b.index for b in iterate_batches(ref, np.arange(100), 32, shuffle=True, rng=np.random.default_rng(0))]
    )
    assert sorted(seen.tolist()) == list(range(100))


def test_save_and_memory_mapped_load_round_trip(ref, tmp_path):
    ref.save(str(tmp_path / "packed"))
    back = MFData.load(str(tmp_path / "packed"))
    assert isinstance(back.positions, np.memmap)
    assert back.fidelities == ref.fidelities
    np.testing.assert_array_equal(back.positions, ref.positions)
    np.testing.assert_array_equal(back.energy, ref.energy)
    np.testing.assert_array_equal(back.forces["dft"], ref.forces["dft"])
    assert list(back.group_labels("smiles")) == list(ref.group_labels("smiles"))


def test_concatenate_aligns_fidelities_and_fills_nan(ref):
    a = ref.subset(np.arange(3))
    b = MFData(
        fidelities=("xtb",),
        numbers=a.numbers,
        positions=a.positions,
        offsets=a.offsets,
        cell=a.cell,
        pbc=a.pbc,
        energy=np.ones((3, 1)),
        groups={"formula": a.groups["formula"]},
    )
    both = concatenate([a, b])
    assert both.fidelities == ("dft", "cc", "xtb")
    assert np.isnan(both.energy[:3, 2]).all() and np.isnan(both.energy[3:, :2]).all()
    assert np.isnan(both.forces["dft"][a.offsets[-1] :]).all()
    assert both.forces_mask()[:, 0].tolist() == [True] * 3 + [False] * 3


def test_reference_energy_fit_recovers_per_species_energies(ref):
    true = {1: -13.6, 6: -1030.0, 7: -1480.0, 8: -2040.0}
    synth = ref.subset(np.arange(len(ref)))
    owner = np.repeat(np.arange(len(synth)), synth.n_atoms)
    per_atom = np.vectorize(true.get)(synth.numbers.astype(int))
    synth.energy[:, 0] = np.bincount(owner, weights=per_atom)
    fit = fit_reference_energies(synth, [1, 6, 7, 8])
    np.testing.assert_allclose(fit[0], [true[z] for z in (1, 6, 7, 8)], rtol=1e-9)
    # the real data: residual energies after the fit are chemistry-sized (a few eV), not thousands
    real = fit_reference_energies(ref, [1, 6, 7, 8])
    counts = np.zeros((len(ref), 4))
    np.add.at(counts, (owner, np.searchsorted([1, 6, 7, 8], ref.numbers)), 1)
    resid = ref.energy[:, 0] - counts @ real[0]
    assert np.abs(resid).max() < 10.0


def test_species_missing_from_a_fidelity_borrows_another_reference(ref):
    sub = ref.subset(np.arange(len(ref)))
    has_n = np.bincount(np.repeat(np.arange(len(sub)), sub.n_atoms), weights=sub.numbers == 7) > 0
    sub.energy[has_n, 1] = np.nan  # the expensive level never saw nitrogen
    with pytest.warns(UserWarning, match="Z=7 has no 'cc' energy label"):
        fit = fit_reference_energies(sub, [1, 6, 7, 8])
    assert fit[1, 2] == fit[0, 2] and fit[1, 2] < -1000


def test_a_missing_species_borrows_from_the_level_on_the_nearest_energy_scale(reference_h5):
    """GFN2-xTB's atoms sit hundreds of eV above all-electron ones: a cc head that never saw
    nitrogen once took xTB's reference (the first level's) and predicted every N-containing
    molecule ~1,400 eV off.  The donor is now the level whose references agree with cc's."""
    three = read_hdf5(
        str(reference_h5),
        [parse_fidelity("xtb=gfn2_xtb.energy,gfn2_xtb.forces"), *SPECS],
    )
    assert three.fidelities == ("xtb", "dft", "cc")
    has_n = np.bincount(np.repeat(np.arange(len(three)), three.n_atoms), weights=three.numbers == 7) > 0
    three.energy[has_n, 2] = np.nan
    with pytest.warns(UserWarning, match="Z=7 has no 'cc' energy label; its reference energy is taken from 'dft'"):
        fit = fit_reference_energies(three, [1, 6, 7, 8])
    assert fit[2, 2] == fit[1, 2]
    assert abs(fit[0, 2] - fit[1, 2]) > 100.0  # the xTB scale really is far away


def test_species_missing_from_a_fidelity_are_named_in_one_warning(ref):
    """A new level that saw only hydrocarbons: N and O both borrow, and one warning names both
    (a fine-tuning run on ethane once printed one warning per element)."""
    sub = ref.subset(np.arange(len(ref)))
    owner = np.repeat(np.arange(len(sub)), sub.n_atoms)
    has_no = np.bincount(owner, weights=(sub.numbers == 7) | (sub.numbers == 8)) > 0
    sub.energy[has_no, 1] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_reference_energies(sub, [1, 6, 7, 8])
    messages = [str(w.message) for w in caught if "energy label" in str(w.message)]
    assert messages == ["elements Z=7, 8 have no 'cc' energy label; their reference energies are taken from 'dft'"]
    np.testing.assert_array_equal(fit[1, 2:], fit[0, 2:])
