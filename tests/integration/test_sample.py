"""mfcalc-sample with GFN2-xTB: minima, relaxed torsion scans, normal modes, MD; filters, seeds, resume."""

import ase.io
import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

from mfcalc.cli.sample import main as sample_main  # noqa: E402
from mfcalc.data.dataset import read_structures  # noqa: E402


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "ethanol.extxyz"
    assert (
        sample_main(
            [
                "CCO",
                "--out",
                str(out),
                "--conformers",
                "--torsions",
                "--normal-modes",
                "300,900",
                "--md",
                "600",
                "--per-temperature",
                "3",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return out


def kinds(path):
    return [a.info["kind"] for a in ase.io.read(path, index=":")]


def test_every_sampler_contributes_and_the_file_is_labelling_input(ethanol):
    frames = ase.io.read(ethanol, index=":")
    k = kinds(ethanol)
    n_min = k.count("minimum")
    assert n_min == 3  # anti and the two gauche rotamers of the OH group
    assert k.count("torsion") == 2 * 11  # two rotatable bonds (CH3 and OH rotors), 30-degree steps
    assert k.count("normal_mode") == n_min * 2 * 3 and k.count("md") == n_min * 3
    assert all(a.info["smiles"] == "CCO" and a.info["engine"] == "gfn2_xtb" for a in frames)
    data, charge, multiplicity = read_structures(str(ethanol))  # what mfcalc-label reads
    assert len(data) == len(frames) and (charge == 0).all() and (multiplicity == 1).all()


def test_relaxed_scans_hold_the_dihedral_and_step_through_360_degrees(ethanol):
    scans = [a for a in ase.io.read(ethanol, index=":") if a.info["kind"] == "torsion"]
    for name in {a.info["torsion"] for a in scans}:
        points = [a for a in scans if a.info["torsion"] == name]
        i, j, k, m = map(int, name.split("-"))
        measured = np.array([a.get_dihedral(i, j, k, m) for a in points])
        recorded = np.array([a.info["angle"] for a in points])
        np.testing.assert_allclose(np.cos(np.radians(measured - recorded)), 1.0, atol=1e-4)
        steps = np.diff(np.unwrap(np.radians(measured)))
        np.testing.assert_allclose(np.degrees(steps), 30.0, atol=0.5)


def test_same_seed_same_samples_and_a_rerun_skips_finished_molecules(ethanol, tmp_path, capsys):
    again = tmp_path / "again.extxyz"
    args = [
        "CCO",
        "--out",
        str(again),
        "--conformers",
        "--torsions",
        "--normal-modes",
        "300,900",
        "--md",
        "600",
        "--per-temperature",
        "3",
        "--seed",
        "3",
    ]
    assert sample_main(args) == 0
    a, b = ase.io.read(ethanol, index=":"), ase.io.read(again, index=":")
    assert len(a) == len(b)
    np.testing.assert_allclose(np.stack([x.positions for x in a]), np.stack([x.positions for x in b]), atol=1e-8)
    capsys.readouterr()
    assert sample_main(args) == 0
    assert "done in an earlier run" in capsys.readouterr().err


def test_max_minima_keeps_the_lowest_and_progress_is_reported(ethanol, tmp_path, capsys):
    """--max-minima N keeps the N lowest of the full search's minima (a floppy drug-sized molecule
    has dozens, each with a Hessian and its normal-mode samples), and a molecule that takes
    minutes says which phase it is in."""
    out = tmp_path / "capped.extxyz"
    capsys.readouterr()
    args = ["CCO", "--out", str(out), "--conformers", "--torsions", "--normal-modes", "300", "--md", "600"]
    assert sample_main(args + ["--per-temperature", "2", "--seed", "3", "--max-minima", "1"]) == 0
    err = capsys.readouterr().err
    assert "1 minima" in err and "torsion scan 2/2" in err and "MD from minimum 1" in err
    full = [a for a in ase.io.read(ethanol, index=":") if a.info["kind"] == "minimum"]
    capped = [a for a in ase.io.read(out, index=":") if a.info["kind"] == "minimum"]
    assert len(full) == 3 and len(capped) == 1
    assert capped[0].info["relative_kcal_mol"] == 0.0 == full[0].info["relative_kcal_mol"]
    np.testing.assert_allclose(capped[0].positions, full[0].positions, atol=1e-8)
    assert kinds(out).count("normal_mode") == 2  # around the one minimum only
    assert sample_main(["CCO", "--out", str(out), "--conformers", "--max-minima", "0"]) == 2
    assert "--max-minima must be at least 1" in capsys.readouterr().err


def test_filters_skip_with_a_reason_and_bad_input_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "f.extxyz"
    assert sample_main(["CBr", "CCCCO", "C", "--out", str(out), "--conformers", "--max-heavy-atoms", "3"]) == 0
    err = capsys.readouterr().err
    assert "CBr: skipped (element(s) Br outside H, C, N, O, F, S, Cl)" in err
    assert "CCCCO: skipped (5 heavy atoms, more than --max-heavy-atoms 3)" in err
    assert {a.info["smiles"] for a in ase.io.read(out, index=":")} == {"C"}
    assert sample_main(["not_a_smiles((", "--out", str(out), "--conformers"]) == 2
    assert "neither a file nor a valid SMILES" in capsys.readouterr().err
    assert sample_main(["C", "--out", str(out)]) == 2
    assert "nothing to sample" in capsys.readouterr().err
    bad_list = tmp_path / "bad.smi"
    bad_list.write_text("C\nC1CC\n")
    assert sample_main([str(bad_list), "--out", str(out), "--conformers"]) == 2
    assert "bad.smi: 'C1CC' is not a valid SMILES" in capsys.readouterr().err


def test_a_smiles_list_keeps_its_triple_bonds(tmp_path, capsys):
    """A list file once lost everything after '#': HCN was sampled as methane, acetonitrile as ethane."""
    smi = tmp_path / "nitriles.smi"
    smi.write_text("# two nitriles\nC#N\nCC#N  # acetonitrile\n")
    out = tmp_path / "n.extxyz"
    assert sample_main([str(smi), "--out", str(out), "--conformers"]) == 0
    frames = ase.io.read(out, index=":")
    assert {a.info["smiles"] for a in frames} == {"C#N", "CC#N"}
    assert sorted({a.get_chemical_formula() for a in frames}) == ["C2H3N", "CHN"]


def test_one_minimum_where_there_is_one(tmp_path):
    """Methane's 20 embedded conformers are one minimum (the heavy-atom RMSD of a single heavy atom
    once compared unaligned whole geometries and kept all of them), and fluoroethane's eclipsed
    stationary point is a saddle, not a second minimum."""
    out = tmp_path / "few.extxyz"
    assert sample_main(["C", "N", "CCF", "--out", str(out), "--conformers"]) == 0
    assert kinds(out).count("minimum") == 3


def test_a_molecule_whose_conformers_all_stop_at_saddles_still_gets_its_minima(tmp_path):
    """2-Chlorobenzoic acid: every embedded conformer stopped at a saddle point (GFN2-xTB) and the
    molecule got no sample at all; saddles are now pushed along their negative mode and optimised."""
    out = tmp_path / "acid.extxyz"
    assert sample_main(["OC(=O)c1ccccc1Cl", "--out", str(out), "--conformers"]) == 0
    minima = ase.io.read(out, index=":")
    assert len(minima) >= 1 and min(a.info["relative_kcal_mol"] for a in minima) == 0.0


def test_sampling_runs_on_one_thread_by_default_so_md_is_reproducible(tmp_path, monkeypatch):
    """GFN2-xTB's OpenMP sums change order between runs on several threads and MD amplifies it
    (0.09 A apart after a few hundred steps, measured). mfcalc-sample therefore runs the engine
    on one thread unless told otherwise, even in a process already running two, and restores
    the process's setting afterwards."""
    import torch

    import mfcalc.sample.run as run

    seen = []
    real = run.sample

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "sample", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outs = []
        for k, extra in enumerate([[], [], ["--threads", "2"]]):
            outs.append(tmp_path / f"md{k}.extxyz")
            argv = ["CC", "--out", str(outs[-1]), "--md", "900", "--per-temperature", "4", "--seed", "1"]
            assert sample_main(argv + extra) == 0
            assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 2]
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_a_relaxed_amide_scan_turns_the_whole_nh2_group_over_the_c_n_barrier(tmp_path):
    """Formamide's C-N scan: at the 90-degree point both N-H bonds stand out of the O=C-N
    plane (held one dihedral alone, the second hydrogen wagged back into the plane), and the
    highest point lies above 15 kcal/mol at GFN2-xTB (one half-turned NH2 gave 12)."""
    from ase.units import Hartree, kcal, mol

    from mfcalc.label.levels import get_level

    out = tmp_path / "formamide.extxyz"
    assert sample_main(["NC=O", "--out", str(out), "--conformers", "--torsions", "--seed", "0"]) == 0
    frames = ase.io.read(out, index=":")
    scan = [a for a in frames if a.info["kind"] == "torsion"]
    assert len(scan) == 11
    z = scan[0].numbers
    o, c, n = (int(np.flatnonzero(z == e)[0]) for e in (8, 6, 7))
    nh = [h for h in np.flatnonzero(z == 1) if scan[0].get_distance(n, h) < 1.2]

    def out_of_plane(atoms):  # |sin| of both O=C-N-H dihedrals
        return [abs(np.sin(np.radians(atoms.get_dihedral(o, c, n, h)))) for h in nh]

    quarter = min(scan, key=lambda a: abs(abs(np.sin(np.radians(a.info["angle"]))) - 1.0))
    assert min(out_of_plane(quarter)) > 0.5, out_of_plane(quarter)
    xtb = get_level("gfn2_xtb").compute
    minimum = min(xtb(a.numbers, a.positions, 0, 1, False)[0] for a in frames if a.info["kind"] == "minimum")
    highest = max(xtb(a.numbers, a.positions, 0, 1, False)[0] for a in scan)
    assert (highest - minimum) * Hartree / (kcal / mol) > 15.0


def test_tert_butylamine_scans_complete_with_every_point(tmp_path):
    """Holding every substituent of the four-connected carbon too once made ASE's FixInternals
    fail and end the whole sampling run; only a three-connected end's substituents are held."""
    out = tmp_path / "tbuNH2.extxyz"
    assert sample_main(["CC(C)(C)N", "--out", str(out), "--torsions", "--seed", "0"]) == 0
    scans = [a for a in ase.io.read(out, index=":") if a.info["kind"] == "torsion"]
    assert len({a.info["torsion"] for a in scans}) == 4 and len(scans) == 4 * 11


def test_a_scan_point_the_constraint_cannot_keep_is_skipped_not_fatal(tmp_path, monkeypatch):
    """ASE raises ValueError when FixInternals cannot keep the held dihedrals: that point is
    left out and the scan goes on."""
    from ase.optimize import BFGS

    calls = {"n": 0}
    run = BFGS.run

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("FixInternals.adjust_positions did not converge.")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(BFGS, "run", flaky)
    out = tmp_path / "methanol.extxyz"
    assert sample_main(["CO", "--out", str(out), "--torsions", "--seed", "0"]) == 0
    scans = [a for a in ase.io.read(out, index=":") if a.info["kind"] == "torsion"]
    assert calls["n"] >= 11 and len(scans) == 10
