"""The benchmark tools run end to end on a tiny budget (their numbers are not checked here)."""

import json
import re
import sys

import pytest

from conftest import REPO, SHARED, load_tool


def test_mfl_benchmark_prints_the_table_and_writes_json(tmp_path, capsys):
    tool = load_tool("mfl_benchmark")
    out = tmp_path / "mfl.json"
    rc = tool.main(
        [
            "--rows",
            "SF-cc/E",
            "MF-dft/EF-cc/E@10%",
            "SF-cc/E@10%",
            "--splits",
            "smiles",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--n-features",
            "6",
            "--n-sensitivities",
            "4",
            "--n-atom-layers",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "MF-dft/EF-cc/E@10%" in table and "grouped (unseen molecules)" in table
    assert "scored on the test split" in table
    doc = json.loads(out.read_text())
    runs = doc["results"]["smiles"]["MF-dft/EF-cc/E@10%"]
    assert len(runs) == 2 and all(r["forces_rmse"] is not None for r in runs)  # CCSD(T) forces scored


def test_mfl_benchmark_matrix_covers_the_issue_rows():
    names = {r.name for r in load_tool("mfl_benchmark").matrix()}
    assert {
        "SF-dft/E",
        "SF-dft/EF",
        "MF-xtb/E-dft/E",
        "MF-xtb/EF-dft/E",
        "MF-xtb/EF-dft/EF",
        "SF-cc/E",
        "MF-dft/E-cc/E",
        "MF-dft/EF-cc/E",
        "MF-xtb/EF-dft/EF-cc/E",
    } <= names
    assert any("@10%" in n for n in names) and any("@25%" in n for n in names)


def test_bench_speed_runs_every_section_and_prints_one_table(capsys):
    from mfcalc.models import default_model_path

    tool = load_tool("bench_speed")
    rc = tool.main(
        [
            "--repeats",
            "2",
            "--md-steps",
            "4",
            "--n-batch",
            "10",
            "--batch-size-infer",
            "5",
            "--train-steps",
            "1",
            "--batch-size-train",
            "4",
            "--water-sizes",
            "8",
            "27",
            "--peers",
            "--also",
            f"{default_model_path()}:dft",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    main_table, _, shipped = out.partition("\n\n| ms per energy+forces call")
    rows = [line for line in main_table.splitlines() if line.startswith("| ")]
    cases = [r.split("|")[2].strip() for r in rows[1:]]
    assert [c for c in cases if c.startswith("energy+forces")] == [f"energy+forces, {n} atoms" for n in (5, 9, 21, 100)]
    assert "VelocityVerlet, 9 atoms" in cases and "fitted exponent a, time ~ N^a" in cases
    for row in rows[1:]:
        mfcalc_value = row.split("|")[4].strip()
        assert mfcalc_value != "-" and float(mfcalc_value) >= 0, row  # every section measured mfcalc
    assert "parameters: mfcalc" in out and "command: python tools/bench_speed.py" in out
    # section 7: the shipped model through MFCalculator() beside ASE's EMT at 9, 23 and 101 atoms
    shipped_rows = {r.split("|")[1].strip(): r for r in shipped.splitlines() if r.startswith("| ")}
    assert "9 atoms | 23 atoms | 101 atoms" in shipped
    assert {"ASE EMT", "mfcalc shipped (4 members)", "mfcalc shipped / EMT"} <= set(shipped_rows)
    also = [name for name in shipped_rows if name.endswith("default.pt (dft)")]
    assert len(also) == 1 and f"{also[0]} / shipped (> 1: slower than shipped)" in shipped_rows


def test_bench_speed_water_box_has_liquid_density():
    tool = load_tool("bench_speed")
    for n in (8, 36):
        atoms = tool.water_box(n)
        assert len(atoms) == 3 * n
        assert abs(atoms.get_volume() / n - 29.9) < 1e-6
        d = atoms.get_all_distances(mic=True)[::3, ::3]  # oxygen-oxygen
        assert d[d > 0].min() > 2.45  # no overlapping molecules


def test_mfl_report_merges_saved_runs_into_one_markdown_table(tmp_path, capsys):
    tool = load_tool("mfl_benchmark")
    run = {"energy_rmse": 2.0, "energy_mae": 1.5, "forces_rmse": 20.0, "rel_energy_rmse": 1.0}
    better = {"energy_rmse": 1.0, "energy_mae": 0.8, "forces_rmse": 8.0, "rel_energy_rmse": 0.5}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"results": {"random": {"SF-cc/E": [run, run]}}}))
    b.write_text(json.dumps({"results": {"random": {"MF-dft/EF-cc/E": [better, better]}}}))
    assert tool.main(["--report", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    mf = next(line for line in lines if "| MF-dft/EF-cc/E |" in line)
    assert "| SF-cc/E | 50 % | 60 % |" in mf  # (2 - 1) / 2 and (20 - 8) / 20
    with pytest.raises(SystemExit, match="already"):
        tool.main(["--report", str(a), str(a)])


def test_bench_accuracy_scores_every_method_on_the_same_structures(tmp_path, capsys):
    """On the reference data, with ethanol as the 'conformer' set and formaldehyde (which has
    CCSD(T) forces) as the 'small' set: every row is filled and the labels score themselves."""
    tool = load_tool("bench_accuracy")
    conf, small = tmp_path / "conf.smi", tmp_path / "small.smi"
    conf.write_text("# test\nCCO\n")
    small.write_text("C=O\n")
    out = tmp_path / "acc.json"
    assert (
        tool.main(
            [
                "--data",
                str(REPO / "data" / "mf_reference.h5"),
                "--conformer-molecules",
                str(conf),
                "--small-molecules",
                str(small),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| GFN2-xTB |" in table and "| wB97X/6-31G* |" in table and "default.pt (cc head)" in table
    rows = json.loads(out.read_text())
    floor = rows.pop("no method: a constant per molecule")  # the spread of the CCSD(T) relative energies
    assert "forces" not in floor and floor["conformers n"] > 10
    for name, row in rows.items():
        assert row["conformers n"] > 10 and row["unseen small n"] > 10 and row["forces n"] == 4, name
        assert 0 < row["conformers relE"] < 5 and 0 < row["forces"] < 20, name
    assert rows["wB97X/6-31G*"]["conformers relE"] < floor["conformers relE"]
    assert rows["wB97X/6-31G*"]["conformers: CCO"] == pytest.approx(rows["wB97X/6-31G*"]["conformers relE"])
    # against wB97X instead: CCSD(T) becomes a method, scored on the same structures, and the
    # relative RMSE between two levels does not depend on which one is the reference
    out2 = tmp_path / "acc_dft.json"
    args = ["--data", str(REPO / "data" / "mf_reference.h5"), "--conformer-molecules", str(conf)]
    args += ["--small-molecules", str(small), "--reference", "wb97x_dz", "--heads", "dft", "--json", str(out2)]
    assert tool.main(args) == 0
    table = capsys.readouterr().out
    assert "against wB97X/6-31G*" in table and "| wB97X forces RMSE (n) |" in table and "(dft head)" in table
    against_dft = json.loads(out2.read_text())
    assert "wB97X/6-31G*" not in against_dft
    for key in ("conformers relE", "unseen small relE"):
        assert against_dft["CCSD(T)/cc-pVDZ"][key] == pytest.approx(rows["wB97X/6-31G*"][key], rel=1e-9)
    head = next(v for k, v in against_dft.items() if k.endswith("(dft head)"))
    assert head["forces n"] > 4  # wB97X has forces on every structure, CCSD(T) on 4 of the set


@pytest.mark.slow
def test_bench_finetune_compares_scratch_and_fine_tuned_on_held_out_caspt2(tmp_path, capsys):
    external = SHARED / "data" / "external"
    if not (external / "C2H6_CAS_NMS.h5").exists():
        pytest.skip("the Goodpaster ethane files are not in ../shared/data/external")
    tool = load_tool("bench_finetune")
    out = tmp_path / "ft.json"
    argv = [
        "--minutes",
        "0.01",
        "--epochs",
        "1",
        "--max-dft",
        "100",
        "--max-replay",
        "150",
        "--workdir",
        str(tmp_path / "w"),
    ]
    argv += ["--trunk-lr", "0.002", "--train-params", "last-block", "--trunk-anchor", "10", "--branch-blocks", "1"]
    assert tool.main(argv + ["--lr-schedule", "cosine", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    table = captured.out
    # the replay is the model's own training files out of git (model metadata), less every test structure
    found = re.search(r"the (\d+) training files of the shipped model; (\d+) entries of its (\d+) test", captured.err)
    assert found, captured.err[-2000:]
    n_files, dropped, n_test = map(int, found.groups())
    from mfcalc import export, keys
    from mfcalc.label.store import LabelStore
    from mfcalc.models import default_model_path

    recorded = export.load(default_model_path())[1][keys.META_TRAINING_SOURCES]
    entries = recorded if isinstance(recorded, list) else [recorded]  # a second stage: one per commit
    assert n_files == sum(len(e["files"]) for e in entries) >= 2 and n_test > 1000 and dropped >= n_test
    assert "at most 150 structures of each file kept" in captured.err
    replayed = sorted((tmp_path / "w").glob("replay_*.h5"))
    assert len(replayed) == n_files and all(len(LabelStore(str(f))) <= 150 for f in replayed)
    assert "trunk lr 0.002, training last-block" in table and "cosine learning-rate schedule" in table
    assert "| fine-tuned, DFT + CASPT2 |" in table and "C-C stretch" in table
    assert "| shipped model, no training: its `cc` head |" in table
    doc = json.loads(out.read_text())
    assert set(doc["zero_shot"]) == {"xtb", "dft", "cc"} and all(v > 0 for v in doc["zero_shot"].values())
    assert set(doc["runs"]) == {
        "scratch, CASPT2 only",
        "scratch, DFT + CASPT2",
        "fine-tuned, CASPT2 only",
        "fine-tuned, DFT + CASPT2",
        "fine-tuned, CASPT2 only, anchored",
        "fine-tuned, DFT + CASPT2, anchored",
        "fine-tuned, CASPT2 only, branch",
        "fine-tuned, DFT + CASPT2, branch",
    }
    # a branch run cannot change the old heads: the old cc head scores as before, to float rounding
    for name in ("fine-tuned, CASPT2 only, branch", "fine-tuned, DFT + CASPT2, branch"):
        assert doc["runs"][name]["old cc RMSE"] == pytest.approx(doc["old_cc_before"], rel=1e-6), name
    assert doc["trunk_anchor"] == 10 and doc["lr_schedule"] == "cosine"
    for name, run in doc["runs"].items():
        assert run["caspt2 relE RMSE"] > 0 and len(run["stretch"]) == len(tool.STRETCH), name
        assert min(run["stretch"]) == 0.0, name
        assert (run["old cc RMSE"] is None) == name.startswith("scratch"), name


def test_bench_threads_prints_both_loads_and_thread_counts(capsys):
    assert load_tool("bench_threads").main(["--calls", "2"]) == 0
    out = capsys.readouterr().out
    assert "| idle | 1 |" in out and "| one core busy | 1 |" in out


def test_bench_rank_times_today_against_an_older_model_file(capsys):
    """Tiny run: 2 conformers of propanol, 1 step; the shipped file stands in for an old one."""
    from mfcalc.models import default_model_path

    tool = load_tool("bench_rank")
    argv = ["--smiles", "CCCO", "--n", "2", "--steps", "1", "--repeats", "1", "--before", default_model_path()]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "| today |" in out and "| --before file |" in out and "before / today" in out


def test_campaign_status_counts_labels_and_journal_lines_against_the_minimums(tmp_path, capsys):
    """A dft file with one merged label and one still in the journal (a running job) counts 2."""
    import numpy as np

    from mfcalc.label.store import LabelStore

    (tmp_path / "data" / "campaign").mkdir(parents=True)
    (tmp_path / "data" / "training_files.txt").write_text("# declared once\ndata/campaign/dft.h5\n")
    (tmp_path / "data" / "label_targets.txt").write_text(
        "# kind store level\ndft data/campaign/dft.h5 wb97x_dz\ncc data/campaign/cc.h5 ccsd(t)_dz\n"
    )
    store = LabelStore(str(tmp_path / "data" / "campaign" / "dft.h5"), merge_seconds=1e9)
    water = np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]])
    first = store.add(*water, smiles="O")
    store.record(first, "wb97x_dz", -76.0, np.zeros((3, 3)), 3600.0)
    store.merge()
    second = store.add(water[0], water[1] + 0.01, smiles="O")
    store.record(second, "wb97x_dz", -76.0, np.zeros((3, 3)), 3600.0)  # journal only: not merged
    tool = load_tool("campaign_status")
    assert tool.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| data/campaign/dft.h5 | wb97x_dz | 2 | 2 | 0 | 1 | H O | 2.0 |" in out
    assert "| wB97X energies and forces chosen by committee | 2 | 4000 | 0 % |" in out
    # a round's picks, as the labeller reads them: both labelled waters and one not yet labelled
    from ase import Atoms
    from ase.io import write

    picks = [Atoms(water[0], water[1]), Atoms(water[0], water[1] + 0.01), Atoms(water[0], water[1] + 0.02)]
    write(str(tmp_path / "data" / "campaign" / "round3_dft.extxyz"), picks, format="extxyz")
    assert tool.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| data/campaign/round3_dft.extxyz | data/campaign/dft.h5 | wb97x_dz | 3 | 2 | 0 | 67 % |" in out
    # picks whose store does not exist yet (a round picked, its labelling not started): none labelled
    write(str(tmp_path / "data" / "campaign" / "round3_cc.extxyz"), picks[:2], format="extxyz")
    assert tool.main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| data/campaign/round3_cc.extxyz | data/campaign/cc.h5 | ccsd(t)_dz | 2 | 0 | 0 | 0 % |" in out
    assert not (tmp_path / "data" / "campaign" / "cc.h5").exists()  # counting creates no store


def test_the_label_targets_the_campaign_scripts_read_are_the_ones_the_status_tool_reads():
    """data/label_targets.txt is the one declaration: bash (campaign_data.sh) and Python agree."""
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    root = REPO
    script = (
        "source tools/campaign_data.sh; "
        'for k in "${!LABEL_STORE[@]}"; do echo "$k ${LABEL_STORE[$k]} ${LABEL_LEVEL[$k]}"; done'
    )
    out = subprocess.run([bash, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    from_bash = {line.split()[0]: tuple(line.split()[1:]) for line in out.splitlines()}
    from_python = load_tool("campaign_status").label_targets(str(root))
    assert from_bash == from_python and set(from_python) == {"dft", "cc"}
    assert from_python["cc"] == ("data/campaign/cc.h5", "ccsd(t)_dz")


def test_campaign_status_names_a_malformed_label_targets_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "label_targets.txt").write_text("dft data/campaign/dft.h5\n")
    with pytest.raises(SystemExit, match=r"label_targets.txt:1: expected 'kind store level'"):
        load_tool("campaign_status").label_targets(str(tmp_path))


def test_campaign_status_without_the_training_files_list_says_which_file_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="training_files.txt"):
        load_tool("campaign_status").main(["--root", str(tmp_path)])


def test_freeze_split_writes_the_runs_structures_and_labels_in_file_units(tmp_path):
    import numpy as np

    from conftest import REFERENCE_H5
    from mfcalc.config import RunConfig, load_run_data
    from mfcalc.data.identity import geometry_key, sort_atoms

    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig.from_dict(
        {
            "data": [str(REFERENCE_H5)],
            "fidelity": {
                "xtb": {"energy": "gfn2_xtb.energy", "forces": "gfn2_xtb.forces"},
                "cc": {"energy": "ccsd(t)_dz.energy"},
            },
        }
    )
    (run / "config.toml").write_text(cfg.to_toml())
    source = load_run_data(cfg, say=lambda m: None)
    without_cc = np.flatnonzero(np.isnan(source.energy[:, 1]))  # 4 heavy atoms: xTB and DFT only
    rows = np.array([3, 40, 500, without_cc[0], without_cc[-1]])
    np.savez(run / "split.npz", test=rows, train=np.array([0, 1]))
    out = tmp_path / "frozen.h5"
    load_tool("freeze_split").main([str(run), "--out", str(out)])

    frozen_cfg = RunConfig.from_dict({**cfg.to_dict(), "data": [str(out)]})
    frozen = load_run_data(frozen_cfg, say=lambda m: None)
    assert len(frozen) == len(rows)
    by_key = {}
    for j in range(len(frozen)):
        a0, a1 = frozen.offsets[j], frozen.offsets[j + 1]
        by_key[geometry_key(frozen.numbers[a0:a1], frozen.positions[a0:a1])] = j
    for i in rows:
        a0, a1 = source.offsets[i], source.offsets[i + 1]
        z, x, order = sort_atoms(source.numbers[a0:a1], source.positions[a0:a1])
        j = by_key[geometry_key(z, x)]
        b0, b1 = frozen.offsets[j], frozen.offsets[j + 1]
        np.testing.assert_array_equal(frozen.numbers[b0:b1], z)
        np.testing.assert_allclose(frozen.positions[b0:b1], x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(frozen.energy[j], source.energy[i], rtol=1e-13)  # NaN where absent, too
        xtb = source.forces["xtb"][a0:a1][order]
        np.testing.assert_allclose(frozen.forces["xtb"][b0:b1], xtb, rtol=1e-13, atol=1e-13)
    assert np.isnan(frozen.energy[:, 1]).sum() == 2  # and the two rows without CCSD(T) stay so
    with pytest.raises(SystemExit, match="exists"):
        load_tool("freeze_split").main([str(run), "--out", str(out)])


def test_install_path_frozen_test_split_reproduces_the_runs_test_metrics(trained_model, tmp_path, capsys):
    """What build_default_model.sh does on INSTALL: the card measured on the frozen file equals
    the run's own test metrics (same_metrics.py agrees), and a changed number is named."""
    from mfcalc.cli.eval import main as eval_main

    run = trained_model.parent
    from conftest import REFERENCE_FIDELITY_ARGS as bindings

    run_json, frozen_json, frozen = tmp_path / "run.json", tmp_path / "frozen.json", tmp_path / "test.h5"
    args = ["--model", str(trained_model), "--config", str(run / "config.toml")]
    assert eval_main([*args, "--split", f"{run / 'split.npz'}:test", "--json", str(run_json)]) == 0
    load_tool("freeze_split").main([str(run), "--split", "test", "--out", str(frozen)])
    assert eval_main(["--model", str(trained_model), "--data", str(frozen), *bindings, "--json", str(frozen_json)]) == 0
    same = load_tool("same_metrics")
    assert same.main([str(run_json), str(frozen_json)]) == 0
    assert json.loads(run_json.read_text())["cc"]["n_energy"] > 0

    changed = json.loads(frozen_json.read_text())
    changed["cc"]["energy_rmse_kcal_mol"] *= 1.01
    changed_json = tmp_path / "changed.json"
    changed_json.write_text(json.dumps(changed))
    capsys.readouterr()
    assert same.main([str(run_json), str(changed_json)]) == 1
    assert "cc energy_rmse_kcal_mol" in capsys.readouterr().err


def test_bench_speed_stored_geometries_are_what_rdkit_embeds():
    """The committed benchmark molecules cover every SMILES the sections use and equal the
    RDKit embedding they replace (so a machine without RDKit times the same structures)."""
    import numpy as np

    pytest.importorskip("rdkit")
    tool = load_tool("bench_speed")
    stored = tool.stored_geometries()
    assert set(stored) == set(tool.BENCH_SMILES)
    for smiles in ("CCCCCCO", "CCCCCCC"):
        embedded = tool.embed(smiles)
        np.testing.assert_array_equal(stored[smiles].numbers, embedded.numbers)
        np.testing.assert_allclose(stored[smiles].positions, embedded.positions, atol=1e-6)


def test_bench_conformers_runs_from_saved_geometries(tmp_path, monkeypatch, capsys):
    pytest.importorskip("rdkit")
    tool = load_tool("bench_conformers")
    saved = tmp_path / "propanal.extxyz"
    monkeypatch.setattr(
        sys, "argv", ["x", "--n", "2", "--fmax", "0.05", "--repeats", "1", "--save-geometries", str(saved)]
    )
    tool.main()
    first = capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["x", "--geometries", str(saved), "--fmax", "0.05", "--repeats", "1"])
    tool.main()
    second = capsys.readouterr().out
    assert first.splitlines()[0] == second.splitlines()[0]  # "2 conformers of CCC=O (10 atoms), ..."
    # every method converges every conformer from the saved starts (rounded to 1e-8 A in the
    # file: the step counts may differ by a few)
    rows = [r for r in second.splitlines() if r.startswith("| ") and "converged" in r]
    assert len(rows) == 3 and all(" 2 converged" in r for r in rows), second


def test_record_sources_writes_one_entry_per_commit_and_bench_finetune_takes_them_out_of_git(tmp_path):
    """A second stage records its base's snapshot and its own newer cc.h5 (the later entry
    replaces the same path); bench_finetune brings back each file from its own commit."""
    import shutil
    import subprocess

    from mfcalc import export, keys
    from mfcalc.model import MultiFidelityHipnn
    from mfcalc.model.ensemble import Ensemble

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    tool = load_tool("record_sources")
    older, newer = "1" * 40, "2" * 40
    base, stage = tmp_path / "base_source", tmp_path / "stage_source"
    base.write_text(f"{older}\ndata/mf_reference.h5\ndata/campaign/cc.h5\n")
    stage.write_text(f"{newer}\ndata/campaign/cc.h5\n")
    members = [MultiFidelityHipnn([1, 8], ["xtb"], n_features=4, n_sensitivities=4)]
    model = tmp_path / "m.pt"
    export.save(Ensemble(members), str(model), export.build_metadata(Ensemble(members)))
    tool.main([str(model), str(base), str(stage)])
    assert export.load(str(model))[1][keys.META_TRAINING_SOURCES] == [
        {"commit": older, "files": ["data/mf_reference.h5"]},
        {"commit": newer, "files": ["data/campaign/cc.h5"]},
    ]
    tool.main([str(model), str(base)])  # a build: one entry, the format it always had
    assert export.load(str(model))[1][keys.META_TRAINING_SOURCES] == {
        "commit": older,
        "files": ["data/mf_reference.h5", "data/campaign/cc.h5"],
    }
    (tmp_path / "bad").write_text("abc\n")
    with pytest.raises(SystemExit, match="expected a commit on line 1"):
        tool.main([str(model), str(tmp_path / "bad")])

    # two real commits: the file as it was at each
    log = subprocess.run(
        ["git", "-C", str(REPO), "log", "--format=%H", "-n", "2", "--", "data/campaign/cc.h5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(log) < 2:
        pytest.skip("needs two commits of cc.h5")
    base.write_text(f"{log[1]}\ndata/mf_reference.h5\ndata/campaign/cc.h5\n")
    stage.write_text(f"{log[0]}\ndata/campaign/cc.h5\n")
    tool.main([str(model), str(base), str(stage)])
    got = load_tool("bench_finetune").training_sources(str(model), str(tmp_path / "w"))
    assert [p.split("/")[-1] for p in got] == ["source_mf_reference.h5", "source_cc.h5"]
    for path, (commit, rel) in zip(got, [(log[1], "data/mf_reference.h5"), (log[0], "data/campaign/cc.h5")]):
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{rel}"], capture_output=True).stdout
        assert open(path, "rb").read() == blob


def test_build_default_model_trains_on_the_committed_snapshot_and_restores_it(tmp_path):
    """build_default_model.sh records the commit of the labelled files at its first start and
    takes its copies out of git, so a resumed build (even in a fresh clone, after the files
    grew) sees the same data; uncommitted labelled files are refused."""
    import os
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for script in ("build_default_model.sh", "campaign_data.sh", "snapshot_data.sh"):  # as they are here
        shutil.copy(REPO / "tools" / script, clone / "tools" / script)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mfcalc-train").write_text('#!/bin/sh\necho "train $*"\nexit 3\n')  # stop the script here
    (fake / "mfcalc-train").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "DATA": "reference"}

    def build():
        return subprocess.run(
            ["bash", "tools/build_default_model.sh", "runs/b"], cwd=clone, env=env, capture_output=True, text=True
        )

    committed = (clone / "data" / "mf_reference.h5").read_bytes()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    res = build()
    assert res.returncode == 3 and "--data runs/b/data/mf_reference.h5" in res.stdout, res.stderr
    out = clone / "runs" / "b"
    assert (out / "data_source").read_text().split() == [head, "data/mf_reference.h5"]
    assert (out / "data" / "mf_reference.h5").read_bytes() == committed

    # the labelled file grows; the copy is lost (a fresh clone): it comes back as committed
    with open(clone / "data" / "mf_reference.h5", "ab") as fh:
        fh.write(b"grown")
    shutil.rmtree(out / "data")
    assert build().returncode == 3
    assert (out / "data" / "mf_reference.h5").read_bytes() == committed

    # a build continued from an earlier one starts from its model on its split, at a lower rate
    earlier = clone / "runs" / "a"
    earlier.mkdir()
    env["CONTINUE_FROM"], env["RELATIVE"] = "runs/a", "2"
    res = build()
    assert res.returncode == 2 and "CONTINUE_FROM: no runs/a/model.pt" in res.stderr
    (earlier / "model.pt").write_text("")
    (earlier / "split.npz").write_text("")
    res = build()
    assert res.returncode == 3 and "--init-from runs/a/model.pt --split-from runs/a/split.npz" in res.stdout
    assert "--lr 3e-4" in res.stdout and "--loss-weight cc:relative=2" in res.stdout
    env["LR"] = "1e-3"  # a warm restart at the full rate
    assert "--lr 1e-3" in build().stdout
    env["SPLIT_FROM"] = "runs/a/split.npz"  # a continued build has its split already
    res = build()
    assert res.returncode == 2 and "CONTINUE_FROM takes its build's split" in res.stderr
    del env["CONTINUE_FROM"], env["RELATIVE"], env["LR"]

    # a fresh build on grown data keeps an earlier build's split for its structures, at the full rate
    res = build()
    assert res.returncode == 3 and "--split-from runs/a/split.npz" in res.stdout and "--lr 1e-3" in res.stdout
    assert "--init-from" not in res.stdout
    del env["SPLIT_FROM"]

    # a new build on uncommitted labelled files is refused, naming the file
    shutil.rmtree(out)
    res = build()
    assert res.returncode == 2 and "data/mf_reference.h5 has changes that are not committed" in res.stderr


def test_tune_cc_head_fine_tunes_a_finished_build_on_the_committed_cc_store_with_its_own_replay(tmp_path):
    """tune_cc_head.sh refuses an unfinished base, snapshots cc.h5 (and with DFT_RELATIVE also
    dft.h5) as committed, replays the base build's own data copies, and trains the cc head (and
    the dft head) with the relative-energy term."""
    import os
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for script in ("tune_cc_head.sh", "snapshot_data.sh"):  # the scripts under test, as they are here
        shutil.copy(REPO / "tools" / script, clone / "tools" / script)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mfcalc-train").write_text('#!/bin/sh\necho "train $*"\nexit 3\n')  # stop the script here
    (fake / "mfcalc-train").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "RELATIVE": "2", "EPOCHS": "7", "CC_FROM": "dft"}

    def tune():
        return subprocess.run(
            ["bash", "tools/tune_cc_head.sh", "runs/base", "runs/tuned"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )

    base = clone / "runs" / "base"
    (base / "data").mkdir(parents=True)
    res = tune()
    assert res.returncode == 2 and "BASE: no runs/base/model.pt" in res.stderr
    (base / "model.pt").write_text("")
    assert "BASE: no runs/base/split.npz" in tune().stderr
    (base / "split.npz").write_text("")
    (base / "data_source").write_text("abc\ndata/mf_reference.h5\ndata/campaign/cc.h5\n")
    (base / "data" / "mf_reference.h5").write_text("")
    res = tune()
    assert res.returncode == 2 and "no runs/base/data/cc.h5" in res.stderr
    (base / "data" / "cc.h5").write_text("")
    res = tune()
    assert res.returncode == 3, res.stderr
    assert (
        "--replay runs/base/data/mf_reference.h5 runs/base/data/cc.h5 --replay-split runs/base/split.npz" in res.stdout
    )
    assert "--init-from runs/base/model.pt --data runs/tuned/data/cc.h5" in res.stdout
    assert "--loss-weight cc:relative=2" in res.stdout and "--epochs 7 --early-stopping 7" in res.stdout
    assert "--restart-head cc=dft" in res.stdout and "--seed 0" in res.stdout and "--head-anchor" not in res.stdout
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    assert (clone / "runs" / "tuned" / "data_source").read_text().split() == [head, "data/campaign/cc.h5"]
    committed = subprocess.run(["git", "show", "HEAD:data/campaign/cc.h5"], cwd=clone, capture_output=True).stdout
    assert (clone / "runs" / "tuned" / "data" / "cc.h5").read_bytes() == committed
    assert "--resume" not in res.stdout
    assert "dft=" not in res.stdout and "dft:relative" not in res.stdout  # CCSD(T) only unless asked
    (clone / "runs" / "tuned" / "checkpoint.pt").write_text("")
    assert "--resume" in tune().stdout

    # DFT_RELATIVE: the committed wB97X store trains too, with its own relative term, over fewer epochs
    del env["EPOCHS"]
    env["DFT_RELATIVE"], env["SEED"], env["HEAD_ANCHOR"] = "3", "5", "100"
    res = subprocess.run(
        ["bash", "tools/tune_cc_head.sh", "runs/base", "runs/tuned_dft"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3, res.stderr
    assert "--data runs/tuned_dft/data/cc.h5 runs/tuned_dft/data/dft.h5" in res.stdout
    assert "--fidelity cc=ccsd(t)_dz.energy --fidelity dft=wb97x_dz.energy,wb97x_dz.forces" in res.stdout
    assert "--loss-weight cc:relative=2 --loss-weight dft:relative=3" in res.stdout
    assert "--epochs 16 --early-stopping 16" in res.stdout and "--seed 5" in res.stdout
    assert "--head-anchor 100" in res.stdout
    listed = (clone / "runs" / "tuned_dft" / "data_source").read_text().split()
    assert listed == [head, "data/campaign/cc.h5", "data/campaign/dft.h5"]
    committed = subprocess.run(["git", "show", "HEAD:data/campaign/dft.h5"], cwd=clone, capture_output=True).stdout
    assert (clone / "runs" / "tuned_dft" / "data" / "dft.h5").read_bytes() == committed


def test_committee_spread_splits_a_rounds_picks_by_labelled_and_scores_them_as_the_selector_does(tmp_path, capsys):
    """Three water picks, one labelled: per model, counts and medians equal the selector's own scores."""
    import os

    import numpy as np
    import torch
    from ase import Atoms
    from ase.io import write

    from mfcalc import export
    from mfcalc.data.dataset import read_structures
    from mfcalc.label.store import LabelStore
    from mfcalc.model import MultiFidelityHipnn
    from mfcalc.model.ensemble import Ensemble
    from mfcalc.select import committee_scores

    torch.manual_seed(0)
    models = []
    for name in ("before", "after"):
        members = [MultiFidelityHipnn([1, 8], ["xtb", "dft"], n_features=4, n_sensitivities=4) for _ in range(2)]
        for m in members:  # members that disagree, so that the spread is not zero
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.3 * torch.randn_like(p))
        path = tmp_path / f"{name}.pt"
        export.save(Ensemble(members), str(path), export.build_metadata(Ensemble(members)))
        models.append(str(path))
    (tmp_path / "data" / "campaign").mkdir(parents=True)
    (tmp_path / "data" / "label_targets.txt").write_text("dft data/campaign/dft.h5 wb97x_dz\n")
    water = np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]])
    picks_path = tmp_path / "data" / "campaign" / "round1_dft.extxyz"
    write(str(picks_path), [Atoms(water[0], water[1] * s) for s in (1.0, 1.05, 0.95)], format="extxyz")
    store = LabelStore(str(tmp_path / "data" / "campaign" / "dft.h5"))
    store.record(store.add(water[0], water[1] * 1.05, smiles="O"), "wb97x_dz", -76.0, np.zeros((3, 3)), 1.0)
    store.close()

    tool = load_tool("committee_spread")
    assert tool.main([str(picks_path), "--models", *models, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = read_structures(str(picks_path))[0]
    for model in models:
        score = committee_scores(model, data, by="spread", fidelity="dft").score
        row = (
            f"| {os.path.relpath(model, tmp_path)} | 3 | 1 | "
            f"{score[1]:.4f} | 2 | {np.median(score[[0, 2]]):.4f} | {np.median(score):.4f} |"
        )
        assert row in out
    with pytest.raises(SystemExit, match="not a pick file"):
        tool.main([str(tmp_path / "picks.extxyz"), "--models", models[0], "--root", str(tmp_path)])


def test_committee_spread_errors_rank_the_spreads_against_the_models_own_force_error(tmp_path):
    """--errors: force RMSE per labelled pick equals the calculator's, and the rank correlation is Spearman's."""
    import numpy as np
    import torch
    from ase import Atoms
    from scipy.stats import spearmanr

    from mfcalc import MFCalculator, export
    from mfcalc.data.dataset import read_structures
    from mfcalc.label.store import LabelStore
    from mfcalc.model import MultiFidelityHipnn
    from mfcalc.model.ensemble import Ensemble
    from mfcalc.select import committee_scores

    torch.manual_seed(1)
    members = [MultiFidelityHipnn([1, 8], ["xtb", "dft"], n_features=4, n_sensitivities=4) for _ in range(2)]
    for m in members:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    model = str(tmp_path / "m.pt")
    export.save(Ensemble(members), model, export.build_metadata(Ensemble(members)))
    rng = np.random.default_rng(0)
    water = np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]])
    geometries = [water[1] + rng.normal(scale=0.05, size=(3, 3)) for _ in range(5)]
    labels = [rng.normal(size=(3, 3)) for _ in geometries]
    from ase.io import write

    picks = tmp_path / "round1_dft.extxyz"
    write(str(picks), [Atoms(water[0], g) for g in geometries], format="extxyz")
    store = LabelStore(str(tmp_path / "dft.h5"))
    for g, f in zip(geometries[:4], labels[:4]):  # the fifth pick is not labelled yet
        store.record(store.add(water[0], g, smiles="O"), "wb97x_dz", -76.0, f, 1.0)
    store.close()

    tool = load_tool("committee_spread")
    (row,) = tool.spread_rows(str(picks), [model], str(tmp_path / "dft.h5"), "wb97x_dz", "dft", errors=True)
    assert row["labelled"] == 4 and row["n_errors"] == 4
    truth = tool.labelled_with_forces(read_structures(str(picks))[0], str(tmp_path / "dft.h5"), "wb97x_dz")
    error = tool.force_rmse(model, truth, "dft")
    calc = MFCalculator(model, fidelity="dft", dtype="float64")
    for k in range(len(truth)):
        atoms = Atoms(truth.numbers[truth.atom_index(np.array([k]))], truth.positions[truth.atom_index(np.array([k]))])
        atoms.calc = calc
        expected = np.sqrt(
            np.mean((atoms.get_forces() - np.asarray(truth.forces["label"])[truth.atom_index(np.array([k]))]) ** 2)
        )
        assert error[k] == pytest.approx(expected, rel=1e-6)
    spreads = committee_scores(model, truth, by="spread", fidelity="dft")
    assert row["rho_force_spread"] == pytest.approx(spearmanr(spreads.force_spread, error).statistic)
    assert row["rho_energy_spread"] == pytest.approx(spearmanr(spreads.score, error).statistic)


def test_label_effect_fine_tunes_without_and_with_the_picks_at_equal_steps_and_scores_both(tmp_path, capsys):
    """A store of 12 ethanol CCSD(T) energies, 3 of them a round's labelled picks, a fourth pick
    listed but not computed: the control copy lacks all 4, the treatment copy lacks only the
    uncomputed one; the control arm runs 11/8 of the treatment's epochs; all three models scored;
    mfcalc-train's loss options reach both arms."""
    import ase.io
    import h5py
    import numpy as np
    from ase import Atoms

    from conftest import REFERENCE_H5
    from mfcalc.label.store import LabelStore
    from mfcalc.models import default_model_path

    tool = load_tool("label_effect")
    with h5py.File(REFERENCE_H5) as f:
        g = f["C2H6O1"]
        rows = [k for k in np.nonzero(g["smiles"][()] == b"CCO")[0] if np.isfinite(g["ccsd(t)_dz.energy"][k])][:12]
        frames = [(g["atomic_numbers"][()], g["coordinates"][k], g["ccsd(t)_dz.energy"][k]) for k in rows]
    store_path = tmp_path / "cc.h5"
    store = LabelStore(str(store_path))
    for k, (z, x, e) in enumerate(frames):
        key = store.add(z, x, smiles="CCO")
        if k != 11:  # the last pick is listed, not computed
            store.record(key, "ccsd(t)_dz", float(e), None, 1.0)
    store.close()
    picks = tmp_path / "round9_cc.extxyz"
    ase.io.write(picks, [Atoms(numbers=z, positions=x, info={"smiles": "CCO"}) for z, x, _ in frames[8:]])
    conf, small = tmp_path / "conf.smi", tmp_path / "small.smi"
    conf.write_text("CCO\n")
    small.write_text("C=O\n")
    out = tmp_path / "effect"
    argv = [
        "--model", default_model_path(), "--store", str(store_path), "--picks", str(picks),
        "--fidelity", "cc=ccsd(t)_dz.energy", "--out", str(out), "--replay", str(REFERENCE_H5),
        "--members", "1", "--epochs", "2", "--heads", "cc", "--loss-weight", "cc:relative=1", "--relative-group", "3",
        "--benchmark", str(REFERENCE_H5), "--conformer-molecules", str(conf), "--small-molecules", str(small),
    ]  # fmt: skip
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert "11 structures with the picks' labels, 8 without (3 picks)" in printed
    assert "control: 3 epochs" in printed and "treatment: 2 epochs" in printed
    assert len(LabelStore(str(out / "stores" / "with_picks.h5"))) == 11
    for arm, epochs in (("control", 3), ("treatment", 2)):
        log = (out / arm / "log.csv").read_text().splitlines()
        assert max(int(line.split(",")[1]) for line in log[1:]) == epochs, arm
        assert "valid_cc_relative_rmse_kcal_mol" in log[0]  # the loss options reach both arms
        config = (out / arm / "config.toml").read_text()
        assert "relative_group = 3" in config and f"early_stopping = {epochs}\n" in config  # never stops early
    scores = json.loads((out / "scores.json").read_text())
    scored = [k for k in scores if k.startswith("mfcalc")]
    assert len(scored) == 3 and all(scores[k]["conformers n"] > 10 for k in scored)
    assert tool.main(argv) == 0  # resumed: the finished arms and the snapshot are reused
    assert "epochs on" not in capsys.readouterr().out
    ase.io.write(picks, Atoms(numbers=frames[11][0], positions=frames[11][1]))  # listed, never computed
    with pytest.raises(ValueError, match="none of the 1 structures .* is labelled in"):
        tool.split_store(str(store_path), str(picks), str(tmp_path / "empty"))


def test_size_study_trains_each_variant_on_one_split_and_scores_train_and_valid(tmp_path, capsys):
    """Two variants on one subset of the reference data: the second gets its flags (24
    features in its model file), both the same split, one table row each with relE on train
    and valid; run again, nothing retrains; a malformed variant is refused."""
    import os

    import numpy as np

    from conftest import REFERENCE_H5
    from mfcalc import export, keys

    tool = load_tool("size_study")
    out = tmp_path / "size"
    argv = ["--out", str(out), "--data", str(REFERENCE_H5), "--structures", "300", "--epochs", "2"]
    argv += ["--variant", "base:", "--variant", "narrow:--n-features=24,--n-sensitivities=8"]
    assert tool.main(argv) == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| base") or line.startswith("| narrow")
    ]
    assert len(rows) == 2 and all(re.search(r"\| \d\.\d\d / \d\.\d\d / ", r) for r in rows)
    _, meta = export.load(str(out / "narrow" / "model.pt"))
    hparams = meta[keys.META_HPARAMS]
    assert (hparams["n_features"], hparams["n_sensitivities"]) == (24, 8)
    assert export.load(str(out / "base" / "model.pt"))[1][keys.META_HPARAMS]["n_features"] == 40  # the shipped width
    with np.load(out / "base" / "split.npz") as a, np.load(out / "narrow" / "split.npz") as b:
        assert np.array_equal(a["valid"], b["valid"]) and np.array_equal(a["train"], b["train"])
    stamp = os.path.getmtime(out / "narrow" / "model.pt")
    assert tool.main(argv) == 0
    assert os.path.getmtime(out / "narrow" / "model.pt") == stamp
    with pytest.raises(SystemExit):
        tool.main([*argv[:8], "--variant", "no-colon"])


def test_ensemble_size_decomposes_the_shipped_ensemble_into_members_and_fits_the_k_curve(tmp_path, capsys):
    """The shipped 4-member model on 160 reference structures: the all-member row is exactly
    what mfcalc-eval reports for the ensemble (relE and forces, per head), which checks the
    member split and the relE arithmetic; single members are worse on average; the fit
    a + b/K is exact on data of that form; a one-member model is refused."""
    import json

    import numpy as np

    from conftest import REFERENCE_H5
    from mfcalc.config import RunConfig, load_run_data
    from mfcalc.evaluate import evaluate

    tool = load_tool("ensemble_size")
    cfg = RunConfig.from_dict(
        {
            "data": [str(REFERENCE_H5)],
            "fidelity": {
                "xtb": {"energy": "gfn2_xtb.energy", "forces": "gfn2_xtb.forces"},
                "dft": {"energy": "wb97x_dz.energy", "forces": "wb97x_dz.forces"},
                "cc": {"energy": "ccsd(t)_dz.energy"},
            },
        }
    )
    (tmp_path / "config.toml").write_text(cfg.to_toml())
    valid = np.sort(np.random.default_rng(0).choice(1024, 160, replace=False))
    np.savez(tmp_path / "split.npz", valid=valid)
    model = str(REPO / "models" / "default.pt")
    argv = ["--model", model, "--config", str(tmp_path / "config.toml"), "--split", f"{tmp_path / 'split.npz'}:valid"]
    assert tool.main([*argv, "--json", str(tmp_path / "out.json")]) == 0
    table = capsys.readouterr().out
    assert "| cc | relE (kcal/mol) |" in table and "| dft | forces (kcal/mol/A) |" in table
    result = json.loads((tmp_path / "out.json").read_text())
    metrics, _ = evaluate(model, load_run_data(cfg, say=lambda m: None), valid)
    for head in ("xtb", "dft", "cc"):
        relative = result[head]["relative"]["by_size"]
        assert [r["members"] for r in relative] == [1, 2, 3, 4]
        assert relative[-1]["rmse"] == pytest.approx(metrics[head]["relative_rmse_kcal_mol"], rel=1e-6)
        assert relative[0]["rmse"] > relative[-1]["rmse"]  # averaging members helps
        assert relative[0]["best"] <= relative[0]["rmse"] <= relative[0]["worst"]
        assert result[head]["relative"]["floor_rmse"] <= relative[-1]["rmse"] + 1e-9
    for head in ("xtb", "dft"):
        rmse = result[head]["forces"]["by_size"][-1]["rmse"]
        assert rmse == pytest.approx(metrics[head]["forces_rmse_kcal_mol_a"], rel=1e-6)
    assert "forces" not in result["cc"]  # no CCSD(T) forces in the data
    a, b = tool.fit_floor_and_variance([1, 2, 3, 4], [0.5 + 2.0 / k for k in (1, 2, 3, 4)])
    assert (a, b) == (pytest.approx(0.5), pytest.approx(2.0))


def test_ensemble_size_refuses_a_single_model(trained_model, tmp_path):
    import numpy as np

    from conftest import REFERENCE_H5
    from mfcalc.config import RunConfig

    tool = load_tool("ensemble_size")
    cfg = RunConfig.from_dict({"data": [str(REFERENCE_H5)], "fidelity": {"cc": {"energy": "ccsd(t)_dz.energy"}}})
    (tmp_path / "config.toml").write_text(cfg.to_toml())
    np.savez(tmp_path / "split.npz", valid=np.arange(40))
    with pytest.raises(ValueError, match="two or more members"):
        tool.main(
            [
                "--model",
                str(trained_model),
                "--config",
                str(tmp_path / "config.toml"),
                "--split",
                f"{tmp_path / 'split.npz'}:valid",
            ]
        )


def test_bench_twist_turns_the_bond_and_scores_models_and_levels_on_the_same_geometries(
    trained_model, tmp_path, capsys
):
    """Formamide turned 90 degrees about C-N: the two geometries differ only in the turned
    atoms, by 90 degrees of that torsion; GFN2-xTB puts the twist 15-35 kcal/mol up (the
    conjugation the probe exists for); the model column is the head's own energy difference;
    an unknown head or case is refused."""
    import json

    import numpy as np
    import torch

    pytest.importorskip("tblite")
    from mfcalc import export, keys
    from mfcalc.units import KCAL_MOL_EV

    tool = load_tool("bench_twist")
    numbers, pair = tool.twisted_pair("NC=O", "O=C-N-[H]", 0.0)
    moved = np.linalg.norm(pair[1] - pair[0], axis=1) > 1e-6
    assert 0 < moved.sum() < len(numbers) and sorted(numbers[moved]) == [1, 1]  # only the two amide hydrogens turn
    out = tmp_path / "twist.json"
    argv = ["--model", str(trained_model), "--heads", "cc", "--levels", "gfn2_xtb", "--cases", "formamide"]
    assert tool.main([*argv, "--json", str(out)]) == 0
    assert "| formamide |" in capsys.readouterr().out
    row = json.loads(out.read_text())["formamide"]
    assert 15.0 < row["gfn2_xtb"] < 35.0
    model, meta = export.load(str(trained_model))
    cc = list(meta[keys.META_FIDELITIES]).index("cc")
    energies = []
    for positions in pair:
        e = model.double()(
            torch.as_tensor(numbers),
            torch.as_tensor(positions),
            torch.zeros(len(numbers), dtype=torch.long),
            1,
            None,
            None,
        )[keys.ENERGY]
        energies.append(float(e[0, cc]))
    assert row[f"{trained_model} [cc]"] == pytest.approx((energies[1] - energies[0]) / KCAL_MOL_EV, abs=1e-6)
    with pytest.raises(ValueError, match="no head caspt2"):
        tool.main(["--model", str(trained_model), "--heads", "caspt2", "--levels", "--cases", "formamide"])
    with pytest.raises(SystemExit):
        tool.main(["--cases", "benzene"])
