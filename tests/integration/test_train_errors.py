"""Bad input to mfcalc-train / mfcalc-eval: a one-line error, exit status 2, no traceback."""

import subprocess
import sys

import h5py
import numpy as np

from conftest import REFERENCE_H5

DFT = "dft=wb97x_dz.energy,wb97x_dz.forces"


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "mfcalc.train", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def check_clean_error(rc, text, *needles):
    assert rc == 2, text
    assert "Traceback" not in text, text
    assert "mfcalc-train: error:" in text
    for n in needles:
        assert n in text, text


def test_unknown_key_in_fidelity(tmp_path):
    rc, text = run("--data", str(REFERENCE_H5), "--fidelity", "cc=ccsd(t)_tz.energy", "--out", str(tmp_path / "o"))
    check_clean_error(rc, text, "'ccsd(t)_tz.energy'", "wb97x_dz.energy")


def test_no_structure_labelled_for_a_fidelity(tmp_path):
    path = tmp_path / "nolabel.h5"
    with h5py.File(REFERENCE_H5) as src, h5py.File(path, "w") as dst:
        for name in ("C1H4", "H2O1", "C2H6"):
            g = dst.create_group(name)
            for k in ("atomic_numbers", "coordinates", "wb97x_dz.energy", "smiles"):
                g[k] = src[name][k][()]
            g["ccsd(t)_dz.energy"] = np.full(src[name]["coordinates"].shape[0], np.nan)
    rc, text = run(
        "--data",
        str(path),
        "--fidelity",
        DFT.split(",")[0],
        "--fidelity",
        "cc=ccsd(t)_dz.energy",
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "1",
    )
    check_clean_error(rc, text, "no structure is labelled with an energy for fidelity 'cc'")


def test_split_leaving_an_empty_set(tmp_path):
    path = tmp_path / "one_molecule.h5"
    with h5py.File(REFERENCE_H5) as src, h5py.File(path, "w") as dst:
        src.copy(src["C1H4"], dst, name="C1H4")
    rc, text = run(
        "--data", str(path), "--fidelity", DFT, "--out", str(tmp_path / "o"), "--split-by", "smiles", "--epochs", "1"
    )
    check_clean_error(rc, text, "split is empty", "1 groups")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    rc, text = run("--data", str(REFERENCE_H5), "--fidelity", DFT, "--out", str(blocker / "sub"), "--epochs", "1")
    check_clean_error(rc, text, "cannot write to output directory")


def test_missing_data_file_and_bad_binding(tmp_path):
    rc, text = run("--data", str(tmp_path / "missing.h5"), "--fidelity", DFT, "--out", str(tmp_path / "o"))
    check_clean_error(rc, text, "missing.h5")
    rc, text = run("--data", str(REFERENCE_H5), "--fidelity", "dft", "--out", str(tmp_path / "o"))
    check_clean_error(rc, text, "NAME=ENERGY_KEY")
    rc, text = run(
        "--data", str(REFERENCE_H5), "--fidelity", DFT, "--out", str(tmp_path / "o"), "--loss-weight", "cc:energy=1"
    )
    check_clean_error(rc, text, "--loss-weight names fidelity 'cc'")
    rc, text = run(
        "--data", str(REFERENCE_H5), "--fidelity", DFT, "--out", str(tmp_path / "o"), "--loss-weight", "dft:relative=x"
    )
    check_clean_error(rc, text, "'x' is not a number")
    rc, text = run(
        "--data", str(REFERENCE_H5), "--fidelity", DFT, "--out", str(tmp_path / "o"), "--epochs", "1",
        "--loss-weight", "dft:relative=1", "--molecule-key", "no_such_column",
    )  # fmt: skip
    check_clean_error(rc, text, "'no_such_column'", "molecule_key")


def test_resume_without_checkpoint(tmp_path):
    rc, text = run("--data", str(REFERENCE_H5), "--fidelity", DFT, "--out", str(tmp_path / "o"), "--resume")
    check_clean_error(rc, text, "no checkpoint to resume from")


def test_eval_errors(tmp_path):
    notmodel = tmp_path / "model.pt"
    notmodel.write_bytes(b"\x00not a zip")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mfcalc.cli.eval",
            "--model",
            str(notmodel),
            "--data",
            str(REFERENCE_H5),
            "--fidelity",
            DFT,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not a TorchScript model file" in proc.stderr and "Traceback" not in proc.stderr
