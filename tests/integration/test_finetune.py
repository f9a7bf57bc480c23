"""Fine-tuning (--init-from): old heads and old elements unchanged at step 0, new heads by their rule,
frozen parts bit-identical, clear errors, and resume equal to an uninterrupted run."""

import json

import pytest
import torch

from conftest import REFERENCE_H5, ethanol
from mfcalc import export, keys
from mfcalc.cli.train import main as train_main

XTB = "xtb=gfn2_xtb.energy,gfn2_xtb.forces"
DFT = "dft=wb97x_dz.energy,wb97x_dz.forces"
CC = "cc=ccsd(t)_dz.energy"
FAST = ["--batch-size", "16", "--max-structures", "120", "--device", "cpu", "--seed", "0", "--dtype", "float64"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-member xtb/dft model of H, C, O (no N), trained for a few epochs."""
    out = tmp_path_factory.mktemp("src")
    data = out / "hco.h5"
    import h5py

    with h5py.File(REFERENCE_H5) as f, h5py.File(data, "w") as g:
        for name in f:
            if "N" not in name:
                f.copy(f[name], g, name)
    assert (
        train_main(
            [
                "--data",
                str(data),
                "--fidelity",
                XTB,
                "--fidelity",
                DFT,
                "--out",
                str(out / "run"),
                "--n-features",
                "6",
                "--n-sensitivities",
                "4",
                "--n-atom-layers",
                "1",
                "--ensemble",
                "2",
                "--epochs",
                "3",
                *FAST,
            ]
        )
        == 0
    )
    return out / "run" / "model.pt"


def energies(path, z, x):
    model, meta = export.load(str(path))
    out = model.double()(z, x, torch.zeros(len(z), dtype=torch.long), 1)
    return {name: float(out[keys.ENERGY][0, k]) for k, name in enumerate(meta[keys.META_FIDELITIES])}


def fine_tune(source, out, *extra, fidelities=(XTB, DFT, CC), data=REFERENCE_H5):
    args = ["--data", str(data), "--out", str(out), "--init-from", str(source), *FAST, *extra]
    for f in fidelities:
        args += ["--fidelity", f]
    return train_main(args)


def test_before_any_step_old_heads_and_elements_are_unchanged_and_new_heads_follow_their_rule(source, tmp_path):
    zero, copied = tmp_path / "zero", tmp_path / "copied"
    assert fine_tune(source, zero, "--epochs", "0", "--ensemble", "2") == 0
    assert fine_tune(source, copied, "--epochs", "0", "--ensemble", "2", "--new-head", "cc=dft") == 0
    z, x = ethanol()  # H, C, O: known to the source
    before, after, after_copy = (
        energies(source, z, x),
        energies(zero / "model.pt", z, x),
        energies(copied / "model.pt", z, x),
    )
    for head in ("xtb", "dft"):
        assert after[head] == pytest.approx(before[head], abs=1e-6) and after_copy[head] == pytest.approx(
            before[head], abs=1e-6
        )
    meta = export.load(str(zero / "model.pt"))[1]
    assert meta[keys.META_SPECIES] == [1, 6, 7, 8]  # nitrogen added
    counts = {1: 6, 6: 2, 8: 1}
    ref_cc = meta[keys.META_REFERENCE_ENERGIES]["cc"]
    baseline = sum(n * ref_cc[str(e)] for e, n in counts.items())
    assert after["cc"] == pytest.approx(baseline, abs=1e-6)  # zero above the fitted references
    ref_dft = meta[keys.META_REFERENCE_ENERGIES]["dft"]
    dft_above = before["dft"] - sum(n * ref_dft[str(e)] for e, n in counts.items())
    assert after_copy["cc"] == pytest.approx(baseline + dft_above, abs=1e-6)  # the dft head's levels 1..L


def test_a_restarted_head_starts_as_the_other_heads_levels_above_its_own_references(source, tmp_path):
    """--restart-head dft=xtb: before any step the dft head is the xtb head's levels 1..L above the
    dft head's own reference energies, the xtb head is unchanged; misnamed heads are clear errors."""
    from mfcalc.config import TrainSettings

    data = source.parent.parent / "hco.h5"  # the source's own elements
    out = tmp_path / "restarted"
    assert fine_tune(source, out, "--epochs", "0", "--restart-head", "dft=xtb", fidelities=(XTB, DFT), data=data) == 0
    z, x = ethanol()
    before, after = energies(source, z, x), energies(out / "model.pt", z, x)
    counts = {1: 6, 6: 2, 8: 1}
    refs = export.load(str(source))[1][keys.META_REFERENCE_ENERGIES]
    assert export.load(str(out / "model.pt"))[1][keys.META_REFERENCE_ENERGIES]["dft"] == refs["dft"]
    above = {h: before[h] - sum(n * refs[h][str(e)] for e, n in counts.items()) for h in ("xtb", "dft")}
    assert after["xtb"] == pytest.approx(before["xtb"], abs=1e-6)
    assert after["dft"] == pytest.approx(before["dft"] - above["dft"] + above["xtb"], abs=1e-6)
    assert abs(above["dft"] - above["xtb"]) > 1e-3  # the two heads differed, so the test can tell
    assert fine_tune(source, tmp_path / "x", "--epochs", "0", "--restart-head", "cc=dft") == 2  # no cc head
    assert fine_tune(source, tmp_path / "y", "--epochs", "0", "--restart-head", "xtb=dft", fidelities=(DFT,)) == 2
    with pytest.raises(ValueError, match="restart_head 'dft=dft' must look like HEAD=OTHER"):
        TrainSettings(init_from="m.pt", restart_head=["dft=dft"]).validate()
    with pytest.raises(ValueError, match="restart_head, replay"):
        TrainSettings(restart_head=["dft=xtb"]).validate()


def test_an_element_missing_from_a_new_heads_data_takes_the_reference_of_the_head_it_starts_from(source, tmp_path):
    """Hydrocarbon data for a new head copied from dft: oxygen, known to the model but absent from
    the new data, takes the source dft head's reference energy (not xTB's, hundreds of eV away)."""
    import h5py

    ch = tmp_path / "ch.h5"
    with h5py.File(REFERENCE_H5) as f, h5py.File(ch, "w") as g:
        for name in f:
            if "N" not in name and "O" not in name:
                f.copy(f[name], g, name)
    with pytest.warns(
        UserWarning, match=r"Z=8 has no 'cc' energy label; its reference energy is taken from the 'dft' head"
    ):
        assert fine_tune(source, tmp_path / "ft", "--epochs", "0", "--new-head", "cc=dft", data=ch) == 0
    new = export.load(str(tmp_path / "ft" / "model.pt"))[1][keys.META_REFERENCE_ENERGIES]
    old = export.load(str(source))[1][keys.META_REFERENCE_ENERGIES]
    assert new["cc"]["8"] == pytest.approx(old["dft"]["8"], abs=1e-9)
    assert new["cc"]["6"] != pytest.approx(old["dft"]["6"], abs=1e-6)  # carbon is fitted on the new data
    assert abs(new["cc"]["8"] - old["xtb"]["8"]) > 100  # what the first-fidelity rule would have given


def test_reused_heads_keep_the_files_references_without_warning_about_elements_their_data_lack(source, tmp_path):
    """Hydrocarbon data for the existing xtb and dft heads: oxygen is absent from the new data, but
    the heads keep the file's references, so nothing is refitted and nothing warns about oxygen."""
    import warnings

    import h5py

    ch = tmp_path / "ch.h5"
    with h5py.File(REFERENCE_H5) as f, h5py.File(ch, "w") as g:
        for name in f:
            if "N" not in name and "O" not in name:
                f.copy(f[name], g, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fine_tune(source, tmp_path / "ft", "--epochs", "0", fidelities=(XTB, DFT), data=ch) == 0
    assert not [w for w in caught if "occurs in no labelled structure" in str(w.message)]
    new = export.load(str(tmp_path / "ft" / "model.pt"))[1][keys.META_REFERENCE_ENERGIES]
    old = export.load(str(source))[1][keys.META_REFERENCE_ENERGIES]
    assert new == old


def test_heads_only_training_leaves_the_trunk_bit_identical(source, tmp_path):
    out = tmp_path / "heads"
    assert (
        fine_tune(
            source,
            out,
            "--epochs",
            "2",
            "--min-epochs",
            "0",
            "--train-params",
            "heads",
            fidelities=(XTB, DFT),
            data=source.parent.parent / "hco.h5",
        )
        == 0
    )
    src = export.eager_model(*export.load(str(source)), str(source)).member(0)
    tuned = torch.load(out / "checkpoint.pt", weights_only=False)["finished"][0]
    trunk = [k for k in tuned if k.startswith("blocks.")]
    assert trunk and all(torch.equal(tuned[k], src.state_dict()[k]) for k in trunk)
    heads = [k for k in tuned if k.startswith("heads.levels.1")]
    assert any(not torch.equal(tuned[k], src.state_dict()[k]) for k in heads)  # and the heads did train


def test_a_branch_head_trains_on_private_blocks_and_the_other_heads_stay_exactly_as_they_were(source, tmp_path):
    """--train-params branch: the new cc head starts as its rule says (the same model as without a
    branch at step 0) and trains on private copies of the top block; the xtb and dft heads and
    every shared weight stay bit-identical, so there is nothing to forget."""
    hco = source.parent.parent / "hco.h5"
    start, plain, branch = tmp_path / "start", tmp_path / "plain", tmp_path / "branch"
    common = ["--new-head", "cc=dft", "--ensemble", "2"]
    assert fine_tune(source, plain, "--epochs", "0", *common, data=hco) == 0
    assert fine_tune(source, start, "--epochs", "0", "--train-params", "branch", *common, data=hco) == 0
    args = ["--epochs", "2", "--min-epochs", "0", "--train-params", "branch", "--lr", "5e-3", *common]
    assert fine_tune(source, branch, *args, data=hco) == 0
    meta = export.load(str(branch / "model.pt"))[1]
    assert meta[keys.META_HPARAMS]["branch_blocks"] == 1 and meta[keys.META_HPARAMS]["branch_heads"] == ["cc"]
    z0, x0 = ethanol()
    for z, x in ((z0, x0), (z0, x0 + 0.05 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)))):
        before, at_start, untrained = (
            energies(source, z, x),
            energies(start / "model.pt", z, x),
            energies(plain / "model.pt", z, x),
        )
        after = energies(branch / "model.pt", z, x)
        assert at_start == pytest.approx(untrained, abs=1e-9)  # step 0: the branch is a copy
        assert after["xtb"] == before["xtb"] and after["dft"] == before["dft"]  # bit for bit
        assert abs(after["cc"] - at_start["cc"]) > 1e-6  # and the new head did train
    src = export.eager_model(*export.load(str(source)), str(source)).member(0).state_dict()
    tuned = torch.load(branch / "checkpoint.pt", weights_only=False)["finished"][0]
    assert all(torch.equal(tuned[k], src[k]) for k in src if k.startswith("blocks."))
    for level in range(1, 3):  # the xtb and dft rows of every shared head level
        for kind in ("weight", "bias"):
            key = f"heads.levels.{level}.{kind}"
            assert torch.equal(tuned[key][:2], src[key][:2]), key
    assert any(
        not torch.equal(tuned[k], src[k.replace("branch.0.block.", "blocks.1.")])
        for k in tuned
        if k.startswith("branch.0.block.")
    )


