"""Query by committee: a structure the committee disputes is picked; caps, duplicates and seeds hold."""

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms

from conftest import REFERENCE_H5
from mfcalc.cli.select import main as select_main
from mfcalc.models import default_model_path
from mfcalc.select import choose, committee_scores, read_candidates

METHANE = Atoms(
    "CH4",
    positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]],
    info={"smiles": "C"},
)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """20 ethanol snapshots the model knows well, plus a planted one it cannot know (C-O at 2.1 A), twice."""
    with h5py.File(REFERENCE_H5) as f:
        g = f["C2H6O1"]
        rows = np.nonzero(g["smiles"][()] == b"CCO")[0][:20]
        frames = [
            Atoms(numbers=g["atomic_numbers"][()], positions=g["coordinates"][k], info={"smiles": "CCO"}) for k in rows
        ]
    planted = frames[0].copy()
    z = planted.numbers
    c, o = np.nonzero(z == 6)[0][1], np.nonzero(z == 8)[0][0]  # stretch an O away from its carbon
    bonded = c if np.linalg.norm(planted.positions[o] - planted.positions[c]) < 1.6 else np.nonzero(z == 6)[0][0]
    axis = planted.positions[o] - planted.positions[bonded]
    planted.positions[o] = planted.positions[bonded] + 2.1 * axis / np.linalg.norm(axis)
    frames += [planted, planted.copy()]
    path = tmp_path_factory.mktemp("sel") / "cand.extxyz"
    ase.io.write(path, frames)
    return path


def test_the_disputed_structure_is_picked_first_and_only_once(candidates):
    data = read_candidates([str(candidates)])
    scores = committee_scores(default_model_path(), data, "spread")
    assert np.argmax(scores.score) in (20, 21) and scores.score[20] > 3 * np.median(scores.score[:20])
    picked = choose(scores.score, data, 3)
    assert picked[0] in (20, 21) and not ({20, 21} <= set(picked))  # the copy is a duplicate
    assert len(choose(scores.score, data, 10, per_molecule=4)) == 4  # one molecule: the cap holds


def test_scoring_reports_progress_to_the_end(candidates):
    data = read_candidates([str(candidates)])
    lines = []
    committee_scores(default_model_path(), data, "force-spread", batch_size=8, progress=lines.append)
    assert lines[0].endswith(f"8/{len(data)} candidates scored by force-spread")
    assert lines[-1].endswith(f"{len(data)}/{len(data)} candidates scored by force-spread")


def test_heads_criterion_removes_the_element_offset(candidates):
    data = read_candidates([str(candidates)])
    scores = committee_scores(default_model_path(), data, "heads:cc,dft")
    assert np.isfinite(scores.score).all() and np.argmax(scores.score) in (20, 21)


