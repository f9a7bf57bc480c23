"""The relative-energy loss: energies compared within each molecule, a per-molecule offset removed,
and the molecule-grouped batches it needs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mfcalc.config import TrainSettings
from mfcalc.data.dataset import molecule_codes
from mfcalc.data.records import MFData, encode_groups
from mfcalc.metrics import centred_stats, group_sums, relative_rmse
from mfcalc.train.fit import epoch_batches
from mfcalc.train.loss import LossWeights, total_loss
from mfcalc.units import KCAL_MOL_EV


def random_case(seed=0, n=40, n_fid=2, n_groups=7):
    g = torch.Generator().manual_seed(seed)
    residual = torch.randn(n, n_fid, generator=g, dtype=torch.float64)
    mask = torch.rand(n, n_fid, generator=g) < 0.7
    group = torch.randint(0, n_groups, (n,), generator=g)
    return residual, mask, group, n_groups


def test_centred_statistics_are_the_squared_deviations_from_each_molecules_mean():
    residual, mask, group, n_groups = random_case()
    centred = centred_stats(group_sums(residual, mask, group, n_groups))
    for k in range(residual.shape[1]):
        sse, count = 0.0, 0
        for gid in range(n_groups):
            r = residual[(group == gid) & mask[:, k], k].numpy()
            if len(r) >= 2:  # a molecule with one labelled structure has no relative energy
                sse += float(((r - r.mean()) ** 2).sum())
                count += len(r)
        assert centred[k].tolist() == pytest.approx([sse, count], rel=1e-10)


def test_sums_of_batch_shards_add_up_to_those_of_the_whole_batch():
    """What makes the term exact under DistributedDataParallel: ranks add their sums."""
    residual, mask, group, n_groups = random_case(seed=1)
    whole = group_sums(residual, mask, group, n_groups)
    shards = sum(group_sums(residual[r::3], mask[r::3], group[r::3], n_groups) for r in range(3))
    torch.testing.assert_close(shards, whole)


def test_relative_term_ignores_a_constant_offset_per_molecule_but_not_a_change_within_one():
    residual, mask, group, n_groups = random_case(seed=2)
    weights = LossWeights(energy=[0.0, 0.0], forces=[0.0, 0.0], hier=[0.0, 0.0], relative=[0.0, 1.0])
    stats, zero, one = torch.zeros(2, 2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.tensor(1.0)

    def loss(r):
        return float(total_loss(stats, zero, one, weights, centred_stats(group_sums(r, mask, group, n_groups))))

    offset = torch.randn(n_groups, 1, dtype=torch.float64)[group] * 10.0  # eV, a different one per molecule
    base = loss(residual)
    assert loss(residual + offset) == pytest.approx(base, rel=1e-9)
    moved = residual.clone()
    row = int(torch.nonzero(mask[:, 1])[0])
    moved[row, 1] += 0.5
    assert loss(moved) != pytest.approx(base, rel=1e-6)
    centred = centred_stats(group_sums(residual, mask, group, n_groups))
    expected = np.sqrt(float(centred[1, 0]) / float(centred[1, 1])) / KCAL_MOL_EV  # only cc has a weight
    assert base == pytest.approx(expected, rel=1e-9)
    assert float(relative_rmse(torch.zeros(1, 2, dtype=torch.float64))[0]) == 0.0  # no pair: no term


def test_a_relative_weight_without_within_molecule_statistics_is_an_error():
    weights = LossWeights([1.0], [1.0], [0.0], relative=[1.0])
    with pytest.raises(ValueError, match="within-molecule"):
        total_loss(torch.zeros(1, 2, 3), torch.zeros(1), torch.tensor(1.0), weights)


def tiny_data(smiles, n_atoms, cc_labelled):
    """Structures of 1-3 atoms named by ``smiles``; xtb energies everywhere, cc where given."""
    n = len(smiles)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    energy = np.zeros((n, 2))
    energy[~np.asarray(cc_labelled), 1] = np.nan
    return MFData(
        fidelities=["xtb", "cc"],
        numbers=np.ones(offsets[-1], dtype=np.int64),
        positions=np.zeros((offsets[-1], 3)),
        offsets=offsets,
        cell=np.zeros((n, 3, 3)),
        pbc=np.zeros((n, 3), dtype=bool),
        energy=energy,
        forces={},
        groups={"smiles": encode_groups(np.asarray(smiles, dtype=object))},
    )


def test_molecule_codes_keep_molecules_apart_by_name_and_size_and_leave_unnamed_structures_alone():
    data = tiny_data(["CO", "CO", "CC", "", "", "CO"], [2, 2, 2, 3, 3, 3], [True] * 6)
    codes = molecule_codes(data, "smiles")
    assert codes[0] == codes[1]
    assert len({codes[0], codes[2], codes[3], codes[4], codes[5]}) == 5  # CC, two unnamed, CO of another size
    with pytest.raises(ValueError, match="'formula'.*molecule_key"):
        molecule_codes(data, "formula")


def fake_run(data, train, replay=None, relative=(0.0, 1.0)):
    return SimpleNamespace(
        split={"train": np.asarray(train)},
        replay=None if replay is None else np.asarray(replay),
        molecule=molecule_codes(data, "smiles"),
        residual=data,
        weights=LossWeights([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], relative=list(relative)),
    )


def test_grouped_epoch_keeps_each_molecules_labelled_structures_together_and_uses_each_once():
    smiles = ["A"] * 4 + ["B"] * 6 + [f"x{i}" for i in range(30)]
    cc = [True] * 4 + [True, True, True, False, False, False] + [i % 2 == 0 for i in range(30)]
    data = tiny_data(smiles, [3] * len(smiles), cc)
    run = fake_run(data, np.arange(len(smiles)))
    settings = TrainSettings(batch_size=8, relative_group=4)
    for seed in range(5):
        batches = epoch_batches(run, settings, np.random.default_rng(seed))
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(smiles)))  # each structure once
        assert all(len(b) <= 8 for b in batches)
        where = {int(i): k for k, b in enumerate(batches) for i in b}
        assert len({where[i] for i in range(4)}) == 1, "molecule A's four cc-labelled structures were split"
        assert len({where[i] for i in range(4, 7)}) == 1, "molecule B's three cc-labelled structures were split"
    # without a relative weight on a level these structures carry, nothing is grouped
    plain = fake_run(data, np.arange(len(smiles)), relative=(0.0, 0.0))
    together = [
        len({k for k, b in enumerate(epoch_batches(plain, settings, np.random.default_rng(s))) if 0 in b or 1 in b})
        for s in range(10)
    ]
    assert max(together) == 2  # structures 0 and 1 are placed independently and sometimes apart


def test_grouped_epoch_with_a_replay_fills_every_batch_with_the_replay_share():
    smiles = ["A"] * 8 + ["B"] * 8
    data = tiny_data(smiles, [3] * 16, [True] * 16)
    run = fake_run(data, np.arange(16), replay=np.arange(8, 16))
    settings = TrainSettings(batch_size=8, relative_group=2, replay_fraction=0.25)
    batches = epoch_batches(run, settings, np.random.default_rng(0))
    assert sorted(np.concatenate([b[b < 8] for b in batches]).tolist()) == list(range(8))  # new data once each
    assert all((b >= 8).sum() == 2 for b in batches)  # 0.25 of 8 from the replay


def test_relative_group_below_two_is_refused():
    with pytest.raises(ValueError, match="relative_group"):
        TrainSettings(relative_group=1).validate()


def test_epoch_line_shows_the_within_molecule_error_where_the_loss_has_it():
    from mfcalc.train.fit import _log_line, _log_row

    metrics = {
        "cc": {"energy_rmse_kcal_mol": 1.0, "forces_rmse_kcal_mol_a": None},
        "dft": {"energy_rmse_kcal_mol": None, "forces_rmse_kcal_mol_a": None},
    }
    line = _log_line("", _log_row(0, 1, 1.0, 1e-3, 2.0, 3.0, metrics, [0.5, 0.0]), 3, ["cc", "dft"])
    assert line.endswith("cc E 1.000 rel 0.500 | dft -")
    assert "rel" not in _log_line("", _log_row(0, 1, 1.0, 1e-3, 2.0, 3.0, metrics), 3, ["cc", "dft"])


def test_validation_pass_adds_each_batchs_molecule_sums_into_the_whole_sets(reference_h5):
    """accumulate_stats, batch by batch, gives the per-molecule sums of one pass over all structures."""
    from mfcalc.data import collate, parse_fidelity, read_hdf5
    from mfcalc.metrics import accumulate_stats
    from mfcalc.model import MultiFidelityHipnn

    data = read_hdf5(str(reference_h5), [parse_fidelity("cc=ccsd(t)_dz.energy")]).subset(np.arange(200))
    molecule = molecule_codes(data, "smiles")
    torch.manual_seed(0)
    model = MultiFidelityHipnn([1, 6, 7, 8], ["cc"], n_features=4, n_sensitivities=4, n_atom_layers=1).double()
    sums = torch.zeros(int(molecule.max()) + 1, 1, 3, dtype=torch.float64)
    rows = np.arange(200)
    accumulate_stats(model, data, rows, ["cc"], 16, dtype=torch.float64, molecule=molecule, molecule_sums=sums)
    batch = collate(data, rows, dtype=torch.float64)
    out = model(batch.numbers, batch.positions, batch.mol_index, batch.n_mol, batch.cell, batch.pbc)
    residual = out["energy_levels"][:, 1:].sum(dim=1).detach() - batch.energy
    whole = group_sums(residual, batch.energy_mask, torch.as_tensor(molecule), sums.shape[0])
    torch.testing.assert_close(sums, whole, rtol=1e-9, atol=1e-9)
    assert float(sums[..., 2].sum()) == float(batch.energy_mask.sum())
