"""Benchmark: batched conformer optimisation (L-BFGS and FIRE) vs one ASE BFGS run per conformer.

Optimises the same ETKDG conformers of one molecule (default: 50 of propanal, 3 heavy
atoms) to the same fmax both ways and prints the median wall time of several repeats and
the ratio, measured side by side in one process.

    python tools/bench_conformers.py [--smiles CCC=O] [--n 50] [--repeats 3] [--model PATH]

``--save-geometries FILE`` keeps the embedded conformers (extxyz) and ``--geometries FILE``
optimises those instead of embedding: the same start on a machine without RDKit (a GPU one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.io import read as ase_read
from ase.io import write as ase_write
from ase.optimize import BFGS

from mfcalc import MFCalculator, conformers, export
from mfcalc.device import resolve_device
from mfcalc.models import default_model_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smiles", default="CCC=O")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fmax", type=float, default=0.01)
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--fidelity", default="cc")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the batched optimisers and the calculator)")
    p.add_argument("--geometries", metavar="FILE", help="start from these conformers (extxyz) instead of embedding")
    p.add_argument("--save-geometries", metavar="FILE", help="write the embedded conformers here (extxyz)")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    device = resolve_device(args.device)

    if args.geometries:
        frames = ase_read(args.geometries, index=":")
        numbers = frames[0].numbers
        if any(len(f) != len(numbers) or (f.numbers != numbers).any() for f in frames):
            sys.exit(f"{args.geometries}: the conformers must be of one molecule, atoms in the same order")
        coords = np.stack([f.positions for f in frames])
        args.smiles = frames[0].info.get("smiles", args.geometries)
    else:
        mol = conformers.embed_smiles(args.smiles, args.n, seed=0)
        numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    if args.save_geometries:
        ase_write(
            args.save_geometries,
            [Atoms(numbers=numbers, positions=c, info={"smiles": args.smiles}) for c in coords],
            format="extxyz",
        )
    model, meta = export.load(args.model, device=device)
    model = export.freeze(model.double())  # as rank() runs it
    fid = meta["fidelities"].index(args.fidelity)
    calc = MFCalculator(args.model, fidelity=args.fidelity, dtype="float64", device=str(device))

    def batched(method):
        def run():
            out = conformers.optimize_batched(
                model, numbers, coords, fid, fmax=args.fmax, max_steps=2000, method=method, device=device
            )
            return f"{int(out['converged'].sum())} converged, {int(out['steps'].max())} steps (slowest)"

        return run

    def one_by_one():
        steps = []
        for c in coords:
            atoms = Atoms(numbers=numbers, positions=c)
            atoms.calc = calc
            opt = BFGS(atoms, logfile=None)
            opt.run(fmax=args.fmax, steps=2000)
            steps.append(opt.nsteps)
        return f"{len(coords)} converged, {int(sum(steps))} steps (sum)"

    rows = {}
    methods = (
        ("batched L-BFGS (one model call per step)", batched("lbfgs")),
        ("batched FIRE (one model call per step)", batched("fire")),
        ("ASE BFGS, one conformer at a time", one_by_one),
    )
    for name, fn in methods:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            info = fn()
            times.append(time.perf_counter() - t0)
        rows[name] = (statistics.median(times), info)
        print(f"  {name}: {rows[name][0]:.1f} s, {info}", file=sys.stderr, flush=True)
    print(
        f"{len(coords)} conformers of {args.smiles} ({len(numbers)} atoms), fmax {args.fmax} eV/A, "
        f"{args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    print("| method | median wall time | detail | one-by-one / this |")
    print("|---|---|---|---|")
    t_ase = rows[methods[-1][0]][0]
    for name, (t, info) in rows.items():
        print(f"| {name} | {t:.1f} s | {info} | {t_ase / t:.1f}x |")


if __name__ == "__main__":
    main()
