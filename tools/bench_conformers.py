"""Benchmark: batched conformer optimisation vs one ASE BFGS run per conformer.

Optimises the same ETKDG conformers of one molecule (default: 50 of propanal, 3 heavy
atoms) to the same fmax both ways and prints the median wall time of several repeats and
the ratio, measured side by side in one process.

    python tools/bench_conformers.py [--smiles CCC=O] [--n 50] [--repeats 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.optimize import BFGS

from mfcalc import MFCalculator, conformers, export
from mfcalc.calculator import default_model_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smiles", default="CCC=O")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fmax", type=float, default=0.01)
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--fidelity", default="cc")
    args = p.parse_args()

    mol = conformers.embed_smiles(args.smiles, args.n, seed=0)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    model, meta = export.load(args.model)
    model = model.double()
    fid = meta["fidelities"].index(args.fidelity)
    calc = MFCalculator(args.model, fidelity=args.fidelity, dtype="float64", device="cpu")

    def batched():
        out = conformers.optimize_batched(model, numbers, coords, fid, fmax=args.fmax, max_steps=2000)
        return int(out["converged"].sum()), int(out["steps"].max())

    def one_by_one():
        steps = []
        for c in coords:
            atoms = Atoms(numbers=numbers, positions=c)
            atoms.calc = calc
            opt = BFGS(atoms, logfile=None)
            opt.run(fmax=args.fmax, steps=2000)
            steps.append(opt.nsteps)
        return len(coords), int(sum(steps))

    rows = {}
    for name, fn in (("batched FIRE (one model call per step)", batched), ("ASE BFGS, one conformer at a time", one_by_one)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            info = fn()
            times.append(time.perf_counter() - t0)
        rows[name] = (statistics.median(times), info)
    print(f"{len(coords)} conformers of {args.smiles} ({len(numbers)} atoms), fmax {args.fmax} eV/A, "
          f"{args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'method':<42} {'median s':>9}  detail")
    for name, (t, info) in rows.items():
        print(f"{name:<42} {t:9.2f}  {info}")
    (tb, _), (ts, _) = rows.values()
    print(f"speed-up batched / one-by-one: {ts / tb:.1f}x")


if __name__ == "__main__":
    main()
