"""mfcalc-train / mfcalc-eval end to end on a slice of the shipped reference data."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REFERENCE_H5
from mfcalc import export, keys
from mfcalc.cli.eval import main as eval_main
from mfcalc.cli.train import main as train_main
from mfcalc.model import MultiFidelityHipnn
from mfcalc.model.ensemble import Ensemble

DFT = "dft=wb97x_dz.energy,wb97x_dz.forces"
CC = "cc=ccsd(t)_dz.energy"
SMALL = [
    "--n-features",
    "8",
    "--n-sensitivities",
    "6",
    "--n-atom-layers",
    "1",
    "--tensor-order",
    "2",
    "--batch-size",
    "16",
    "--max-structures",
    "160",
    "--device",
    "cpu",
]


def train_args(out, *extra):
    return ["--data", str(REFERENCE_H5), "--fidelity", DFT, "--fidelity", CC, "--out", str(out), *SMALL, *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train_main(train_args(out, "--epochs", "6", "--split-by", "smiles", "--seed", "1")) == 0
    return out


def eager_ensemble(out) -> Ensemble:
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    meta = export.load(os.path.join(out, "model.pt"))[1]
    hp = meta[keys.META_HPARAMS]
    members = []
    for sd in ckpt["finished"]:
        m = MultiFidelityHipnn(**hp)
        m.load_state_dict(sd)
        members.append(m)
    return Ensemble(members).double()


def test_run_writes_every_promised_file(run_dir):
    for name in ("model.pt", "checkpoint.pt", "metrics.json", "log.csv", "config.toml"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("valid", "test"):
        for fid in ("dft", "cc"):
            m = metrics[split][fid]
            for k in (
                "energy_rmse_ev",
                "energy_mae_ev",
                "energy_rmse_kcal_mol",
                "energy_mae_kcal_mol",
                "n_energy",
                "forces_rmse_ev_a",
                "forces_rmse_kcal_mol_a",
                "forces_mae_ev_a",
                "n_force_components",
            ):
                assert k in m
        assert metrics[split]["dft"]["n_force_components"] > 0 and metrics[split]["cc"]["n_force_components"] == 0
        assert metrics[split]["dft"]["energy_rmse_kcal_mol"] == pytest.approx(
            metrics[split]["dft"]["energy_rmse_ev"] / 0.0433641, rel=1e-5
        )
    lines = (run_dir / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 6 and lines[0].startswith("member,epoch,seconds,lr,train_loss,valid_loss")


def test_a_few_epochs_reduce_the_validation_loss(run_dir):
    rows = [line.split(",") for line in (run_dir / "log.csv").read_text().strip().splitlines()[1:]]
    valid = [float(r[5]) for r in rows]
    assert min(valid[1:]) < valid[0]


def test_model_file_metadata_round_trip(run_dir):
    model, meta = export.load(str(run_dir / "model.pt"))
    assert meta[keys.META_FIDELITIES] == ["dft", "cc"]
    assert meta[keys.META_SPECIES] == [1, 6, 7, 8]
    assert meta[keys.META_ENERGY_UNIT] == "eV" and meta[keys.META_LENGTH_UNIT] == "Angstrom"
    assert meta[keys.META_CUTOFF] == pytest.approx(5.5)
    assert meta[keys.META_ENSEMBLE_SIZE] == 1
    assert meta[keys.META_HPARAMS]["tensor_order"] == 2 and meta[keys.META_HPARAMS]["n_features"] == 8
    ref = meta[keys.META_REFERENCE_ENERGIES]
    assert set(ref) == {"dft", "cc"} and -1100 < ref["dft"]["6"] < -900  # carbon, eV
    assert meta[keys.META_METRICS]["test"]["dft"]["n_energy"] > 0
    assert meta[keys.META_TRAINING]["split_by"] == "smiles"
    assert meta[keys.META_VERSION] and meta[keys.META_CREATED] and meta[keys.META_DTYPE] == "float32"
    assert list(model.fidelities) == ["dft", "cc"]


def test_exported_model_loads_without_mfcalc_and_matches_eager(run_dir, tmp_path):
    from conftest import ethanol

    z, pos = ethanol()
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "pos.npy", pos.numpy())
    code = textwrap.dedent(f"""
        import sys, numpy as np, torch
        m = torch.jit.load({str(run_dir / "model.pt")!r}).double()
        z = torch.from_numpy(np.load({str(tmp_path / "z.npy")!r}))
        pos = torch.from_numpy(np.load({str(tmp_path / "pos.npy")!r}))
        mol = torch.zeros(len(z), dtype=torch.long)
        e = m(z, pos, mol, 1)["energy"]
        _, f = m.energy_and_forces(z, pos, mol, 1, m.fidelity_index("cc"))
        np.save({str(tmp_path / "e.npy")!r}, e.detach().numpy()); np.save({str(tmp_path / "f.npy")!r}, f.numpy())
        assert "mfcalc" not in sys.modules, "mfcalc was imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path))
    eager = eager_ensemble(run_dir)
    mol = torch.zeros(len(z), dtype=torch.long)
    e = eager(z, pos, mol, 1)["energy"].detach().numpy()
    _, f = eager.energy_and_forces(z, pos, mol, 1, 1)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), e, rtol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), f.numpy(), rtol=1e-9, atol=1e-10)


