"""One round of the data engine on two tiny molecules with GFN2-xTB: sample -> train a committee ->
select -> label -> retrain; the new committee disagrees less on what was selected."""

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

from mfcalc.cli.label import main as label_main  # noqa: E402
from mfcalc.cli.sample import main as sample_main  # noqa: E402
from mfcalc.cli.select import main as select_main  # noqa: E402
from mfcalc.cli.train import main as train_main  # noqa: E402
from mfcalc.select import committee_scores, read_candidates  # noqa: E402

TRAIN = [
    "--fidelity",
    "xtb=gfn2_xtb.energy,gfn2_xtb.forces",
    "--ensemble",
    "4",
    "--epochs",
    "60",
    "--min-epochs",
    "60",
    "--n-features",
    "12",
    "--n-sensitivities",
    "8",
    "--n-atom-layers",
    "1",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
    "--valid-fraction",
    "0.1",
    "--test-fraction",
    "0.1",
    "--device",
    "cpu",
    "--seed",
    "0",
]


@pytest.mark.slow
def test_a_round_lowers_the_committee_spread_on_the_selected_structures(tmp_path):
    start, candidates = tmp_path / "start.extxyz", tmp_path / "candidates.extxyz"
    data, picked = tmp_path / "data.h5", tmp_path / "picked.extxyz"
    # a small starting set near the minima, and hotter candidates the first committee has not seen
    assert (
        sample_main(
            [
                "CO",
                "CC",
                "--out",
                str(start),
                "--conformers",
                "--normal-modes",
                "150",
                "--per-temperature",
                "12",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert (
        sample_main(
            [
                "CO",
                "CC",
                "--out",
                str(candidates),
                "--md",
                "900",
                "--normal-modes",
                "700,1400",
                "--per-temperature",
                "12",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    assert label_main([str(start), "--levels", "gfn2_xtb", "--out", str(data)]) == 0
    assert train_main(["--data", str(data), "--out", str(tmp_path / "round0"), *TRAIN]) == 0
    model0 = str(tmp_path / "round0" / "model.pt")

    assert (
        select_main([str(candidates), "--model", model0, "--n", "16", "--per-molecule", "8", "--out", str(picked)]) == 0
    )
    assert label_main([str(picked), "--levels", "gfn2_xtb", "--out", str(data)]) == 0  # the same file grows
    assert train_main(["--data", str(data), "--out", str(tmp_path / "round1"), *TRAIN]) == 0

    chosen = read_candidates([str(picked)])
    before = committee_scores(model0, chosen).energy_spread
    after = committee_scores(str(tmp_path / "round1" / "model.pt"), chosen).energy_spread
    # The committee is four members of 12 features, so the ratio depends on the seed: the
    # median spread on the picks fell to 0.42-0.75 of what it was over training seeds 0-3.
    # The loop scattered from run to run too (seed 0: mean ratios 0.34, 0.44, 0.46) until
    # mfcalc-sample ran GFN2-xTB on one thread; now seed 0 gives a median ratio of 0.361 in
    # every run. A round that taught nothing leaves the ratio near 1: the claim is a fall of 15 %.
    assert np.median(after) < 0.85 * np.median(before), (np.median(before), np.median(after))