def test_a_new_head_from_its_own_data_alone_needs_no_data_of_the_old_heads(source, tmp_path):
    """CASPT2-like use: only the new level's energies, no replay (a branch run has nothing to
    forget).  The old heads, with no label in the run, keep the file's reference energies."""
    hco = source.parent.parent / "hco.h5"
    out = tmp_path / "alone"
    args = ["--epochs", "1", "--min-epochs", "0", "--train-params", "branch", "--new-head", "cc=dft"]
    assert fine_tune(source, out, *args, fidelities=(CC,), data=hco) == 0
    z, x = ethanol()
    before, after = energies(source, z, x), energies(out / "model.pt", z, x)
    assert after["xtb"] == before["xtb"] and after["dft"] == before["dft"]
    old = export.load(str(source))[1][keys.META_REFERENCE_ENERGIES]
    assert export.load(str(out / "model.pt"))[1][keys.META_REFERENCE_ENERGIES]["xtb"] == old["xtb"]


def test_branch_settings_that_cannot_work_are_clear_errors(source, tmp_path, capsys):
    hco = source.parent.parent / "hco.h5"
    assert (
        fine_tune(source, tmp_path / "a", "--epochs", "0", "--train-params", "branch", fidelities=(XTB, DFT), data=hco)
        == 2
    )
    assert "every fidelity of this run (xtb, dft) is already a head" in capsys.readouterr().err
    assert fine_tune(source, tmp_path / "b", "--epochs", "0", "--train-params", "branch", "--branch-blocks", "3") == 2
    err = capsys.readouterr().err
    assert "branch" in err and "blocks must be in" in err and "(2), got 3" in err or "1..2, got 3" in err
    assert fine_tune(source, tmp_path / "c", "--epochs", "0", "--branch-blocks", "1", "--branch-heads", "cc") == 2
    assert "keeps the file's architecture" in capsys.readouterr().err


