"""tools/campaign.sh stages run as written, in a scratch copy of the repository layout."""

import os
import shutil
import subprocess
import sys

import ase.io
import h5py
import numpy as np
from ase.build import molecule
from ase.units import Hartree

from conftest import REFERENCE_H5, REPO
from mfcalc.label.store import LabelStore
from mfcalc.models import default_model_path


def scratch_repository(root):
    """tools/ and the two declaration files of data/, nothing else: the stage must find its way."""
    (root / "tools").mkdir()
    for name in ("campaign.sh", "campaign_data.sh"):
        shutil.copy(REPO / "tools" / name, root / "tools" / name)
    (root / "data" / "campaign").mkdir(parents=True)
    shutil.copy(REPO / "data" / "label_targets.txt", root / "data" / "label_targets.txt")
    (root / "data" / "training_files.txt").write_text("")


def run_stage(root, *args, **settings):
    """tools/campaign.sh ARGS with this Python's commands first on PATH; ``settings`` are extra
    environment variables (BY=..., COMMITTEE=...)."""
    env = {**os.environ, **settings, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(root / "tools" / "campaign.sh"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def reference_geometries(formula, smiles, n):
    """The first ``n`` (atomic numbers, positions) of one molecule in the reference data."""
    with h5py.File(REFERENCE_H5) as f:
        g = f[formula]
        rows = np.nonzero(g["smiles"][()] == smiles.encode())[0][:n]
        return [(g["atomic_numbers"][()], g["coordinates"][k]) for k in rows]


def same_geometry(atoms, x):
    """A pick is that geometry (the store may order atoms its own way: compare as sorted rows)."""
    return atoms.positions.shape == x.shape and np.allclose(
        np.sort(atoms.positions, axis=0), np.sort(x, axis=0), atol=1e-5
    )


def test_select_cc_relaxed_picks_relaxed_small_unlabelled_structures_only(tmp_path):
    """The candidate file holds 14 ethanol geometries (3 heavy atoms): 3 non-relaxed, one relaxed
    but already labelled at CCSD(T), 10 relaxed and new; and a relaxed benzene (6 heavy atoms).
    The stage may pick only the 10 new relaxed ethanols, at most 12 per molecule."""
    scratch_repository(tmp_path)
    campaign = tmp_path / "data" / "campaign"
    ethanol = reference_geometries("C2H6O1", "CCO", 14)
    benzene = molecule("C6H6")
    store = LabelStore(str(campaign / "campaign.h5"))
    for k, (z, x) in enumerate(ethanol):
        size = 0.5 if k < 3 else 0.01  # eV/A; the file holds Hartree/A
        forces = np.full((len(z), 3), size / Hartree)
        store.record(store.add(z, x, smiles="CCO"), "gfn2_xtb", -15.0, forces, 0.1)
    forces = np.full((len(benzene), 3), 0.01 / Hartree)
    store.record(store.add(benzene.numbers, benzene.positions, smiles="c1ccccc1"), "gfn2_xtb", -19.0, forces, 0.1)
    store.close()
    labelled = LabelStore(str(campaign / "cc.h5"))
    labelled.record(labelled.add(*ethanol[3], smiles="CCO"), "ccsd(t)_dz", -154.0, None, 10.0)
    labelled.close()
    shutil.copy(default_model_path(), campaign / "committee9.pt")

    done = run_stage(tmp_path, "select-cc-relaxed", "9", "50")
    assert done.returncode == 0, done.stderr
    assert "14 of 15 candidate(s) with at most 4 heavy atoms" in done.stdout
    assert "1 candidate(s) already have ccsd(t)_dz" in done.stdout
    picked = ase.io.read(campaign / "round9_cc.extxyz", index=":")
    assert (campaign / "round9_cc_report.json").exists()
    assert len(picked) == 10 and all(a.info["smiles"] == "CCO" for a in picked)
    new_relaxed = [x for _, x in ethanol[4:]]
    for atoms in picked:
        assert any(same_geometry(atoms, x) for x in new_relaxed)
    missing = run_stage(tmp_path, "select-cc-relaxed", "8", "5")  # no committee8.pt
    assert missing.returncode != 0 and "committee8.pt" in missing.stderr


def test_twist_stages_pick_up_to_three_per_molecule_of_the_scans_within_each_levels_size(tmp_path):
    """twist.h5 holds 6 ethanols (3 heavy atoms; one already labelled at wB97X), a benzene (6)
    and a benzene pair (12). The wB97X stage may pick 3 new ethanols and the benzene (up to 8
    heavy atoms); the CCSD(T) stage 3 ethanols only (up to 4)."""
    scratch_repository(tmp_path)
    campaign = tmp_path / "data" / "campaign"
    ethanol = reference_geometries("C2H6O1", "CCO", 6)
    pair = molecule("C6H6")  # two benzenes 5 A apart: 12 heavy atoms, beyond both stages
    pair += molecule("C6H6", positions=molecule("C6H6").positions + (0.0, 0.0, 5.0))
    others = [(molecule("C6H6"), "c1ccccc1"), (pair, "c1ccccc1.c1ccccc1")]
    store = LabelStore(str(campaign / "twist.h5"))
    for k, (z, x) in enumerate(ethanol):  # the later, the higher: ethanols 5 and 4 are the scan's top
        store.record(store.add(z, x, smiles="CCO"), "gfn2_xtb", -15.0 + 0.01 * k, np.zeros((len(z), 3)), 0.1)
    for atoms, smiles in others:
        store.record(
            store.add(atoms.numbers, atoms.positions, smiles=smiles), "gfn2_xtb", -19.0, np.zeros((len(atoms), 3)), 0.1
        )
    store.close()
    labelled = LabelStore(str(campaign / "dft.h5"))
    labelled.record(labelled.add(*ethanol[0], smiles="CCO"), "wb97x_dz", -154.0, np.zeros((9, 3)), 10.0)
    labelled.close()
    shutil.copy(default_model_path(), campaign / "committee9.pt")

    done = run_stage(tmp_path, "select-dft-twist", "9", "50")
    assert done.returncode == 0, done.stderr
    assert "1 candidate(s) already have wb97x_dz" in done.stdout
    picked = ase.io.read(campaign / "round9_dft.extxyz", index=":")
    assert sorted(a.info["smiles"] for a in picked) == ["CCO"] * 3 + ["c1ccccc1"]
    new = [x for _, x in ethanol[1:]]
    for atoms in (a for a in picked if a.info["smiles"] == "CCO"):
        assert any(same_geometry(atoms, x) for x in new)

    done = run_stage(tmp_path, "select-dft-twist", "9", "2", BY="energy:gfn2_xtb")  # the scan tops first
    assert done.returncode == 0 and "scored by energy:gfn2_xtb" in done.stdout, done.stderr
    picked = ase.io.read(campaign / "round9_dft.extxyz", index=":")
    for atoms, (_, x) in zip(picked, (ethanol[5], ethanol[4])):
        assert same_geometry(atoms, x)

    done = run_stage(tmp_path, "select-cc-twist", "9", "50")
    assert done.returncode == 0, done.stderr
    picked = ase.io.read(campaign / "round9_cc.extxyz", index=":")
    assert [a.info["smiles"] for a in picked] == ["CCO"] * 3 and (campaign / "round9_cc_report.json").exists()


def test_select_cc_fill_tops_up_every_small_molecule_counting_both_cc_stores(tmp_path):
    """campaign.h5 holds 8 ethanols, 7 methanols and a benzene (6 heavy atoms, beyond the stage).
    CCSD(T) labels: ethanols 0-1 in cc.h5, ethanol 2 and methanol 0 in mf_reference.h5.  With
    K = 5 the stage tops ethanol up with 2 new picks and methanol with 4, none already labelled."""
    scratch_repository(tmp_path)
    campaign = tmp_path / "data" / "campaign"
    ethanol, methanol = reference_geometries("C2H6O1", "CCO", 8), reference_geometries("C1H4O1", "CO", 7)
    benzene = molecule("C6H6")
    store = LabelStore(str(campaign / "campaign.h5"))
    for mol, smiles in ((ethanol, "CCO"), (methanol, "CO"), ([(benzene.numbers, benzene.positions)], "c1ccccc1")):
        for z, x in mol:
            store.record(store.add(z, x, smiles=smiles), "gfn2_xtb", -15.0, np.zeros((len(z), 3)), 0.1)
    store.close()
    for path, labelled in ((campaign / "cc.h5", ethanol[:2]), (tmp_path / "data" / "mf_reference.h5", ethanol[2:3])):
        cc = LabelStore(str(path))
        for z, x in labelled:
            cc.record(cc.add(z, x, smiles="CCO"), "ccsd(t)_dz", -154.0, None, 10.0)
        if path.name == "mf_reference.h5":
            cc.record(cc.add(*methanol[0], smiles="CO"), "ccsd(t)_dz", -115.0, None, 10.0)
        cc.close()
    shutil.copy(default_model_path(), campaign / "committee10.pt")

    done = run_stage(tmp_path, "select-cc-fill", "10", "5")
    assert done.returncode == 0, done.stderr
    assert "15 of 16 candidate(s) with at most 3 heavy atoms" in done.stdout
    assert "2 molecule(s) with candidates left have fewer than 5 labels" in done.stdout
    picked = ase.io.read(campaign / "round10_cc.extxyz", index=":")
    assert sorted(a.info["smiles"] for a in picked) == ["CCO"] * 2 + ["CO"] * 4
    labelled = [x for _, x in ethanol[:3]] + [methanol[0][1]]
    for atoms in picked:
        assert not any(same_geometry(atoms, x) for x in labelled)


def test_select_dft_relaxed_fill_tops_up_each_molecules_labelled_minima(tmp_path):
    """campaign.h5: 6 ethanols (4 relaxed), 3 relaxed methanols; twist.h5: a relaxed benzene pair
    (12 heavy atoms, beyond the stage).  dft.h5 holds one relaxed and one hot ethanol.  With
    K = 2 the stage picks one more relaxed ethanol and two methanols, none hot, none labelled;
    COMMITTEE names the committee file."""
    scratch_repository(tmp_path)
    campaign = tmp_path / "data" / "campaign"
    ethanol, methanol = reference_geometries("C2H6O1", "CCO", 6), reference_geometries("C1H4O1", "CO", 3)
    pair = molecule("C6H6")
    pair += molecule("C6H6", positions=molecule("C6H6").positions + (0.0, 0.0, 5.0))

    def record(store, z, x, smiles, size):  # forces of `size` eV/A; the file holds Hartree/A
        store.record(store.add(z, x, smiles=smiles), "gfn2_xtb", -15.0, np.full((len(z), 3), size / Hartree), 0.1)

    store = LabelStore(str(campaign / "campaign.h5"))
    for k, (z, x) in enumerate(ethanol):
        record(store, z, x, "CCO", 0.5 if k < 2 else 0.01)
    for z, x in methanol:
        record(store, z, x, "CO", 0.01)
    store.close()
    twist = LabelStore(str(campaign / "twist.h5"))
    record(twist, pair.numbers, pair.positions, "c1ccccc1.c1ccccc1", 0.01)
    twist.close()
    labelled = LabelStore(str(campaign / "dft.h5"))
    for z, x in (ethanol[0], ethanol[2]):  # one hot, one relaxed
        labelled.record(labelled.add(z, x, smiles="CCO"), "wb97x_dz", -154.0, np.zeros((9, 3)), 10.0)
    labelled.close()
    shutil.copy(default_model_path(), campaign / "committee10.pt")

    done = run_stage(tmp_path, "select-dft-relaxed-fill", "11", "2", COMMITTEE=str(campaign / "committee10.pt"))
    assert done.returncode == 0, done.stderr
    picked = ase.io.read(campaign / "round11_dft.extxyz", index=":")
    assert sorted(a.info["smiles"] for a in picked) == ["CCO", "CO", "CO"]
    (new,) = [a for a in picked if a.info["smiles"] == "CCO"]
    assert any(same_geometry(new, x) for _, x in ethanol[3:])
