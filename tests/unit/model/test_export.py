"""Model files: rescript keeps weights and metadata and gives the same numbers."""

import torch

from conftest import ethanol
from mfcalc import export, keys
from mfcalc.model import MultiFidelityHipnn
from mfcalc.model.ensemble import Ensemble


def test_rescript_keeps_weights_metadata_and_results(tmp_path):
    torch.manual_seed(0)
    members = [MultiFidelityHipnn([1, 6, 8], ["dft", "cc"], n_features=6, n_sensitivities=4) for _ in range(2)]
    model = Ensemble(members).double()
    path, out = str(tmp_path / "old.pt"), str(tmp_path / "new.pt")
    export.save(model, path, export.build_metadata(model, metrics={"note": "kept"}))
    meta = export.rescript(path, out)
    old, _ = export.load(path)
    new, new_meta = export.load(out)
    assert new_meta[keys.META_METRICS] == {"note": "kept"}
    assert new_meta[keys.META_RESCRIPTED].startswith("mfcalc ") and meta == new_meta
    z, pos = ethanol()
    mol = torch.zeros(len(z), dtype=torch.long)
    for k in range(2):
        e_old, f_old = old.energy_and_forces(z, pos, mol, 1, k)
        e_new, f_new = new.energy_and_forces(z, pos, mol, 1, k)
        torch.testing.assert_close(e_new, e_old, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(f_new, f_old, rtol=1e-12, atol=1e-12)
    assert next(new.parameters()).dtype == torch.float64


def test_rescript_refuses_a_file_that_does_not_record_every_hyper_parameter(tmp_path):
    import pytest

    torch.manual_seed(0)
    model = Ensemble([MultiFidelityHipnn([1, 8], ["dft"], n_features=4, n_sensitivities=3)])
    meta = export.build_metadata(model)
    del meta[keys.META_HPARAMS]["cusp_reg"]  # as an older file might
    path = str(tmp_path / "old.pt")
    export.save(model, path, meta)
    with pytest.raises(ValueError, match="cusp_reg"):
        export.rescript(path, str(tmp_path / "new.pt"))


def test_a_format_3_file_runs_with_todays_kernels_and_gives_its_own_numbers():
    """files/format3.pt was written by mfcalc before the padded-table interaction (a tiny
    2-member ensemble): load() must rebuild it with today's code, weights unchanged."""
    import os

    path = os.path.join(os.path.dirname(__file__), "files", "format3.pt")
    as_saved = torch.jit.load(path)  # the code stored in the file
    upgraded, meta = export.load(path)
    assert meta[keys.META_FORMAT_VERSION] == 3
    assert "pair_layout" not in as_saved.members_forward.code
    assert "pair_layout" in upgraded.inputs.code
    z, pos = ethanol()
    pos = pos.float()
    mol = torch.zeros(len(z), dtype=torch.long)
    for k in range(2):
        old = as_saved.compute(z, pos, mol, 1, k)
        new = upgraded.compute(z, pos, mol, 1, k)
        for key in old:
            torch.testing.assert_close(new[key], old[key], rtol=1e-5, atol=1e-5)