def test_conflicting_settings_and_bad_files_are_clear_errors(source, tmp_path, capsys):
    assert fine_tune(source, tmp_path / "a", "--n-features", "12") == 2
    assert "keeps the file's architecture, but n_features 12 (the file has 6)" in capsys.readouterr().err
    assert fine_tune(source, tmp_path / "b", "--ensemble", "3") == 2
    assert "has 2 member(s)" in capsys.readouterr().err
    assert fine_tune(source, tmp_path / "c", "--new-head", "cc=mp2") == 2
    assert "'mp2' is not a head" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nothing")
    assert fine_tune(junk, tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "not a TorchScript model file" in err
    assert fine_tune(tmp_path / "missing.pt", tmp_path / "e") == 2
    assert "model file not found" in capsys.readouterr().err
    assert (
        train_main(
            ["--data", str(REFERENCE_H5), "--fidelity", XTB, "--out", str(tmp_path / "f"), "--train-params", "heads"]
        )
        == 2
    )
    assert "need init_from" in capsys.readouterr().err


def test_resume_of_a_fine_tuning_run_equals_an_uninterrupted_one(source, tmp_path, monkeypatch):
    import mfcalc.train.loop as loop

    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--epochs", "3", "--min-epochs", "0", "--ensemble", "2", "--new-head", "cc=dft", "--trunk-lr", "1e-4"]
    assert fine_tune(source, full, *common) == 0
    real = loop.save_checkpoint

    def save_then_die(state, path):
        real(state, path)
        if state["member"] == 1 and state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert fine_tune(source, part, *common) == 130
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert fine_tune(source, part, *common, "--resume") == 0
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(part / "checkpoint.pt", weights_only=False)
    for sa, sb in zip(a["finished"], b["finished"]):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    meta = export.load(str(part / "model.pt"))[1]
    assert meta[keys.META_TRAINING]["init_from"] == str(source) and meta[keys.META_TRAINING]["trunk_lr"] == 1e-4
    assert json.loads((part / "metrics.json").read_text())["test"]["cc"]["n_energy"] > 0
    assert len(a["finished"]) == 2


def test_replay_keeps_the_old_heads_and_reports_forgetting(source, tmp_path):
    """A new cc head from cc energies only, with the original xtb/dft data replayed: the old
    heads are carried over, and metrics.json scores them on held-out original data before and after."""
    hco = source.parent.parent / "hco.h5"
    out = tmp_path / "replay"
    assert (
        fine_tune(
            source,
            out,
            "--epochs",
            "2",
            "--min-epochs",
            "0",
            "--replay",
            str(hco),
            "--replay-fraction",
            "0.5",
            fidelities=(CC,),
            data=hco,
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    forgetting = metrics["replay_test"]
    assert forgetting["structures"] > 0
    for when in ("before", "after"):
        assert set(forgetting[when]) == {"xtb", "dft"}
        assert forgetting[when]["dft"]["forces_rmse_kcal_mol_a"] > 0
    meta = export.load(str(out / "model.pt"))[1]
    assert meta[keys.META_FIDELITIES] == ["xtb", "dft", "cc"] and meta[keys.META_DEFAULT_FIDELITY] == "cc"
    assert meta[keys.META_TRAINING]["fidelities"]["dft"]["energy"] == "wb97x_dz.energy"  # carried bindings
    with pytest.raises(ValueError, match="need init_from"):
        from mfcalc.config import TrainSettings

        TrainSettings(replay="x.h5").validate()


def test_replay_from_files_of_one_level_each_is_the_same_data_as_from_one_file(source, tmp_path):
    """A model trained on several files (one per level of theory) replays them all: read as a
    training run reads them, a geometry labelled in two files is one structure with both labels."""
    import h5py
    import numpy as np

    from mfcalc.config import TrainSettings
    from mfcalc.train.finetune import load_source, read_replay

    hco = source.parent.parent / "hco.h5"
    split = {"xtb.h5": "gfn2_xtb", "dft.h5": "wb97x_dz"}
    for name, level in split.items():  # each file keeps its geometries and one level's labels
        with h5py.File(hco) as f, h5py.File(tmp_path / name, "w") as g:
            for group in f:
                out = g.create_group(group)
                for key in f[group]:
                    if "." not in key or key.startswith(level + "."):
                        f[group].copy(key, out)
    loaded = load_source(str(source))
    one = read_replay(loaded, [str(hco)], ["xtb", "dft"])
    two = read_replay(loaded, [str(tmp_path / n) for n in split], ["xtb", "dft"])
    assert len(two) == len(one) and np.isfinite(two.energy).all()
    order_one, order_two = np.lexsort(one.energy.T[::-1]), np.lexsort(two.energy.T[::-1])
    np.testing.assert_allclose(two.energy[order_two], one.energy[order_one], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="not found: .*missing.h5"):
        read_replay(loaded, [str(hco), str(tmp_path / "missing.h5")], ["xtb"])
    assert TrainSettings(init_from="m.pt", replay="one.h5").validate().replay == ["one.h5"]  # a TOML string
    with pytest.raises(ValueError, match="replay must be"):
        TrainSettings(init_from="m.pt", replay=["a.h5", 3]).validate()


def test_a_large_replay_validates_on_no_more_structures_than_the_new_data():
    """The replay's validation part is capped at the new data's (at least MIN_REPLAY_VALID);
    the surplus trains, the test part is untouched, and no row is lost or doubled."""
    import numpy as np

    from mfcalc.train.prepare import MIN_REPLAY_VALID, cap_replay_validation

    old = {"train": np.arange(0, 8000), "valid": np.arange(8000, 9000), "test": np.arange(9000, 10000)}
    capped = cap_replay_validation(old, 40, seed=0)
    assert len(capped["valid"]) == MIN_REPLAY_VALID and np.array_equal(capped["test"], old["test"])
    assert np.array_equal(np.sort(np.concatenate(list(capped.values()))), np.arange(10000))
    assert len(cap_replay_validation(old, 300, seed=0)["valid"]) == 300
    assert cap_replay_validation(old, 5000, seed=0) is old  # nothing to cap
    # the replayed copies of new structures stay with their twins in the validation part
    twins = np.arange(8500, 8800)
    kept = cap_replay_validation(old, 40, seed=0, keep=np.concatenate([twins, [5, 9500]]))
    assert np.isin(twins, kept["valid"]).all() and np.isin([5], kept["train"]) and np.isin([9500], kept["test"])
    assert np.array_equal(np.sort(np.concatenate(list(kept.values()))), np.arange(10000))
    some = cap_replay_validation(old, 150, seed=0, keep=twins[:100])
    assert len(some["valid"]) == 150 and np.isin(twins[:100], some["valid"]).all()


def test_default_names_the_shipped_model():
    from mfcalc.train.finetune import load_source

    shipped = load_source("default")
    assert shipped.meta[keys.META_FIDELITIES] == ["xtb", "dft", "cc"] and shipped.path.endswith("default.pt")


def test_every_member_is_fine_tuned_unless_the_ensemble_size_is_given(source, tmp_path):
    assert fine_tune(source, tmp_path / "all", "--epochs", "1") == 0
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["ensemble_size"] == 2
    assert fine_tune(source, tmp_path / "one", "--epochs", "1", "--ensemble", "1") == 0
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["ensemble_size"] == 1


def test_trunk_anchor_holds_the_trunk_near_the_source_model(source, tmp_path):
    """L2-SP (--trunk-anchor): the same fine-tuning with a strong pull moves the trunk weights
    much less than without; the heads still train.  Without --init-from it is an error."""
    hco = source.parent.parent / "hco.h5"
    src = export.eager_model(*export.load(str(source)), str(source)).member(0).state_dict()

    def trunk_change(out, *extra):
        assert (
            fine_tune(source, out, "--epochs", "3", "--min-epochs", "0", *extra, fidelities=(XTB, DFT), data=hco) == 0
        )
        tuned = torch.load(out / "checkpoint.pt", weights_only=False)["finished"][0]
        trunk = [k for k in tuned if k.startswith("blocks.")]
        heads = [k for k in tuned if k.startswith("heads.levels.1")]
        assert any(not torch.equal(tuned[k], src[k]) for k in heads)
        return sum(float(((tuned[k] - src[k]) ** 2).sum()) for k in trunk)

    free = trunk_change(tmp_path / "free")
    held = trunk_change(tmp_path / "held", "--trunk-anchor", "1000")
    assert free > 0 and held < 0.1 * free, (held, free)
    assert train_main(["--data", str(hco), "--fidelity", XTB, "--out", str(tmp_path / "x"), "--trunk-anchor", "1"]) == 2


def test_head_anchor_keeps_a_restarted_head_near_the_head_it_restarts_from(source, tmp_path):
    """--head-anchor (L2-SP on the energy heads): the dft head restarted from the xtb head
    (--restart-head dft=xtb) moves far less from the xtb head's weights with a strong pull than
    without, while the trunk still trains; without --init-from it is an error."""
    hco = source.parent.parent / "hco.h5"
    src = export.eager_model(*export.load(str(source)), str(source)).member(0).state_dict()
    heads = [k for k in src if k.startswith("heads.levels.") and not k.startswith("heads.levels.0")]
    assert heads

    def head_change(out, *extra):
        args = ["--epochs", "3", "--min-epochs", "0", "--restart-head", "dft=xtb", *extra]
        assert fine_tune(source, out, *args, fidelities=(XTB, DFT), data=hco) == 0
        tuned = torch.load(out / "checkpoint.pt", weights_only=False)["finished"][0]
        assert any(not torch.equal(tuned[k], src[k]) for k in tuned if k.startswith("blocks."))
        dft, xtb = 1, 0  # rows of each head layer: the file's fidelities xtb, dft
        return sum(float(((tuned[k][dft] - src[k][xtb]) ** 2).sum()) for k in heads)

    free = head_change(tmp_path / "free")
    held = head_change(tmp_path / "held", "--head-anchor", "1000")
    assert free > 0 and held < 0.1 * free, (held, free)
    assert train_main(["--data", str(hco), "--fidelity", XTB, "--out", str(tmp_path / "x"), "--head-anchor", "1"]) == 2


def test_replay_split_keeps_the_source_runs_test_structures_out_of_training(tmp_path, capsys):
    """--replay-split RUN/split.npz: the replayed rows are split exactly as the run that trained
    on those files split them; a split or checkpoint of other data is refused by name."""
    import h5py
    import numpy as np

    small = tmp_path / "small.h5"
    with h5py.File(REFERENCE_H5) as f, h5py.File(small, "w") as g:
        for name in list(f)[:3]:
            f.copy(f[name], g, name)
    base = tmp_path / "base"
    tiny = ["--n-features", "6", "--n-sensitivities", "4", "--n-atom-layers", "1", "--epochs", "1"]
    common = ["--batch-size", "16", "--device", "cpu", "--seed", "0", "--dtype", "float64"]
    assert (
        train_main(["--data", str(small), "--fidelity", XTB, "--fidelity", DFT, "--out", str(base), *tiny, *common])
        == 0
    )
    base_split = dict(np.load(base / "split.npz"))
    tuned = tmp_path / "tuned"
    args = ["--init-from", str(base / "model.pt"), "--data", str(small), "--fidelity", DFT, "--epochs", "1"]
    args += ["--replay", str(small), "--replay-split", str(base / "split.npz"), *common, "--seed", "1"]
    assert train_main([*args, "--out", str(tuned)]) == 0
    split = dict(np.load(tuned / "split.npz"))  # the replay's parts, as rows of the replay
    np.testing.assert_array_equal(np.sort(split["replay_test"]), np.sort(base_split["test"]))
    assert not np.isin(base_split["test"], split["replay_train"]).any()
    # the new data are the same structures: each takes its replayed copy's part, so none of the
    # base's test structures trains here as new data either (drawn anew with another seed,
    # about 80 % would)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(np.sort(split[part]), np.sort(split[f"replay_{part}"]))
    assert "also in the replay: each takes its replayed copy's part" in capsys.readouterr().out
    frozen_has_both_parts(tuned, small, split)

    relabelled = tmp_path / "relabelled.h5"  # the same structures with other labels: other data
    with h5py.File(small) as f, h5py.File(relabelled, "w") as g:
        for name in f:
            f.copy(f[name], g, name)
            g[name]["wb97x_dz.energy"][...] = f[name]["wb97x_dz.energy"][()] + 1e-3
    bad = [a if a != str(small) else str(relabelled) for a in args]
    capsys.readouterr()
    assert train_main([*bad, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "replay_split: " in err and "belongs to other data" in err, err
    with pytest.raises(ValueError, match="replay_split .* needs replay"):
        from mfcalc.config import TrainSettings

        TrainSettings(init_from="m.pt", replay_split="s.npz").validate()


def frozen_has_both_parts(run, data_file, split):
    """tools/freeze_split.py on a fine-tuning run with a replay: the test structures of the new
    data and of the replay, each geometry once, with the labels of both (the replay's xTB)."""
    import numpy as np

    from conftest import load_tool
    from mfcalc.config import RunConfig, load_run_data
    from mfcalc.data.identity import geometry_keys

    frozen = run.parent / f"{run.name}_test.h5"
    load_tool("freeze_split").main([str(run), "--split", "test", "--out", str(frozen)])
    bind = {"xtb": {"energy": "gfn2_xtb.energy", "forces": "gfn2_xtb.forces"}, "dft": {"energy": "wb97x_dz.energy"}}
    source = load_run_data(RunConfig.from_dict({"data": [str(data_file)], "fidelity": bind}), say=lambda m: None)
    got = load_run_data(RunConfig.from_dict({"data": [str(frozen)], "fidelity": bind}), say=lambda m: None)
    want = set(geometry_keys(source.subset(np.union1d(split["test"], split["replay_test"]))))
    assert sorted(geometry_keys(got)) == sorted(want)
    assert np.isfinite(got.energy).all() and np.isfinite(got.forces["xtb"]).all()


def test_a_grown_model_predicts_what_its_source_predicts_and_its_new_block_then_learns(source, tmp_path, capsys):
    """--grow-interactions 1: one more block, started as the identity (its residuals' output
    layers zero) with a zero head, so before any step every head predicts what the source
    predicts (two geometries); after two epochs the
    new block and its head have moved off zero; a stated depth that disagrees is a clear error."""
    from mfcalc.config import TrainSettings

    data = source.parent.parent / "hco.h5"
    zero, trained = tmp_path / "zero", tmp_path / "trained"
    grow = ("--grow-interactions", "1")
    assert fine_tune(source, zero, "--epochs", "0", *grow, fidelities=(XTB, DFT), data=data) == 0
    depth = export.load(str(source))[1][keys.META_HPARAMS]["n_interactions"]
    assert export.load(str(zero / "model.pt"))[1][keys.META_HPARAMS]["n_interactions"] == depth + 1
    z, x = ethanol()
    for geometry in (x, x + 0.05 * torch.sin(torch.arange(x.numel(), dtype=x.dtype)).reshape(x.shape)):
        before, after = energies(source, z, geometry), energies(zero / "model.pt", z, geometry)
        assert after == pytest.approx(before, abs=1e-6)
    module, meta = export.load(str(zero / "model.pt"))
    block = export.eager_model(module, meta, str(zero / "model.pt")).member(0).blocks[depth]
    posts = [block.residual.post] + [layer.residual.post for layer in block.atom_layers]
    assert all(float(p.weight.abs().max()) == float(p.bias.abs().max()) == 0 for p in posts)  # the identity
    assert float(next(iter(block.interaction.parameters())).abs().max()) > 0  # the rest as a fresh block
    assert fine_tune(source, trained, "--epochs", "2", *grow, fidelities=(XTB, DFT), data=data) == 0
    module, meta = export.load(str(trained / "model.pt"))
    member = export.eager_model(module, meta, str(trained / "model.pt")).member(0)
    assert float(member.blocks[depth].residual.post.weight.abs().max()) > 0
    assert float(member.heads.linears()[depth + 1].weight.abs().max()) > 0
    assert energies(trained / "model.pt", z, x)["dft"] != pytest.approx(energies(source, z, x)["dft"], abs=1e-6)
    stated = ("--n-interactions", str(depth + 1))
    assert fine_tune(source, tmp_path / "ok", "--epochs", "0", *grow, *stated, fidelities=(XTB, DFT), data=data) == 0
    wrong = ("--n-interactions", str(depth))
    assert fine_tune(source, tmp_path / "no", "--epochs", "0", *grow, *wrong, fidelities=(XTB, DFT), data=data) == 2
    assert (
        f"n_interactions {depth} (the file has {depth}, so {depth + 1} with --grow-interactions 1)"
        in capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="grow_interactions"):
        TrainSettings(grow_interactions=1).validate()
    with pytest.raises(ValueError, match="grow_interactions must be >= 0"):
        TrainSettings(init_from="m.pt", grow_interactions=-1).validate()
