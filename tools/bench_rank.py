"""Benchmark: the conformer search's inner loop on a drug-sized molecule, today's code against
a model file saved by an older mfcalc (which runs the code it was saved with).

Every conformer takes exactly ``--steps`` batched L-BFGS steps (fmax 0, no stall stop), so
both models make the same number of model calls and the ratio is the cost per step; with
``--full`` it also runs the whole ``mfcalc-rank-conformers`` job with today's code.

    git show b367988~1:models/default.pt > /tmp/before.pt   # the shipped model before issue #15
    python tools/bench_rank.py --before /tmp/before.pt [--smiles SMILES] [--n 20] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from mfcalc import conformers, export
from mfcalc.models import default_model_path

IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"


def timed_steps(model, numbers, coords, fid, steps: int, repeats: int) -> float:
    """Median seconds per batched step (all conformers, one model call)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conformers.optimize_batched(model, numbers, coords, fid, fmax=0.0, max_steps=steps, stall_steps=None)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smiles", default=IBUPROFEN)
    p.add_argument("--n", type=int, default=20, help="conformers")
    p.add_argument("--steps", type=int, default=30, help="batched steps per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", metavar="MODEL.pt", help="a model file saved by an older mfcalc")
    p.add_argument("--full", action="store_true", help="also time the whole ranking job with today's code")
    args = p.parse_args(argv)

    mol = conformers.embed_smiles(args.smiles, args.n, seed=0)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    coords = np.stack([c.GetPositions() for c in mol.GetConformers()])
    today, meta = export.load(default_model_path())
    fid = meta["fidelities"].index(meta.get("default_fidelity", "cc"))
    models = {"today": export.freeze(today.double())}  # as rank() runs it
    if args.before:
        models["--before file"] = export.freeze(torch.jit.load(args.before).double())
    print(
        f"{args.smiles}: {len(numbers)} atoms, {len(coords)} conformers, {args.steps} batched steps per run, "
        f"{torch.get_num_threads()} torch thread(s)\n"
    )
    per_step = {}
    for name, model in models.items():
        timed_steps(model, numbers, coords, fid, 3, 1)  # warm-up: TorchScript specialises on the first calls
        per_step[name] = timed_steps(model, numbers, coords, fid, args.steps, args.repeats)
    print("| code | ms per batched step (all conformers) |")
    print("|---|---|")
    for name, t in per_step.items():
        print(f"| {name} | {1e3 * t:.1f} |")
    if args.before:
        print(f"| before / today (> 1: faster today) | **{per_step['--before file'] / per_step['today']:.2f}x** |")
    if args.full:
        t0 = time.perf_counter()
        result = conformers.rank(args.smiles, n_conformers=args.n, log=lambda line: None)
        wall = time.perf_counter() - t0
        steps = max(int(r.steps) for r in result.records) if result.records else 0
        print(
            f"\nwhole ranking job, today's code: {wall:.0f} s ({len(result.ranked)} ranked, slowest "
            f"conformer {steps} steps)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
