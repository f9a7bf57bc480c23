"""The ensemble evaluated in one pass computes exactly what its members compute one by one."""

import numpy as np
import pytest
import torch

from conftest import ethanol
from mfcalc import export, keys
from mfcalc.model import MultiFidelityHipnn
from mfcalc.model.ensemble import Ensemble


def perturbed_members(k=3, **kw):
    torch.manual_seed(0)
    members = [MultiFidelityHipnn([1, 6, 8], ["dft", "cc"], n_features=6, n_sensitivities=4, **kw) for _ in range(k)]
    with torch.no_grad():
        for m in members:  # members that differ in every weight, including the frozen references
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return [m.double() for m in members]


def one_by_one(members, z, x, mol, fid, cell=None, pbc=None):
    """Reference: each member's energy and -dE/dx separately, then mean and population std."""
    es, fs = [], []
    for m in members:
        e, f = m.energy_and_forces(z, x, mol, 1, fid, cell, pbc)
        es.append(e.detach())
        fs.append(f.detach())
    e, f = torch.stack(es), torch.stack(fs)
    return e.mean(0), e.std(0, unbiased=False), f.mean(0), f.std(0, unbiased=False)


BRANCHED = dict(branch_blocks=1, branch_heads=["cc"])  # cc's top level from a private block


