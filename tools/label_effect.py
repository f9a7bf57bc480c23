"""What a round of labels did: fine-tune one model twice, without and with them, and score both.

A committee's spread before and after a round (tools/committee_spread.py) mixes the labels'
effect with everything else that changed between the two committees.  This isolates it: both
arms start from the same model file with the same settings, seed and replay data, and fine-tune
on the same label store, once as it would be without the round's picks (their labels removed)
and once with them.  The control arm runs more epochs in proportion to its smaller data, so
both take the same number of optimiser steps over the same cosine schedule; early stopping is
off in both (a patience of all their epochs), so neither arm ends its schedule early (with
mfcalc-train's default patience of 20 epochs the control arm of round 4 once stopped after 40
of its 114 epochs, a third of the treatment's steps).  Both are scored
with tools/bench_accuracy.py on the held-out benchmark, next to the model they started from:

    python tools/label_effect.py --model models/default.pt --store data/campaign/cc.h5 \\
        --picks data/campaign/round4_cc.extxyz --fidelity "cc=ccsd(t)_dz.energy" --out runs/effect_round4

Replay (the model's training files, ``data/training_files.txt``, unless ``--replay`` is given)
keeps the old heads where they were; the store itself is replayed as the control copy in both
arms, so the picks' labels reach the treatment arm only through its fine-tuning data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_accuracy  # noqa: E402
from campaign_status import training_files  # noqa: E402


def stored(path: str) -> int:
    from mfcalc.label.store import LabelStore

    return len(LabelStore(path))


def split_store(store: str, picks: str, workdir: str) -> None:
    """Copies of ``store`` with (``with_picks.h5``) and without (``without_picks.h5``) the
    structures of ``picks`` into ``workdir``."""
    from mfcalc.data.dataset import read_structures
    from mfcalc.data.identity import geometry_keys
    from mfcalc.label.store import LabelStore

    picked = set(geometry_keys(read_structures(picks)[0]))
    source = LabelStore(store)  # read only: nothing is merged into the live store
    unlabelled = source.unlabelled()
    labelled_picks = (picked & set(source.structures)) - unlabelled
    if not labelled_picks:
        raise ValueError(
            f"none of the {len(picked)} structures of {picks} is labelled in {store} yet: nothing to measure"
        )
    source.write_copy(os.path.join(workdir, "with_picks.h5"), drop=unlabelled)
    source.write_copy(os.path.join(workdir, "without_picks.h5"), drop=unlabelled | labelled_picks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the model both arms start from")
    p.add_argument("--store", required=True, help="the label store the round labelled into")
    p.add_argument("--picks", required=True, help="the round's pick file (its structures' labels are the treatment)")
    p.add_argument(
        "--fidelity", action="append", required=True, metavar="NAME=ENERGY_KEY[,FORCES_KEY]", help="as mfcalc-train"
    )
    p.add_argument("--out", required=True, help="work directory: the two copies, the two runs, the scores")
    p.add_argument("--replay", nargs="*", help="replayed files (default: data/training_files.txt, store swapped)")
    p.add_argument("--replay-fraction", type=float, default=0.25)
    p.add_argument("--members", type=int, default=2, help="members fine-tuned (the first K of the model)")
    p.add_argument("--member-workers", type=int, default=1, help="members fine-tuned at once (as mfcalc-train)")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the treatment arm (control: same steps)")
    p.add_argument("--lr", type=float, default=3e-4, help="heads' learning rate")
    p.add_argument("--trunk-lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--loss-weight", action="append", default=[], metavar="NAME:TERM=W", help="as mfcalc-train (both arms)"
    )
    p.add_argument("--relative-group", type=int, help="as mfcalc-train (both arms)")
    p.add_argument("--heads", nargs="+", default=["cc", "dft"], help="heads scored (bench_accuracy --heads)")
    p.add_argument("--benchmark", default=bench_accuracy.DATA, help="held-out benchmark file")
    p.add_argument("--conformer-molecules", help="as bench_accuracy (default: its own)")
    p.add_argument("--small-molecules", help="as bench_accuracy (default: its own)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    copies = os.path.join(args.out, "stores")
    if not os.path.isdir(copies):  # the snapshot of a store that may still be growing, kept for a resume
        os.makedirs(copies + ".partial", exist_ok=True)
        for name in os.listdir(copies + ".partial"):
            os.remove(os.path.join(copies + ".partial", name))
        split_store(args.store, args.picks, copies + ".partial")
        os.rename(copies + ".partial", copies)
    treatment, control = os.path.join(copies, "with_picks.h5"), os.path.join(copies, "without_picks.h5")
    n_with, n_without = stored(treatment), stored(control)
    print(f"{args.store}: {n_with} structures with the picks' labels, {n_without} without ({n_with - n_without} picks)")
    store = os.path.realpath(args.store)
    listed = [os.path.join(REPO, f) for f in training_files(REPO)]
    replay = args.replay if args.replay is not None else [f for f in listed if os.path.exists(f)]
    replay = [control if os.path.realpath(f) == store else f for f in replay]
    if control not in replay:
        replay.append(control)
    bindings = [x for f in args.fidelity for x in ("--fidelity", f)]
    models = []
    for arm, data, epochs in (
        ("control", control, max(1, round(args.epochs * n_with / n_without))),
        ("treatment", treatment, args.epochs),
    ):
        out = os.path.join(args.out, arm)
        command = [
            sys.executable, "-m", "mfcalc.cli.train", "--data", data, *bindings, "--out", out,
            "--init-from", args.model, "--ensemble", str(args.members), "--epochs", str(epochs),
            "--early-stopping", str(epochs),
            "--lr-schedule", "cosine", "--lr", str(args.lr), "--trunk-lr", str(args.trunk_lr),
            "--replay", *replay, "--replay-fraction", str(args.replay_fraction),
            "--seed", str(args.seed), "--device", "cpu", "--member-workers", str(args.member_workers),
            *[x for w in args.loss_weight for x in ("--loss-weight", w)],
        ]  # fmt: skip
        if args.relative_group is not None:
            command += ["--relative-group", str(args.relative_group)]
        if os.path.exists(os.path.join(out, "checkpoint.pt")) and not os.path.exists(os.path.join(out, "model.pt")):
            command.append("--resume")
        if not os.path.exists(os.path.join(out, "model.pt")):
            print(f"{arm}: {epochs} epochs on {os.path.basename(data)}", flush=True)
            subprocess.run(command, check=True)
        models.append(os.path.join(out, "model.pt"))
    score = ["--data", args.benchmark, "--model", args.model, *models, "--heads", *args.heads]
    for flag, value in (
        ("--conformer-molecules", args.conformer_molecules),
        ("--small-molecules", args.small_molecules),
    ):
        if value:
            score += [flag, value]
    return bench_accuracy.main([*score, "--json", os.path.join(args.out, "scores.json")])


if __name__ == "__main__":
    sys.exit(main())
