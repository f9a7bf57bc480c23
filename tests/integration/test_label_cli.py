"""mfcalc-label end to end with GFN2-xTB: resumable after a real SIGKILL, parallel, clear on bad input."""

import signal
import subprocess
import sys
import time

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms

from conftest import REFERENCE_H5

pytest.importorskip("tblite")

from mfcalc.cli.label import main as label_main  # noqa: E402
from mfcalc.label.store import LabelStore  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """144 structures of seven molecules from the reference data, as extxyz."""
    frames = []
    with h5py.File(REFERENCE_H5) as f:
        for group in ("C1H4O1", "C2H6O1", "C2H4O1", "C3H6O1", "H2O2"):
            g = f[group]
            for k in range(min(30, len(g["coordinates"]))):
                a = Atoms(numbers=g["atomic_numbers"][()], positions=g["coordinates"][k])
                a.info["smiles"] = g["smiles"][k].decode()
                frames.append(a)
    path = tmp_path_factory.mktemp("inputs") / "in.extxyz"
    ase.io.write(path, frames)
    return path


def datasets(path):
    """Every dataset but the wall times, for comparing runs."""
    out = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.endswith(".seconds"):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "full.h5"
    assert label_main([str(inputs), "--levels", "gfn2_xtb", "--out", str(out)]) == 0
    return out


def test_labels_every_structure_with_wall_times(inputs, uninterrupted):
    with h5py.File(uninterrupted) as f:
        n = sum(len(f[g]["coordinates"]) for g in f)
        assert n == len(ase.io.read(inputs, index=":")) == 144
        g = f["C2H6O1"]
        assert np.isfinite(g["gfn2_xtb.energy"][()]).all() and np.isfinite(g["gfn2_xtb.forces"][()]).all()
        assert (g["gfn2_xtb.seconds"][()] > 0).all()
        assert g["smiles"][0] in (b"CCO", b"COC")


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """1,200 distinct rattled ethanol geometries: a few seconds of GFN2-xTB, long enough to kill mid-way."""
    with h5py.File(REFERENCE_H5) as f:
        g = f["C2H6O1"]
        base = Atoms(numbers=g["atomic_numbers"][()], positions=g["coordinates"][0])
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(1200):
        a = base.copy()
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
        frames.append(a)
    path = tmp_path_factory.mktemp("many") / "many.extxyz"
    ase.io.write(path, frames)
    full = path.parent / "full.h5"
    assert label_main([str(path), "--levels", "gfn2_xtb", "--out", str(full)]) == 0
    return path, full