def test_ties_are_broken_by_the_seed_reproducibly(candidates):
    data = read_candidates([str(candidates)])
    flat = np.ones(len(data))
    a, b, c = (choose(flat, data, 5, seed=s, min_distance_change=0.0) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert list(a) != list(c)


def test_command_writes_the_picks_and_a_report(candidates, tmp_path, capsys):
    out, rep = tmp_path / "picked.extxyz", tmp_path / "report.json"
    assert (
        select_main(
            [
                str(candidates),
                "--model",
                default_model_path(),
                "--n",
                "2",
                "--out",
                str(out),
                "--report",
                str(rep),
                "--compare-model",
                default_model_path(),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "current" in table and "baseline" in table and "selected" in table
    picked = ase.io.read(out, index=":")
    assert len(picked) == 2 and picked[0].info["candidate"] in (20, 21) and picked[0].info["smiles"] == "CCO"


def test_bad_requests_are_clear_errors(candidates, tmp_path, capsys):
    base = [str(candidates), "--model", default_model_path(), "--n", "2", "--out", str(tmp_path / "x.extxyz")]
    assert select_main([*base, "--by", "entropy"]) == 2
    assert "unknown selection criterion 'entropy'" in capsys.readouterr().err
    assert select_main([*base, "--by", "heads:cc,mp2"]) == 2
    assert "unknown fidelity 'mp2'" in capsys.readouterr().err
    assert select_main([str(candidates), "--model", default_model_path(), "--n", "2"]) == 2
    assert "--out FILE is needed" in capsys.readouterr().err


def test_a_spread_needs_an_ensemble(candidates, tmp_path):
    from mfcalc import export
    from mfcalc.model import MultiFidelityHipnn
    from mfcalc.model.ensemble import Ensemble

    single = Ensemble([MultiFidelityHipnn([1, 6, 8], ["cc"], n_features=4, n_sensitivities=3)])
    path = tmp_path / "one.pt"
    export.save(single, str(path), export.build_metadata(single))
    with pytest.raises(ValueError, match="needs an ensemble"):
        committee_scores(str(path), read_candidates([str(candidates)]), "spread")
    assert np.isfinite(committee_scores(str(path), read_candidates([str(candidates)]), "heads:cc,cc").score).all()


def test_candidates_already_labelled_at_the_level_are_left_out(candidates, tmp_path, capsys):
    from mfcalc.label.store import LabelStore

    frames = ase.io.read(candidates, index=":")
    store_path = tmp_path / "labels.h5"
    store = LabelStore(str(store_path))
    planted = store.add(frames[20].numbers, frames[20].positions, smiles="CCO")
    store.record(planted, "wb97x_dz", -155.0, None, 1.0)  # the disputed geometry is labelled already
    store.record(store.add(frames[0].numbers, frames[0].positions), "gfn2_xtb", -15.0, None, 0.1)
    store.close()
    out = tmp_path / "picked.extxyz"
    argv = [str(candidates), "--model", default_model_path(), "--n", "2", "--out", str(out)]
    assert select_main([*argv, "--skip-labelled", f"{store_path}:wb97x_dz"]) == 0
    assert "2 candidate(s) already have wb97x_dz" in capsys.readouterr().out  # both copies
    assert not {a.info["candidate"] for a in ase.io.read(out, index=":")} & {20, 21}
    assert select_main([*argv, "--skip-labelled", "nofile"]) == 2
    assert "FILE.h5:LEVEL" in capsys.readouterr().err


def test_relaxed_keeps_only_candidates_whose_stored_forces_are_small(candidates, tmp_path, capsys):
    """The committee disputes the planted structure most; --relaxed leaves only the candidates
    whose GFN2-xTB forces in the label file are below FMAX (eV/A, the file holds Hartree/A)."""
    from ase.units import Hartree

    from mfcalc.label.store import LabelStore

    frames = ase.io.read(candidates, index=":")
    store_path = tmp_path / "xtb.h5"
    store = LabelStore(str(store_path))
    for k, atoms in enumerate(frames[:21]):  # frames 3 and 7 relaxed (0.01 eV/A), the rest not (0.5)
        size = 0.01 if k in (3, 7) else 0.5
        forces = np.full((len(atoms), 3), size / Hartree)
        forces[0, 0] = -size / Hartree
        store.record(store.add(atoms.numbers, atoms.positions, smiles="CCO"), "gfn2_xtb", -15.0, forces, 0.1)
    store.close()
    out = tmp_path / "picked.extxyz"
    argv = [str(store_path), "--model", default_model_path(), "--n", "5", "--out", str(out)]
    assert select_main([*argv, "--relaxed", "gfn2_xtb:0.05"]) == 0
    assert "2 candidate(s) relaxed at gfn2_xtb" in capsys.readouterr().out
    picked = ase.io.read(out, index=":")
    relaxed_positions = [frames[3].positions, frames[7].positions]
    assert len(picked) == 2
    for atoms in picked:
        assert any(np.allclose(np.sort(atoms.positions, axis=0), np.sort(x, axis=0)) for x in relaxed_positions)
    assert select_main([*argv, "--relaxed", "gfn2_xtb:1.0"]) == 0  # everything below 1 eV/A: 5 picked
    assert len(ase.io.read(out, index=":")) == 5
    capsys.readouterr()
    assert select_main([*argv, "--relaxed", "wb97x_dz:0.05"]) == 2
    assert "no candidate file is an HDF5 label file with wb97x_dz.forces" in capsys.readouterr().err
    assert select_main([*argv, "--relaxed", "gfn2_xtb"]) == 2
    assert "LEVEL:FMAX" in capsys.readouterr().err


def test_energy_criterion_picks_each_molecules_highest_stored_energies_first(candidates, tmp_path, capsys):
    """--by energy:LEVEL ranks by the stored energy above the molecule's lowest, not by the
    committee: ethanol frames 5 and 9 lie highest (1.0 and 0.8 eV up), methane's second frame
    0.5 eV above its first; the planted structure, whose spread is largest, lies low."""
    from mfcalc.label.store import LabelStore

    frames = ase.io.read(candidates, index=":")
    store_path = tmp_path / "xtb.h5"
    store = LabelStore(str(store_path))
    energy = {5: 1.0, 9: 0.8}  # eV above ethanol's lowest (-15 eV); the rest within 0.1
    for k, atoms in enumerate(frames[:21]):
        e = -15.0 + energy.get(k, 0.01 * (k % 10))
        store.record(store.add(atoms.numbers, atoms.positions, smiles="CCO"), "gfn2_xtb", e / 27.211386, None, 0.1)
    far = METHANE.copy()
    far.positions *= 1.1
    for atoms, e in ((METHANE, -8.0), (far, -7.5)):  # methane's energies are far below ethanol's lowest
        store.record(store.add(atoms.numbers, atoms.positions, smiles="C"), "gfn2_xtb", e / 27.211386, None, 0.1)
    store.close()
    out = tmp_path / "picked.extxyz"
    argv = [str(store_path), "--model", default_model_path(), "--out", str(out), "--by", "energy:gfn2_xtb"]
    assert select_main([*argv, "--n", "3", "--per-molecule", "2"]) == 0
    picked = ase.io.read(out, index=":")
    assert [a.info["smiles"] for a in picked] == ["CCO", "C", "CCO"]  # labelling order: passes over molecules
    assert np.allclose(picked[0].info["score"], 1.0, atol=1e-6) and np.allclose(picked[2].info["score"], 0.8, atol=1e-6)
    assert np.allclose(picked[1].info["score"], 0.5, atol=1e-6)
    assert np.allclose(np.sort(picked[1].positions, axis=0), np.sort(far.positions, axis=0))  # the store's atom order
    assert np.allclose(np.sort(picked[0].positions, axis=0), np.sort(frames[5].positions, axis=0))
    capsys.readouterr()
    assert select_main([*argv[:-1], "energy:wb97x_dz", "--n", "3"]) == 2
    assert "no candidate file is an HDF5 label file with wb97x_dz.energy" in capsys.readouterr().err
    assert select_main([str(candidates), *argv[1:], "--n", "3"]) == 2  # extxyz: no stored energies
    capsys.readouterr()
    assert select_main([*argv[:-1], "energy:", "--n", "3"]) == 2
    assert "names a level" in capsys.readouterr().err


def test_structures_without_a_smiles_count_per_formula(candidates):
    data = read_candidates([str(candidates)])
    codes, names = data.groups["smiles"]
    data.groups["smiles"] = (codes, ["" for _ in names])  # as a file whose SMILES were lost
    picked = choose(np.arange(len(data), dtype=float), data, 10, per_molecule=3, min_distance_change=0.0)
    assert len(picked) == 3  # one formula, C2H6O: the cap still holds


def test_picks_come_in_passes_over_the_molecules_so_any_prefix_is_diverse():
    """Scores sorted alone put all of molecule A's picks first; labelling that stops after a
    few then covers one molecule.  Pass k holds every molecule's k-th best, by score."""
    from mfcalc.select import labelling_order

    picked = np.array([10, 11, 12, 20, 13, 30, 21])  # best first
    molecule = np.empty(40, dtype=object)
    molecule[10:14], molecule[20:22], molecule[30] = "A", "B", "C"
    assert labelling_order(picked, molecule).tolist() == [10, 20, 30, 11, 21, 12, 13]


def test_max_heavy_atoms_leaves_out_larger_molecules(candidates, tmp_path, capsys):
    """Ethanol has 3 heavy atoms; a methane added to the pool has 1. With --max-heavy-atoms 1
    only the methane can be picked, although the committee disputes the planted ethanol most."""
    frames = ase.io.read(candidates, index=":")
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, [*frames, METHANE])
    assert list(read_candidates([str(pool)]).heavy_atoms) == [3] * len(frames) + [1]
    out = tmp_path / "picked.extxyz"
    argv = [str(pool), "--model", default_model_path(), "--n", "3", "--out", str(out), "--min-distance-change", "0"]
    assert select_main([*argv, "--max-heavy-atoms", "1"]) == 0
    assert f"1 of {len(frames) + 1} candidate(s) with at most 1 heavy atoms" in capsys.readouterr().out
    picked = ase.io.read(out, index=":")
    assert [a.get_chemical_formula() for a in picked] == ["CH4"]
    assert picked[0].info["candidate"] == len(frames)  # numbered as in the pool, not in the kept subset
    assert select_main([*argv, "--max-heavy-atoms", "3"]) == 0
    assert len(ase.io.read(out, index=":")) == 3
    capsys.readouterr()
    assert select_main([*argv, "--max-heavy-atoms", "0"]) == 2
    assert "--max-heavy-atoms wants N >= 1" in capsys.readouterr().err


def test_smarts_keeps_only_molecules_with_the_motif(candidates, tmp_path, capsys):
    """The pool: the ethanol snapshots (an O-H on a CH2: '[OX2H]-[CX4]') and a methane (none).
    With --smarts only ethanol can be picked, numbered as in the pool, after --max-heavy-atoms;
    a pattern nothing matches, or one RDKit cannot read, is a clear error."""
    pytest.importorskip("rdkit")
    frames = ase.io.read(candidates, index=":")
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, [METHANE, *frames])
    out = tmp_path / "picked.extxyz"
    argv = [str(pool), "--model", default_model_path(), "--n", "30", "--out", str(out), "--min-distance-change", "0"]
    assert select_main([*argv, "--smarts", "[OX2H]-[CX4]"]) == 0
    assert (
        f"{len(frames)} of {len(frames) + 1} candidate(s), 1 molecule(s), match [OX2H]-[CX4]" in capsys.readouterr().out
    )
    picked = ase.io.read(out, index=":")
    assert len(picked) == len(frames) and {a.get_chemical_formula() for a in picked} == {"C2H6O"}
    assert sorted(a.info["candidate"] for a in picked) == list(range(1, len(frames) + 1))  # pool numbering
    assert select_main([*argv, "--smarts", "[CX4]", "--max-heavy-atoms", "1", "--n", "3"]) == 0
    assert [a.get_chemical_formula() for a in ase.io.read(out, index=":")] == ["CH4"]
    capsys.readouterr()
    assert select_main([*argv, "--smarts", "[Cl]"]) == 2
    assert "no candidate molecule contains [Cl]" in capsys.readouterr().err
    assert select_main([*argv, "--smarts", "[C"]) == 2
    assert "cannot read the pattern '[C'" in capsys.readouterr().err


def test_fill_to_tops_up_each_molecule_counting_what_is_labelled(candidates, tmp_path, capsys):
    """A coverage round.  The pool: the 22 ethanol snapshots and 10 methanol ones.  The label
    files hold 3 ethanol geometries at wB97X (one in each of two files, one in both: counted
    once) and 6 methanols at GFN2-xTB only.  With --fill-to 5 ethanol gets 2 picks (5 in all),
    methanol 5; a methanol store at the level makes it full, and it gets none."""
    from mfcalc.label.store import LabelStore

    frames = ase.io.read(candidates, index=":")
    with h5py.File(REFERENCE_H5) as f:
        g = f["C1H4O1"]
        methanol = [
            Atoms(numbers=g["atomic_numbers"][()], positions=g["coordinates"][k], info={"smiles": "CO"})
            for k in range(10)
        ]
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, [*frames, *methanol])
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path, rows in ((a, (0, 1)), (b, (1, 2))):
        store = LabelStore(str(path))
        for k in rows:
            store.record(store.add(frames[k].numbers, frames[k].positions, smiles="CCO"), "wb97x_dz", -155.0, None, 1.0)
        for m in methanol[:6]:
            store.record(store.add(m.numbers, m.positions, smiles="CO"), "gfn2_xtb", -8.0, None, 0.1)
        store.close()
    out = tmp_path / "picked.extxyz"
    argv = [str(pool), "--model", default_model_path(), "--n", "30", "--out", str(out), "--min-distance-change", "0"]
    skip = ["--skip-labelled", f"{a}:wb97x_dz", "--skip-labelled", f"{b}:wb97x_dz"]
    assert select_main([*argv, *skip, "--fill-to", "5"]) == 0
    assert "2 molecule(s) with candidates left have fewer than 5 labels" in capsys.readouterr().out
    picked = [p.info["smiles"] for p in ase.io.read(out, index=":")]
    assert picked.count("CCO") == 2 and picked.count("CO") == 5
    assert select_main([*argv, *skip, "--fill-to", "5", "--per-molecule", "1"]) == 0  # both caps hold
    assert sorted(p.info["smiles"] for p in ase.io.read(out, index=":")) == ["CCO", "CO"]
    assert select_main([*argv, *skip, "--skip-labelled", f"{a}:gfn2_xtb", "--fill-to", "5"]) == 0
    assert {p.info["smiles"] for p in ase.io.read(out, index=":")} == {"CCO"}  # 6 methanols at gfn2_xtb: full
    capsys.readouterr()
    assert select_main([*argv, "--fill-to", "5"]) == 2
    assert "--fill-to counts the labels of the --skip-labelled files" in capsys.readouterr().err
    assert select_main([*argv, *skip, "--fill-to", "0"]) == 2
    assert "--fill-to wants K >= 1" in capsys.readouterr().err


def test_fill_to_with_relaxed_counts_the_relaxed_labels_only(candidates, tmp_path, capsys):
    """Frames 3 and 7 of the ethanol pool are relaxed (GFN2-xTB forces 0.01 eV/A), the rest not.
    Labelled at wB97X: frame 3 (relaxed) and frames 0-1 (hot).  Topping the relaxed stratum up
    to 2 picks frame 7 alone: the hot labels do not count there (counted, ethanol would be full)."""
    from ase.units import Hartree

    from mfcalc.label.store import LabelStore

    frames = ase.io.read(candidates, index=":")
    xtb, dft = tmp_path / "xtb.h5", tmp_path / "dft.h5"
    store = LabelStore(str(xtb))
    for k, atoms in enumerate(frames[:20]):
        forces = np.full((len(atoms), 3), (0.01 if k in (3, 7) else 0.5) / Hartree)
        store.record(store.add(atoms.numbers, atoms.positions, smiles="CCO"), "gfn2_xtb", -15.0, forces, 0.1)
    store.close()
    labels = LabelStore(str(dft))
    for k in (0, 1, 3):
        labels.record(labels.add(frames[k].numbers, frames[k].positions, smiles="CCO"), "wb97x_dz", -155.0, None, 1.0)
    labels.close()
    out = tmp_path / "picked.extxyz"
    argv = [str(xtb), "--model", default_model_path(), "--n", "10", "--out", str(out), "--relaxed", "gfn2_xtb:0.05"]
    assert select_main([*argv, "--skip-labelled", f"{dft}:wb97x_dz", "--fill-to", "2"]) == 0
    (picked,) = ase.io.read(out, index=":")
    assert np.allclose(np.sort(picked.positions, axis=0), np.sort(frames[7].positions, axis=0), atol=1e-5)
    assert select_main([*argv, "--skip-labelled", f"{dft}:wb97x_dz", "--fill-to", "1"]) == 0
    assert "picked 0" in capsys.readouterr().out  # frame 3 fills it
