"""The trap: early stopping on a noisy validation split once exported an untrained model silently."""

import json

from conftest import REFERENCE_H5
from mfcalc.cli.train import main as train_main

ARGS = [
    "--data",
    str(REFERENCE_H5),
    "--fidelity",
    "dft=wb97x_dz.energy,wb97x_dz.forces",
    "--n-features",
    "6",
    "--n-sensitivities",
    "4",
    "--n-atom-layers",
    "1",
    "--batch-size",
    "32",
    "--max-structures",
    "64",
    "--device",
    "cpu",
    "--epochs",
    "50",
    "--early-stopping",
    "2",
]


def test_best_epoch_first_waits_for_min_epochs_and_warns(tmp_path, monkeypatch, capsys):
    import mfcalc.train.fit as fit

    rising = iter(range(1, 1000))  # every validation loss after the first is worse
    monkeypatch.setattr(fit, "validation_loss", lambda stats, weights, centred=None: float(next(rising)))
    assert train_main([*ARGS, "--out", str(tmp_path / "run"), "--min-epochs", "6"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 6  # patience 2 would have stopped at epoch 3; min_epochs holds it to 6
    assert metrics["members"][0]["best_epoch"] == 1
    assert "no relative improvement" in metrics["members"][0]["stopped"]
    assert "exporting the weights of epoch 1" in out and "WARNING" in out and "barely trained" in out
    assert any("barely trained" in w for w in metrics["warnings"])


def test_few_steps_per_epoch_with_the_plateau_schedule_get_a_note(tmp_path, capsys):
    """64 structures in batches of 32 are 2 steps an epoch: a patience of 2 epochs is 4 steps.
    The run says so and names the cosine schedule; a cosine run gets no note."""
    short = [*ARGS[: ARGS.index("--epochs")], "--epochs", "1"]
    assert train_main([*short, "--out", str(tmp_path / "plateau")]) == 0
    out = capsys.readouterr().out
    assert "note: 2 optimiser steps per epoch" in out and "lr_schedule = 'cosine'" in out
    assert train_main([*short, "--out", str(tmp_path / "cosine"), "--lr-schedule", "cosine"]) == 0
    assert "optimiser steps per epoch" not in capsys.readouterr().out
