"""Pictures: parity plots and histograms from mfcalc-eval, learning curves from mfcalc-train and
mfcalc-plot, conformer energies from mfcalc-rank-conformers; and mfcalc-eval --config."""

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from conftest import EXTERNAL, REFERENCE_H5  # noqa: E402
from mfcalc.cli.eval import main as eval_main  # noqa: E402
from mfcalc.cli.plot import main as plot_main  # noqa: E402
from mfcalc.config import RunConfig, load_run_data  # noqa: E402
from mfcalc.data import parse_fidelity  # noqa: E402
from mfcalc.data.dataset import load_data  # noqa: E402
from mfcalc.evaluate import evaluate  # noqa: E402
from mfcalc.models import default_model_path  # noqa: E402
from mfcalc.plot import rmse_mae  # noqa: E402
from mfcalc.units import BOHR_ANGSTROM, HARTREE_EV, KCAL_MOL_EV  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
BINDINGS = ["xtb=gfn2_xtb.energy,gfn2_xtb.forces", "cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces"]


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > min_bytes, path
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01  # something is drawn


def test_eval_plot_writes_parity_plots_whose_numbers_are_the_table(trained_model, tmp_path, capsys):
    split = trained_model.parent / "split.npz"
    argv = ["--model", str(trained_model), "--data", str(REFERENCE_H5), "--split", f"{split}:test"]
    for b in BINDINGS:
        argv += ["--fidelity", b]
    out = tmp_path / "plots"
    assert eval_main([*argv, "--plot", str(out), "--json", str(tmp_path / "m.json")]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("xtb", "cc"):
        assert_png(out / f"parity_{name}.png")
        assert_png(out / f"errors_{name}.png")
    table = json.loads((tmp_path / "m.json").read_text())
    data = load_data([str(REFERENCE_H5)], [parse_fidelity(b) for b in BINDINGS])
    metrics, pred = evaluate(str(trained_model), data, np.load(split)["test"], predictions=True)
    assert metrics == table
    for name in ("xtb", "cc"):
        p = pred[name]
        e_rmse, e_mae = rmse_mae(p["energy_ref"] / KCAL_MOL_EV, p["energy_pred"] / KCAL_MOL_EV)
        f_rmse, f_mae = rmse_mae(p["forces_ref"] / KCAL_MOL_EV, p["forces_pred"] / KCAL_MOL_EV)
        assert len(p["energy_ref"]) == table[name]["n_energy"]
        assert len(p["forces_ref"]) == table[name]["n_force_components"]
        assert e_rmse == pytest.approx(table[name]["energy_rmse_kcal_mol"], rel=1e-9)
        assert e_mae == pytest.approx(table[name]["energy_mae_kcal_mol"], rel=1e-9)
        assert f_rmse == pytest.approx(table[name]["forces_rmse_kcal_mol_a"], rel=1e-9)
        assert f_mae == pytest.approx(table[name]["forces_mae_kcal_mol_a"], rel=1e-9)


def test_training_leaves_a_learning_curve_and_mfcalc_plot_redraws_it(trained_model, tmp_path, capsys):
    assert_png(trained_model.parent / "learning_curve.png")
    out = tmp_path / "lc.png"
    assert plot_main([str(trained_model.parent), "--out", str(out)]) == 0
    assert_png(out)
    assert plot_main([str(tmp_path / "nothing")]) == 2
    assert "no " in capsys.readouterr().err


def test_rank_conformers_plot(tmp_path):
    from mfcalc.cli.rank import main as rank_main

    out = tmp_path / "conf.png"
    argv = ["CCO", "--n-conformers", "4", "--out", str(tmp_path / "r.sdf"), "--plot", str(out), "--device", "cpu"]
    assert rank_main(argv) == 0
    assert_png(out, min_bytes=3000)


def test_eval_config_reads_hartree_per_bohr_forces_as_declared(tmp_path, capsys):
    dft = EXTERNAL / "C2H6_DFT+Force_NMS.h5"
    if not dft.exists():
        pytest.skip("the Goodpaster ethane files are not in ../shared/data/external")
    cfg_path = tmp_path / "eval.toml"
    cfg_path.write_text(
        f"""[fidelity.dft]
files = ["{dft}"]
energy = "energies"
forces = "forces"
energy_unit = "hartree"
forces_unit = "hartree/bohr"
"""
    )
    split = tmp_path / "some.npz"
    np.savez(split, some=np.arange(0, 10080, 500))
    argv = ["--model", default_model_path(), "--config", str(cfg_path), "--split", f"{split}:some"]
    assert eval_main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["dft"]["n_force_components"] == 21 * 8 * 3
    # the forces mfcalc compares with are the file's Hartree/Bohr values converted by hand
    data = load_run_data(RunConfig.from_toml(str(cfg_path)), say=lambda _m: None)
    found = 0
    with h5py.File(dft) as f:
        for s in (0, 500, 7000):
            atoms = slice(int(data.offsets[s]), int(data.offsets[s + 1]))
            x = np.asarray(data.positions[atoms])
            for name in f["gdb11_s02"]:
                g = f["gdb11_s02"][name]
                match = np.nonzero(np.abs(g["coordinates"][()] - x).max(axis=(1, 2)) < 1e-9)[0]
                if len(match):
                    by_hand = g["forces"][match[0]] * HARTREE_EV / BOHR_ANGSTROM
                    np.testing.assert_allclose(np.asarray(data.forces["dft"][atoms]), by_hand, rtol=1e-12)
                    found += 1
    assert found == 3
    assert eval_main([*argv, "--data", str(dft)]) == 2
    assert "leave out --data and --fidelity" in capsys.readouterr().err
