"""Threads and a busy machine: per-call time of the shipped model through MFCalculator, with
torch's intra-op threads at 1 and at the core count, on an idle machine and with one core
kept busy by another process (as when a labelling job runs beside an MD run).

Small molecules gain nothing from intra-op threads, and a thread that waits for a busy
core stalls every parallel region of the call.  Prints a table of medians (ms):

    python tools/bench_threads.py [--calls 200]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np


def _spin(stop) -> None:  # keeps one core busy
    x = 0
    while not stop.is_set():
        x += 1


def _median_ms(threads: int, calls: int, molecule: str) -> float:
    import torch
    from ase.build import molecule as build

    from mfcalc import MFCalculator

    torch.set_num_threads(threads)
    atoms = build(molecule)
    atoms.calc = MFCalculator(device="cpu")
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    times = []
    for i in range(calls + 10):
        atoms.positions = base + 0.01 * rng.standard_normal(base.shape)
        t = time.perf_counter()
        atoms.get_forces()
        if i >= 10:  # the first calls optimise the TorchScript graph
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--molecule", default="CH3CH2OH", help="an ase.build.molecule name")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []
    for load in ("idle", "one core busy"):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,)) if load != "idle" else None
        if spinner:
            spinner.start()
        try:
            for threads in sorted({1, cores}):
                rows.append((load, threads, _median_ms(threads, args.calls, args.molecule)))
        finally:
            if spinner:
                stop.set()
                spinner.join()
    print(f"| {args.molecule}, shipped model, median ms per energy+forces call | threads | ms |")
    print("|---|---|---|")
    for load, threads, ms in rows:
        print(f"| {load} | {threads} | {ms:.2f} |")
    print(f"\ncores: {cores}; command: python tools/bench_threads.py --calls {args.calls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
