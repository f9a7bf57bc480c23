"""torchrun with 2 CPU processes (gloo) equals one process with the same global batch."""

import subprocess
import sys

import torch

from conftest import REFERENCE_H5

ARGS = [
    "--data",
    str(REFERENCE_H5),
    "--fidelity",
    "dft=wb97x_dz.energy,wb97x_dz.forces",
    "--fidelity",
    "cc=ccsd(t)_dz.energy",
    "--epochs",
    "3",
    "--max-structures",
    "160",
    "--n-features",
    "8",
    "--n-sensitivities",
    "6",
    "--n-atom-layers",
    "1",
    "--batch-size",
    "16",
    "--dtype",
    "float64",
    "--device",
    "cpu",
    "--seed",
    "5",
]


def single_and_ddp(args, tmp_path):
    """The same training run in one process and under torchrun with 2; their checkpoints."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, "-m", "mfcalc.train", *args, "--out", str(single)], check=True, capture_output=True)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mfcalc.train"]
        + [*args, "--out", str(ddp)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a = torch.load(single / "checkpoint.pt", weights_only=False)
    b = torch.load(ddp / "checkpoint.pt", weights_only=False)
    return a, b, proc.stdout


def assert_same_training(a, b, epochs):
    for k, v in a["finished"][0].items():
        torch.testing.assert_close(b["finished"][0][k], v, rtol=1e-9, atol=1e-11)
    va = [r["valid_loss"] for r in a["log_rows"]]
    vb = [r["valid_loss"] for r in b["log_rows"]]
    assert len(va) == epochs and max(abs(x - y) for x, y in zip(va, vb)) < 1e-8


def test_two_process_ddp_equals_single_process(tmp_path):
    a, b, stdout = single_and_ddp(ARGS, tmp_path)
    assert stdout.count("test split") == 1  # only rank 0 reports and writes
    assert_same_training(a, b, 3)


def test_two_process_ddp_fine_tuning_equals_single_process(tmp_path):
    """--init-from with a new head, replay, the L2-SP trunk anchor and a relative-energy term:
    the DDP run equals the one-process run (the anchor term is the same on every rank, and its
    gradient is averaged; each molecule's sums are added over the ranks before its mean is removed)."""
    source = tmp_path / "source"
    one_epoch = [*ARGS[: ARGS.index("--epochs")], "--epochs", "1", *ARGS[ARGS.index("--max-structures") :]]
    subprocess.run(
        [sys.executable, "-m", "mfcalc.train", *one_epoch, "--out", str(source)], check=True, capture_output=True
    )
    tune = [
        "--init-from",
        str(source / "model.pt"),
        "--data",
        str(REFERENCE_H5),
        "--fidelity",
        "dft=wb97x_dz.energy,wb97x_dz.forces",
        "--fidelity",
        "cc_again=ccsd(t)_dz.energy",
        "--new-head",
        "cc_again=cc",
        "--replay",
        str(REFERENCE_H5),
        "--trunk-anchor",
        "0.5",
        "--loss-weight",
        "cc_again:relative=1",
        "--epochs",
        "2",
        "--max-structures",
        "160",
        "--batch-size",
        "16",
        "--dtype",
        "float64",
        "--device",
        "cpu",
        "--seed",
        "5",
    ]
    a, b, _ = single_and_ddp(tune, tmp_path)
    assert_same_training(a, b, 2)