@pytest.mark.parametrize("order, resnet, branch", [(0, True, {}), (1, False, {}), (2, True, {}), (2, True, BRANCHED)])
def test_one_pass_equals_members_one_by_one(order, resnet, branch):
    members = perturbed_members(tensor_order=order, resnet=resnet, **branch)
    ens = Ensemble(members)
    z, x = ethanol()
    mol = torch.zeros(len(z), dtype=torch.long)
    for fid in (0, 1):
        e, e_std, f, f_std = one_by_one(members, z, x, mol, fid)
        out = ens.compute(z, x, mol, 1, fid)
        torch.testing.assert_close(out[keys.ENERGY].detach(), e, rtol=0, atol=1e-10)
        torch.testing.assert_close(out[keys.ENERGY_STD].detach(), e_std, rtol=0, atol=1e-10)
        torch.testing.assert_close(out[keys.FORCES], f, rtol=0, atol=1e-10)
        torch.testing.assert_close(out[keys.FORCES_STD], f_std, rtol=0, atol=1e-10)
        for other in (0, 1):  # every head's spread, whichever head the forces are of
            spread = one_by_one(members, z, x, mol, other)[1]
            torch.testing.assert_close(out[keys.HEAD_ENERGY_STD][:, other], spread, rtol=0, atol=1e-10)
    heads = torch.stack([m(z, x, mol, 1)[keys.ENERGY] for m in members]).detach()
    fwd = ens(z, x, mol, 1)
    torch.testing.assert_close(fwd[keys.ENERGY].detach(), heads.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(fwd[keys.ENERGY_STD].detach(), heads.std(0, unbiased=False), rtol=0, atol=1e-10)


def test_periodic_stress_and_batches_match_the_members():
    members = perturbed_members()
    ens = Ensemble(members)
    z, x = ethanol()
    cell = torch.eye(3, dtype=torch.float64)[None] * 6.5
    pbc = torch.ones(1, 3, dtype=torch.bool)
    mol = torch.zeros(len(z), dtype=torch.long)
    e, _, f, _ = one_by_one(members, z, x, mol, 1, cell, pbc)
    out = ens.compute(z, x, mol, 1, 1, cell, pbc, stress=True)
    torch.testing.assert_close(out[keys.FORCES], f, rtol=0, atol=1e-10)
    # stress against a central difference of the mean energy in a strained cell
    h, i, j = 1e-5, 0, 1
    eps = torch.zeros(3, 3, dtype=torch.float64)
    eps[i, j] = eps[j, i] = h / 2
    energies = []
    for sign in (1, -1):
        d = torch.eye(3, dtype=torch.float64) + sign * eps
        energies.append(float(ens.compute(z, x @ d, mol, 1, 1, cell @ d, pbc)[keys.ENERGY][0]))
    volume = float(torch.det(cell[0]))
    assert float(out[keys.STRESS][0, i, j]) == pytest.approx((energies[0] - energies[1]) / (2 * h) / volume, rel=1e-6)
    # two structures in one batch give each its own numbers
    zz, xx = torch.cat([z, z]), torch.cat([x, x + 0.01])
    mol2 = torch.cat([mol, mol + 1])
    both = ens.compute(zz, xx, mol2, 2, 1)
    single = ens.compute(z, x + 0.01, mol, 1, 1)
    torch.testing.assert_close(both[keys.ENERGY][1], single[keys.ENERGY][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(both[keys.FORCES][len(z) :], single[keys.FORCES], rtol=0, atol=1e-10)


@pytest.mark.parametrize("branch", [{}, BRANCHED])
def test_torchscript_equals_eager_and_the_file_round_trips(tmp_path, branch):
    members = perturbed_members(**branch)
    ens = Ensemble(members)
    path = tmp_path / "m.pt"
    export.save(ens, str(path), export.build_metadata(ens))
    loaded, meta = export.load(str(path))
    assert meta[keys.META_FORMAT_VERSION] == keys.MODEL_FORMAT_VERSION
    z, x = ethanol()
    mol = torch.zeros(len(z), dtype=torch.long)
    a, b = ens.compute(z, x, mol, 1, 1), loaded.double().compute(z, x, mol, 1, 1)
    for key in a:
        torch.testing.assert_close(a[key].detach(), b[key].detach(), rtol=0, atol=1e-12)
    rebuilt = export.eager_model(loaded, meta, str(path)).double()  # from the recorded hyper-parameters
    torch.testing.assert_close(rebuilt(z, x, mol, 1)[keys.ENERGY], ens(z, x, mol, 1)[keys.ENERGY], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        export.build_metadata(ens)[keys.META_REFERENCE_ENERGIES]["cc"]["6"],
        float(members[0].heads.linears()[0].weight[1, 1]),
    )


def test_members_must_share_their_hyper_parameters():
    a = MultiFidelityHipnn([1, 6], ["cc"], n_features=4, n_sensitivities=3)
    b = MultiFidelityHipnn([1, 6], ["cc"], n_features=5, n_sensitivities=3)
    with pytest.raises(ValueError, match="share species, fidelities and hyper-parameters"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


@pytest.mark.parametrize("order, resnet, branch", [(1, False, {}), (2, True, {}), (1, True, BRANCHED)])
def test_members_come_back_out_of_the_stack_unchanged(order, resnet, branch):
    members = perturbed_members(tensor_order=order, resnet=resnet, **branch)
    ens = Ensemble(members)
    for k, original in enumerate(members):
        back = ens.member(k)
        a, b = original.state_dict(), back.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="out of range"):
        ens.member(3)


def test_uint8_atomic_numbers_are_atomic_numbers_not_a_mask():
    ens = torch.jit.script(Ensemble(perturbed_members(k=2)))
    z, x = ethanol()
    mol = torch.zeros(len(z), dtype=torch.long)
    ref = ens(z, x, mol, 1)[keys.ENERGY]
    torch.testing.assert_close(ens(z.to(torch.uint8), x, mol, 1)[keys.ENERGY], ref, rtol=0, atol=0)


def test_the_conformer_evaluator_reports_the_spread_of_the_head_it_is_given():
    from mfcalc.conformers.optimize import model_evaluator

    members = perturbed_members()
    ens = Ensemble(members)
    z, x = ethanol()
    coords = np.stack([x.numpy(), x.numpy() + 0.01])  # two conformers in one call
    for spread_head in (0, 1):
        energy, _, spread = model_evaluator(ens, z.numpy(), 1, spread_fidelity=spread_head)(coords)
        for c in range(2):
            xc = torch.as_tensor(coords[c])
            mol = torch.zeros(len(z), dtype=torch.long)
            assert energy[c] == pytest.approx(float(one_by_one(members, z, xc, mol, 1)[0]), abs=1e-10)
            assert spread[c] == pytest.approx(float(one_by_one(members, z, xc, mol, spread_head)[1]), abs=1e-10)


@pytest.mark.parametrize("scripted", [False, True])
def test_an_element_the_ensemble_does_not_know_is_named_with_the_known_ones(scripted):
    ens = Ensemble(perturbed_members(k=2))
    model = torch.jit.script(ens) if scripted else ens
    z, x = ethanol()
    z = z.clone()
    z[3] = 35  # Br
    with pytest.raises(Exception, match=r"\[35\] not in the model species \[1, 6, 8\]"):
        model.compute(z, x, torch.zeros(len(z), dtype=torch.long), 1, 0)
