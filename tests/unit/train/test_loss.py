"""The masked multi-fidelity loss: labels a structure lacks contribute nothing."""

import numpy as np
import pytest
import torch

from mfcalc.data import collate, parse_fidelity, read_hdf5
from mfcalc.metrics import batch_stats, error_stats
from mfcalc.model import MultiFidelityHipnn
from mfcalc.train.loss import LossWeights, rmse_plus_mae, total_loss
from mfcalc.units import KCAL_MOL_EV


@pytest.fixture(scope="module")
def data(reference_h5):
    specs = [parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces"), parse_fidelity("cc=ccsd(t)_dz.energy")]
    return read_hdf5(str(reference_h5), specs)


def loss_and_grads(model, batch, weights):
    pos = batch.positions.detach().requires_grad_(True)
    out = model(batch.numbers, pos, batch.mol_index, batch.n_mol, batch.cell, batch.pbc)
    pred = out["energy_levels"].sum(dim=1)
    g = torch.autograd.grad(pred[:, 0].sum(), pos, create_graph=True)[0]
    forces = torch.stack([-g, torch.zeros_like(g)], dim=1)
    stats = batch_stats(
        pred, batch.energy, batch.energy_mask, forces, batch.forces, batch.forces_mask, batch.mol_index, [0]
    )
    loss = total_loss(stats, out["hierarchicality"].sum(0), torch.tensor(float(batch.n_mol)), weights)
    params = [p for p in model.parameters() if p.requires_grad]
    return loss, torch.autograd.grad(loss, [pos] + params, allow_unused=True)


def test_structure_without_a_label_gives_that_fidelity_no_gradient(data):
    torch.manual_seed(0)
    model = MultiFidelityHipnn([1, 6, 7, 8], ["dft", "cc"], n_features=8, n_sensitivities=6, n_atom_layers=1).double()
    no_cc = int(np.nonzero(~data.energy_mask[:, 1])[0][0])
    with_cc = int(np.nonzero(data.energy_mask[:, 1])[0][0])
    batch = collate(data, np.array([no_cc, with_cc]), dtype=torch.float64)
    assert not batch.energy_mask[0, 1] and batch.energy_mask[1, 1]
    cc_only = LossWeights(energy=[0.0, 1.0], forces=[0.0, 0.0], hier=[0.0, 0.0])
    loss, grads = loss_and_grads(model, batch, cc_only)
    assert torch.isfinite(loss)
    n0 = int(data.n_atoms[no_cc])
    g_pos = grads[0]
    assert torch.all(g_pos[:n0] == 0), "the structure without a cc energy moved the cc loss"
    assert g_pos[n0:].abs().sum() > 0
    # changing the absent label (NaN in the file, 0 in the batch) changes nothing
    batch.energy[0, 1] = 12345.0
    loss2, grads2 = loss_and_grads(model, batch, cc_only)
    assert loss2 == loss and all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, grads2))


def test_fidelity_with_no_label_in_a_batch_contributes_zero(data):
    rows = np.nonzero(~data.energy_mask[:, 1])[0][:3]
    batch = collate(data, rows, dtype=torch.float64)
    stats = batch_stats(
        batch.energy + 1.0,
        batch.energy,
        batch.energy_mask,
        batch.forces,
        batch.forces,
        batch.forces_mask,
        batch.mol_index,
        [0],
    )
    terms = rmse_plus_mae(stats)
    assert terms[1, 0] == 0 and terms[0, 0] > 0


def test_loss_is_rmse_plus_mae_in_kcal_per_mol():
    err = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64)  # eV
    mask = torch.tensor([True, True, False])
    s = error_stats(err, mask)
    assert s.tolist() == pytest.approx([0.1, 0.4, 2.0])
    stats = torch.zeros(1, 2, 3, dtype=torch.float64)
    stats[0, 0] = s
    loss = total_loss(stats, torch.zeros(1, dtype=torch.float64), torch.tensor(1.0), LossWeights([1.0], [1.0], [0.0]))
    expected = (np.sqrt(0.1 / 2) + 0.4 / 2) / KCAL_MOL_EV
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_per_atom_energy_loss_divides_each_structure_error_by_its_atom_count():
    pred = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    ref = torch.tensor([[0.4], [2.9]], dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.bool)
    mol = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])  # 3 and 6 atoms
    zeros = torch.zeros(9, 1, 3, dtype=torch.float64)
    per_structure = batch_stats(pred, ref, mask, zeros, zeros, mask, mol, [])
    per_atom = batch_stats(pred, ref, mask, zeros, zeros, mask, mol, [], energy_per_atom=True)
    assert per_structure[0, 0].tolist() == pytest.approx([0.6**2 + 0.9**2, 1.5, 2])
    assert per_atom[0, 0].tolist() == pytest.approx([0.2**2 + 0.15**2, 0.35, 2])


def test_energy_loss_setting_is_checked_and_reaches_the_cli():
    from mfcalc.cli.train import build_parser, config_from_args

    args = build_parser().parse_args(["--data", "x.h5", "--fidelity", "dft=e", "--out", "o", "--energy-loss", "atom"])
    assert config_from_args(args).train.energy_loss == "atom"
    from mfcalc.config import FidelityConfig, RunConfig

    cfg = RunConfig(data=["x.h5"], fidelities=[FidelityConfig("dft", "e")])
    cfg.train.energy_loss = "molecule"
    with pytest.raises(ValueError, match="energy_loss"):
        cfg.validate()