def test_eval_reproduces_the_test_metrics_and_scores_unseen_labels(run_dir, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    rc = eval_main(
        [
            "--model",
            str(run_dir / "model.pt"),
            "--data",
            str(REFERENCE_H5),
            "--fidelity",
            DFT,
            "--fidelity",
            "cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces",
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "dft" in table and "kcal/mol" in table
    allm = json.loads(out_json.read_text())
    import h5py

    with h5py.File(REFERENCE_H5) as f:  # every atom of every structure that has CCSD(T) forces
        n_cc_force = sum(
            np.isfinite(g["ccsd(t)_dz.forces"][()]).all(axis=(1, 2)).sum() * g["coordinates"].shape[1] * 3
            for g in f.values()
            if "ccsd(t)_dz.forces" in g
        )
    assert allm["cc"]["n_force_components"] == n_cc_force > 0
    assert allm["cc"]["forces_rmse_kcal_mol_a"] > 0
    # on the run's own test split, eval (float64) reproduces metrics.json (float32 training)
    assert (
        eval_main(
            [
                "--model",
                str(run_dir / "model.pt"),
                "--data",
                str(REFERENCE_H5),
                "--fidelity",
                DFT,
                "--fidelity",
                CC,
                "--split",
                f"{run_dir / 'split.npz'}:test",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    again = json.loads(out_json.read_text())
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    for fid in ("dft", "cc"):
        assert again[fid]["n_energy"] == saved[fid]["n_energy"]
        assert again[fid]["energy_rmse_kcal_mol"] == pytest.approx(saved[fid]["energy_rmse_kcal_mol"], rel=1e-3)
    assert again["dft"]["forces_rmse_kcal_mol_a"] == pytest.approx(saved["dft"]["forces_rmse_kcal_mol_a"], rel=1e-3)


def test_max_minutes_stops_cleanly_and_exports(tmp_path, capsys):
    out = tmp_path / "timed"
    assert train_main(train_args(out, "--epochs", "1000", "--max-minutes", "0.001")) == 0
    assert (out / "model.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by_time"] is True and metrics["epochs_run"] == 1
    assert "--max-minutes" in capsys.readouterr().out


def test_max_minutes_is_shared_so_every_ensemble_member_trains(tmp_path):
    out = tmp_path / "timed3"
    assert train_main(train_args(out, "--epochs", "1000", "--max-minutes", "0.02", "--ensemble", "3")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ensemble_size"] == 3 and metrics["stopped_by_time"] is True
    assert all(m["stopped"].startswith("--max-minutes") and m["epochs_run"] >= 1 for m in metrics["members"])


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, schedule):
    import mfcalc.train.loop as loop

    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--epochs", "4", "--seed", "3", "--dtype", "float64", "--ensemble", "2", "--lr-schedule", schedule]
    assert train_main(train_args(full, *common)) == 0

    real_save = loop.save_checkpoint

    def save_then_die(state, path):  # the process is killed right after member 2's epoch-2 checkpoint
        real_save(state, path)
        if state["member"] == 1 and state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert train_main(train_args(part, *common)) == 130
    assert not (part / "model.pt").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert train_main(train_args(part, *common, "--resume")) == 0
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(part / "checkpoint.pt", weights_only=False)
    assert len(a["finished"]) == len(b["finished"]) == 2
    for sa, sb in zip(a["finished"], b["finished"]):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert [r["valid_loss"] for r in a["log_rows"]] == [r["valid_loss"] for r in b["log_rows"]]
    # the exported ensemble reports a member spread
    model, meta = export.load(str(part / "model.pt"))
    assert meta[keys.META_ENSEMBLE_SIZE] == 2
    from conftest import ethanol

    z, pos = ethanol()
    out = model.double()(z, pos, torch.zeros(len(z), dtype=torch.long), 1)
    assert (out["energy_std"] > 0).all()


def test_cosine_schedule_decays_from_lr_to_min_lr_over_the_epochs(tmp_path):
    out = tmp_path / "cosine"
    args = ["--epochs", "5", "--lr", "2e-3", "--min-lr", "2e-5", "--lr-schedule", "cosine"]
    assert train_main(train_args(out, *args)) == 0
    lrs = [float(r.split(",")[3]) for r in (out / "log.csv").read_text().strip().splitlines()[1:]]
    assert len(lrs) == 5 and lrs[0] == pytest.approx(2e-3) and lrs[-1] == pytest.approx(2e-5)
    assert all(b < a for a, b in zip(lrs, lrs[1:]))
    assert json.loads((out / "metrics.json").read_text())["members"][0]["stopped"] == "reached 5 epochs"


def test_resume_on_changed_data_is_refused(tmp_path, capsys):
    import shutil

    import h5py

    data = tmp_path / "copy.h5"
    shutil.copy(REFERENCE_H5, data)
    out = tmp_path / "run"
    args = ["--data", str(data), "--fidelity", DFT, "--out", str(out), *SMALL]
    assert train_main([*args, "--epochs", "1"]) == 0
    with h5py.File(data, "r+") as f:  # relabelled meanwhile, as by a labelling job writing to the file
        for group in f.values():
            group["wb97x_dz.energy"][0] += 0.01
    assert train_main([*args, "--epochs", "2", "--resume"]) == 2
    assert "the data changed since the checkpoint was written" in capsys.readouterr().err


def test_killed_process_leaves_a_readable_checkpoint_to_resume(tmp_path):
    import signal
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mfcalc.train", *train_args(out, "--epochs", "400")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            log = out / "log.csv"
            if log.exists() and len(log.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("training did not reach epoch 3 in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    done = state["epoch"]
    assert done >= 3
    assert train_main(train_args(out, "--epochs", str(done + 2), "--resume")) == 0
    rows = (out / "log.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == list(range(1, done + 3))


def test_resolved_config_reproduces_the_run(run_dir, tmp_path):
    again = tmp_path / "again"
    assert train_main(["--config", str(run_dir / "config.toml"), "--out", str(again)]) == 0
    a = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(again / "checkpoint.pt", weights_only=False)
    assert [r["valid_loss"] for r in a["log_rows"]] == [r["valid_loss"] for r in b["log_rows"]]
    for k, v in a["finished"][0].items():
        assert torch.equal(v, b["finished"][0][k]), k


def test_a_level_that_never_saw_an_element_borrows_the_nearest_scale_and_its_head_warns(tmp_path):
    """Three levels, CCSD(T) never on a nitrogen molecule: the cc head's N reference comes from
    wB97X (all-electron), not GFN2-xTB (the first level, ~1,400 eV away per N), the model file
    records which elements each head had labels for, and the calculator warns on the cc head."""
    import h5py
    from ase import Atoms

    from mfcalc.calculator import MFCalculator

    data = tmp_path / "no_cc_nitrogen.h5"
    with h5py.File(REFERENCE_H5) as src, h5py.File(data, "w") as dst:
        for name, group in src.items():
            src.copy(group, dst, name)
            if 7 in group["atomic_numbers"][()]:
                dst[name]["ccsd(t)_dz.energy"][...] = np.nan
    out = tmp_path / "run"
    args = ["--data", str(data), "--fidelity", "xtb=gfn2_xtb.energy,gfn2_xtb.forces", "--fidelity", DFT]
    args += ["--fidelity", CC, "--out", str(out), *SMALL, "--epochs", "1", "--seed", "0"]
    with pytest.warns(UserWarning, match="Z=7 has no 'cc' energy label; its reference energy is taken from 'dft'"):
        assert train_main(args) == 0
    domain = export.load(str(out / "model.pt"))[1][keys.META_DOMAIN]
    assert domain["elements_by_fidelity"]["cc"] == [1, 6, 8]
    assert domain["elements_by_fidelity"]["xtb"] == [1, 6, 7, 8]

    methylamine = Atoms(
        "CNH5",
        positions=[
            [0, 0, 0],
            [1.47, 0, 0],
            [-0.36, 1.03, 0],
            [-0.36, -0.51, 0.89],
            [-0.36, -0.51, -0.89],
            [1.8, -0.47, 0.82],
            [1.8, -0.47, -0.82],
        ],
    )
    methylamine.calc = MFCalculator(str(out / "model.pt"), fidelity="cc", device="cpu")
    with pytest.warns(UserWarning, match=r"'cc' head was trained on no energy of a structure containing N\b"):
        e_cc = methylamine.get_potential_energy()
    methylamine.calc.fidelity = "dft"
    e_dft = methylamine.get_potential_energy()
    assert abs(e_cc - e_dft) < 50.0  # same scale; with xTB's N reference they differed by ~1,400 eV
    with pytest.warns(UserWarning, match=r"'cc' head was trained on no energy"):  # switching back says it again
        methylamine.calc.fidelity = "cc"


def test_relative_energy_weight_changes_training_and_is_recorded(tmp_path):
    """--loss-weight cc:relative=W adds the within-molecule term (it moves the weights) and the
    model file and config record it."""
    plain, relative = tmp_path / "plain", tmp_path / "relative"
    assert train_main(train_args(plain, "--epochs", "1", "--seed", "3")) == 0
    extra = ["--epochs", "1", "--seed", "3", "--loss-weight", "cc:relative=2", "--relative-group", "3"]
    assert train_main(train_args(relative, *extra)) == 0
    a = torch.load(plain / "checkpoint.pt", weights_only=False)["finished"][0]
    b = torch.load(relative / "checkpoint.pt", weights_only=False)["finished"][0]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    meta = export.load(str(relative / "model.pt"))[1][keys.META_TRAINING]
    assert meta["fidelities"]["cc"]["weight_relative"] == 2.0 and meta["fidelities"]["dft"]["weight_relative"] == 0.0
    assert meta["relative_group"] == 3 and meta["molecule_key"] == "smiles"
    assert "weight_relative = 2.0" in (relative / "config.toml").read_text()


def test_split_from_reuses_an_earlier_runs_split_on_grown_labels_and_refuses_other_structures(tmp_path, capsys):
    """A continued build: the same structures with more labels train from run A's model on run
    A's split, so A's test structures stay unseen; data with a structure less is refused."""
    import h5py

    small = tmp_path / "small.h5"
    with h5py.File(REFERENCE_H5) as f, h5py.File(small, "w") as g:
        for name in list(f)[:3]:
            f.copy(f[name], g, name)
        group = next(iter(g.values()))
        label = float(group["ccsd(t)_dz.energy"][0])
        group["ccsd(t)_dz.energy"][0] = np.nan  # not labelled yet when run A trains
    fast = [a for a in SMALL if a not in ("--max-structures", "160")]
    first = tmp_path / "a"
    assert train_main(["--data", str(small), "--fidelity", DFT, "--fidelity", CC, "--out", str(first), *fast,
                       "--epochs", "1", "--seed", "3"]) == 0  # fmt: skip
    with h5py.File(small, "r+") as g:  # grown labels: a CCSD(T) energy where there was none
        next(iter(g.values()))["ccsd(t)_dz.energy"][0] = label
    second = tmp_path / "b"
    args = ["--data", str(small), "--fidelity", DFT, "--fidelity", CC, *fast, "--epochs", "1", "--seed", "4"]
    assert train_main([*args, "--out", str(second), "--init-from", str(first / "model.pt"),
                       "--split-from", str(first / "split.npz")]) == 0  # fmt: skip
    a, b = np.load(first / "split.npz"), np.load(second / "split.npz")
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[part], b[part])
    fewer = tmp_path / "fewer.h5"
    with h5py.File(small) as f, h5py.File(fewer, "w") as g:
        for name in list(f)[:2]:
            f.copy(f[name], g, name)
    capsys.readouterr()
    args[1] = str(fewer)
    assert train_main([*args, "--out", str(tmp_path / "c"), "--split-from", str(first / "split.npz")]) == 2
    assert "belongs to other data" in capsys.readouterr().err
    assert train_main([*args, "--out", str(tmp_path / "d"), "--split-from", str(tmp_path / "none.npz")]) == 2
    assert "no split file" in capsys.readouterr().err
    assert train_main([*args, "--out", str(tmp_path / "e"), "--split-from", str(first / "split.npz"),
                       "--max-structures", "10"]) == 2  # fmt: skip
    assert "cannot be combined with max_structures" in capsys.readouterr().err


def test_split_from_on_grown_data_keeps_every_old_structures_part_and_splits_only_the_new(tmp_path, capsys):
    """A fresh build on data that gained structures (a new file) keeps run A's split for A's
    structures, found by geometry through A's config.toml, and splits only the new ones; a split
    without its config.toml, where the data differ, is refused."""
    import shutil

    import h5py

    from mfcalc.config import RunConfig, load_run_data
    from mfcalc.data.identity import geometry_keys

    small, extra = tmp_path / "small.h5", tmp_path / "extra.h5"
    with h5py.File(REFERENCE_H5) as f, h5py.File(small, "w") as g, h5py.File(extra, "w") as h:
        names = list(f)
        for name in names[:3]:
            f.copy(f[name], g, name)
        for name in names[3:5]:
            f.copy(f[name], h, name)
    fast = [a for a in SMALL if a not in ("--max-structures", "160")]
    first = tmp_path / "a"
    assert train_main(["--data", str(small), "--fidelity", DFT, "--out", str(first), *fast,
                       "--epochs", "1", "--seed", "3"]) == 0  # fmt: skip
    second = tmp_path / "b"
    assert train_main(["--data", str(small), str(extra), "--fidelity", DFT, "--out", str(second), *fast,
                       "--epochs", "1", "--seed", "4", "--split-from", str(first / "split.npz")]) == 0  # fmt: skip
    assert "new ones are split anew" in capsys.readouterr().out

    def parts(run):
        keys = geometry_keys(load_run_data(RunConfig.from_toml(str(run / "config.toml")), say=lambda m: None))
        with np.load(run / "split.npz") as z:
            return {keys[int(i)]: part for part in z.files for i in z[part]}

    a, b = parts(first), parts(second)
    assert len(b) > len(a) and all(b[key] == part for key, part in a.items())
    assert {"train", "valid", "test"} <= {b[key] for key in set(b) - set(a)}  # the new ones in every part
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(first / "split.npz", lone / "split.npz")
    assert train_main(["--data", str(small), str(extra), "--fidelity", DFT, "--out", str(tmp_path / "c"), *fast,
                       "--epochs", "1", "--split-from", str(lone / "split.npz")]) == 2  # fmt: skip
    assert "no config.toml next to it" in capsys.readouterr().err


def test_eval_scores_energies_relative_within_each_molecule(run_dir, capsys):
    """The relE column: each molecule's mean error removed, molecules with one structure left
    out; recomputed here by hand from the per-structure predictions, and reported by the
    training run for its test split too; a data set without a molecule column has none, and a
    stated column the data lack is a clear error."""
    from mfcalc.data import parse_fidelity
    from mfcalc.data.dataset import load_data, molecule_codes
    from mfcalc.evaluate import evaluate
    from mfcalc.units import KCAL_MOL_EV

    data = load_data([str(REFERENCE_H5)], [parse_fidelity(DFT), parse_fidelity(CC)])
    rows = np.arange(0, len(data), 3)  # every third structure: some molecules keep only one
    metrics, pred = evaluate(str(run_dir / "model.pt"), data, rows, predictions=True)
    codes = molecule_codes(data, "smiles")
    for k, fid in enumerate(data.fidelities):
        labelled = rows[np.isfinite(data.energy[rows, k])]
        err = (pred[fid]["energy_pred"] - pred[fid]["energy_ref"]) / KCAL_MOL_EV
        assert len(err) == len(labelled)
        squares, counted = 0.0, 0
        for code in np.unique(codes[labelled]):
            e = err[codes[labelled] == code]
            if len(e) >= 2:
                squares += float(((e - e.mean()) ** 2).sum())
                counted += len(e)
        assert metrics[fid]["n_relative"] == counted > 0
        assert metrics[fid]["relative_rmse_kcal_mol"] == pytest.approx(np.sqrt(squares / counted), rel=1e-9)
        # the offsets removed: below the total-energy RMSE, which carries them
        assert metrics[fid]["relative_rmse_kcal_mol"] < metrics[fid]["energy_rmse_kcal_mol"]
    # the training run reports the same column for its own test split (float32 there)
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    with np.load(run_dir / "split.npz") as npz:
        again, _ = evaluate(str(run_dir / "model.pt"), data, npz["test"])
    for fid in data.fidelities:
        assert saved[fid]["n_relative"] == again[fid]["n_relative"] > 0
        assert saved[fid]["relative_rmse_kcal_mol"] == pytest.approx(again[fid]["relative_rmse_kcal_mol"], rel=1e-3)
    plain, _ = evaluate(str(run_dir / "model.pt"), data, rows, molecule_key=None)
    assert "relative_rmse_kcal_mol" not in plain["dft"]
    argv = ["--model", str(run_dir / "model.pt"), "--data", str(REFERENCE_H5), "--fidelity", DFT]
    assert eval_main(argv) == 0
    assert "relE RMSE" in capsys.readouterr().out
    assert eval_main([*argv, "--molecule-key", "no_such_column"]) == 2
    assert "'no_such_column'" in capsys.readouterr().err


def test_eval_lists_each_molecules_relative_error_worst_first(run_dir, capsys):
    """--per-molecule: each molecule's relE, recomputed here by hand from the predictions,
    worst first, and pooling them back (weighted by structures) gives the table's relE; the
    CLI prints the worst N and the JSON holds every molecule."""
    from mfcalc.data import parse_fidelity
    from mfcalc.data.dataset import load_data
    from mfcalc.evaluate import evaluate
    from mfcalc.units import KCAL_MOL_EV

    data = load_data([str(REFERENCE_H5)], [parse_fidelity(DFT), parse_fidelity(CC)])
    rows = np.arange(0, len(data), 2)
    metrics, pred = evaluate(str(run_dir / "model.pt"), data, rows, predictions=True, per_molecule=True)
    codes, names = data.groups["smiles"]
    for k, fid in enumerate(data.fidelities):
        listed = metrics[fid]["molecules"]
        values = [m["relative_rmse_kcal_mol"] for m in listed]
        assert len(listed) >= 2 and values == sorted(values, reverse=True)
        labelled = rows[np.isfinite(data.energy[rows, k])]
        err = (pred[fid]["energy_pred"] - pred[fid]["energy_ref"]) / KCAL_MOL_EV
        by_name = {}
        for code in np.unique(codes[labelled]):
            e = err[codes[labelled] == code]
            if len(e) >= 2:
                by_name[str(names[code])] = (len(e), float(np.sqrt(((e - e.mean()) ** 2).mean())))
        listed_by_name = {m["molecule"]: (m["n"], m["relative_rmse_kcal_mol"]) for m in listed}
        assert listed_by_name == {name: (n, pytest.approx(v, rel=1e-9)) for name, (n, v) in by_name.items()}
        pooled = sum(m["n"] * m["relative_rmse_kcal_mol"] ** 2 for m in listed) / sum(m["n"] for m in listed)
        assert np.sqrt(pooled) == pytest.approx(metrics[fid]["relative_rmse_kcal_mol"], rel=1e-9)
    assert "molecules" not in evaluate(str(run_dir / "model.pt"), data, rows)[0]["dft"]
    out = run_dir / "per_molecule.json"
    argv = ["--model", str(run_dir / "model.pt"), "--data", str(REFERENCE_H5), "--fidelity", DFT]
    assert eval_main([*argv, "--per-molecule", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())["dft"]["molecules"]
    assert len(saved) > 2 and f"2 of {len(saved)} molecules" in printed
    shown = [line.split()[-1] for line in printed.splitlines()[-2:]]
    assert shown == [m["molecule"] for m in saved[:2]]
    assert eval_main([*argv, "--per-molecule", "-1"]) == 2
    assert "--per-molecule" in capsys.readouterr().err