def test_sigkill_and_restart_gives_the_uninterrupted_file(many, tmp_path):
    inputs, uninterrupted = many
    out = tmp_path / "killed.h5"
    journal = tmp_path / "killed.h5.journal"
    cmd = [
        sys.executable,
        "-m",
        "mfcalc.cli.label",
        str(inputs),
        "--levels",
        "gfn2_xtb",
        "--out",
        str(out),
        "--merge-seconds",
        "0.3",
    ]

    def journaled() -> int:  # the labeller merges and deletes its journal at any moment
        try:
            return journal.read_text().count('"kind": "label"')
        except FileNotFoundError:
            return 0

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and journaled() >= 20:
                break
            time.sleep(0.005)
        else:
            pytest.fail("labelling finished or stalled before it could be killed mid-way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with h5py.File(out) as f:  # the file left behind is complete and readable
        g = f["C2H6O1"]
        in_file = int(np.isfinite(g["gfn2_xtb.energy"][()]).sum()) if "gfn2_xtb.energy" in g else 0
    assert 20 <= in_file + journaled() < 1200  # killed mid-way, with finished work on disk
    assert label_main([str(inputs), "--levels", "gfn2_xtb", "--out", str(out)]) == 0
    assert not journal.exists()
    assert_same(datasets(uninterrupted), datasets(out))


def test_two_workers_give_the_same_file(inputs, uninterrupted, tmp_path):
    out = tmp_path / "two.h5"
    assert label_main([str(inputs), "--levels", "gfn2_xtb", "--out", str(out), "--workers", "2"]) == 0
    assert_same(datasets(uninterrupted), datasets(out))


def test_bad_structures_are_recorded_skips_and_bad_input_a_clear_error(tmp_path, capsys):
    frames = [
        Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [0.0, 0.05, 0]]),  # H on top of O
        Atoms("HAt", positions=[[0, 0, 0], [0, 0, 1.7]]),  # astatine: beyond 6-31G*
        Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
    ]
    path = tmp_path / "odd.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / "odd.h5"
    assert label_main([str(path), "--levels", "gfn2_xtb,wb97x_dz", "--no-forces", "wb97x_dz", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "0.05 A apart (overlapping atoms)" in err and "element(s) At not available at wb97x_dz" in err
    with h5py.File(out) as f:
        messages = b" ".join(f["failures/message"][()]).decode()
        assert messages.count("overlapping") == 2 and "At not available" in messages
        assert np.isfinite(f["H2O1/wb97x_dz.energy"][()]).sum() == 1  # the good water was computed
    assert label_main([str(path), "--levels", "mp2", "--out", str(out)]) == 2
    assert "unknown level of theory 'mp2'; known: gfn2_xtb, wb97x_dz, ccsd(t)_dz" in capsys.readouterr().err
    junk = tmp_path / "junk.xyz"
    junk.write_text("not a structure file\n")
    assert label_main([str(junk), "--levels", "gfn2_xtb", "--out", str(out)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert label_main([str(tmp_path / "missing.xyz"), "--levels", "gfn2_xtb", "--out", str(out)]) == 2
    assert label_main([str(path), "--levels", "gfn2_xtb", "--forces", "wb97x_dz", "--out", str(out)]) == 2
    assert "not among --levels" in capsys.readouterr().err


def test_a_calculation_that_fails_is_recorded_and_the_batch_goes_on(tmp_path, capsys):
    """H2 with charge +1 has one electron: no closed shell, so PySCF refuses the molecule inside
    the calculation; the failure is recorded with its reason and the other structure is labelled."""
    pytest.importorskip("pyscf")
    frames = [
        Atoms("HH", positions=[[0, 0, 0], [0, 0, 0.74]], info={"charge": 1}),
        Atoms("HH", positions=[[0, 0, 0], [0, 0, 0.75]]),
    ]
    path = tmp_path / "h2.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / "h2.h5"
    assert label_main([str(path), "--levels", "wb97x_dz", "--no-forces", "wb97x_dz", "--out", str(out)]) == 0
    assert "wb97x_dz failed" in capsys.readouterr().err
    with h5py.File(out) as f:
        assert "PySCF cannot build the molecule" in f["failures/message"][0].decode()
        energies = f["H2/wb97x_dz.energy"][()]
        assert np.isnan(energies).sum() == 1 and np.isfinite(energies).sum() == 1
    # failures are final: a rerun does not try again unless asked
    assert label_main([str(path), "--levels", "wb97x_dz", "--no-forces", "wb97x_dz", "--out", str(out)]) == 0
    assert "0 need labels" in capsys.readouterr().err


def test_drop_unlabelled_removes_structures_taken_out_of_the_inputs_before_any_label(inputs, tmp_path, capsys):
    """A structure listed once and then removed from the input list before it was computed
    leaves no empty row behind with --drop-unlabelled; a labelled one stays."""
    frames = ase.io.read(inputs, ":")
    out = tmp_path / "out.h5"
    first = tmp_path / "first.extxyz"
    ase.io.write(first, frames[:2])
    assert label_main([str(first), "--levels", "gfn2_xtb", "--out", str(out)]) == 0
    store = LabelStore(str(out))
    store.add(frames[2].numbers, frames[2].positions + 0.05)  # listed, never computed
    store.close()
    assert len(LabelStore(str(out))) == 3
    second = tmp_path / "second.extxyz"
    ase.io.write(second, frames[1:2])  # the first structure is labelled, the placeholder is not
    assert label_main([str(second), "--levels", "gfn2_xtb", "--out", str(out), "--drop-unlabelled"]) == 0
    assert "dropped 1 unlabelled structure(s)" in capsys.readouterr().err
    with h5py.File(out) as f:
        n = sum(int(np.isfinite(f[g]["gfn2_xtb.energy"][()]).sum()) for g in f if g != "failures")
        rows = sum(len(f[g]["coordinates"]) for g in f if g != "failures")
    assert n == 2 and rows == 2
