"""Network size on the validation split: does a larger network rank conformers better?

The shipped model fits its own training structures no better than its validation ones
(within-molecule relE of the xtb head 1.01 against 1.09 kcal/mol, the worst molecules the same:
amides, diazenes), which points at capacity rather than data.  This trains one member per
variant on the same random subset and split of the labelled files, with the shipped recipe
(cosine from 1e-3 to 1e-5, batch 32, cusp_reg 1e-2, no early stop) and only the variant's
model flags changed, then scores each with ``mfcalc-eval`` on its training and validation
parts: relE per head (energies relative within each molecule, what conformer rankings depend
on), forces, and seconds per epoch.  Resumable: a finished variant is not retrained, a
killed one resumes from its checkpoint.

    python tools/size_study.py --out runs/size --data FILE... --structures 8000 --epochs 30 \\
        --variant f40: --variant f64:--n-features=64 --variant i3:--n-interactions=3 \\
        --variant f40-long:--epochs=50,--early-stopping=50

The test part is never scored: a size chosen here is measured on the held-out benchmark
only once, after the full build.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np

# the fidelity bindings of the campaign's files (tools/campaign_data.sh declares the same)
BINDINGS = ["xtb=gfn2_xtb.energy,gfn2_xtb.forces", "dft=wb97x_dz.energy,wb97x_dz.forces", "cc=ccsd(t)_dz.energy"]
# the shipped recipe (tools/build_default_model.sh); a variant's flags come after and override it
RECIPE = [
    "--n-features",
    "40",
    "--lr-schedule",
    "cosine",
    "--lr",
    "1e-3",
    "--min-lr",
    "1e-5",
    "--batch-size",
    "32",
    "--cusp-reg",
    "1e-2",
]


def variant(text: str) -> tuple:
    name, sep, flags = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: write NAME:FLAGS, e.g. f64:--n-features=64")
    return name, flags.replace(",", " ")


def train(run: str, args: argparse.Namespace, flags: str) -> None:
    if os.path.exists(os.path.join(run, "model.pt")):
        return
    cmd = ["mfcalc-train", "--data", *args.data, "--out", run, "--seed", str(args.seed), "--split-by", "random"]
    for b in BINDINGS:
        cmd += ["--fidelity", b]
    cmd += [
        "--max-structures",
        str(args.structures),
        "--epochs",
        str(args.epochs),
        "--early-stopping",
        str(args.epochs),
    ]
    cmd += [*RECIPE, "--device", "cpu", *shlex.split(flags)]
    if os.path.exists(os.path.join(run, "checkpoint.pt")):
        cmd.append("--resume")
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def score(run: str, part: str) -> Dict[str, dict]:
    path = os.path.join(run, f"eval_{part}.json")
    if not os.path.exists(path):
        cmd = ["mfcalc-eval", "--model", f"{run}/model.pt", "--config", f"{run}/config.toml"]
        cmd += ["--split", f"{run}/split.npz:{part}", "--json", path, "--per-molecule", "5"]
        subprocess.run(cmd, check=True)
    with open(path) as fh:
        return json.load(fh)


def epochs_run(run: str) -> tuple:
    """(epochs trained, median seconds per epoch) from the run's log."""
    with open(os.path.join(run, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    return len(rows), float(np.median([float(r["seconds"]) for r in rows]))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", nargs="+", required=True, metavar="FILE")
    p.add_argument("--structures", type=int, default=8000, help="random subset of the data (same for every variant)")
    p.add_argument("--epochs", type=int, default=30, help="unless a variant's flags set --epochs and --early-stopping")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset, split and weights; repeat with another")
    p.add_argument("--variant", type=variant, action="append", required=True, metavar="NAME:FLAGS")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    first = None
    rows = []
    for name, flags in args.variant:
        run = os.path.join(args.out, name)
        train(run, args, flags)  # the same seed and subset: the same split, checked below
        if first is None:
            first = run
        with np.load(os.path.join(first, "split.npz")) as a, np.load(os.path.join(run, "split.npz")) as b:
            if not all(np.array_equal(a[k], b[k]) for k in ("train", "valid")):
                raise SystemExit(f"{run} split its data differently from {first}: the comparison would not be fair")
        tr, va = score(run, "train"), score(run, "valid")
        rows.append((name, flags, *epochs_run(run), tr, va))

    def rel(m: dict, fid: str) -> str:
        v = m.get(fid, {}).get("relative_rmse_kcal_mol")
        return "-" if v is None else f"{v:.2f}"

    def force(m: dict, fid: str) -> str:
        v = m.get(fid, {}).get("forces_rmse_kcal_mol_a")
        return "-" if v is None else f"{v:.2f}"

    print(f"\n{args.structures} structures (random, seed {args.seed}), one member each; kcal/mol(/A)")
    print("| variant | flags | epochs | s/epoch | train relE xtb | valid relE xtb / dft / cc | valid F xtb / dft |")
    print("|---|---|---|---|---|---|---|")
    for name, flags, epochs, sec, tr, va in rows:
        print(
            f"| {name} | `{flags or '(shipped)'}` | {epochs} | {sec:.0f} | {rel(tr, 'xtb')} | "
            f"{rel(va, 'xtb')} / {rel(va, 'dft')} / {rel(va, 'cc')} | {force(va, 'xtb')} / {force(va, 'dft')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
