"""mfcalc-label: structures -> quantum-chemistry labels in an ANI-1x-layout HDF5 file (resumable)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mfcalc.cli.common import run_cli

PROG = "mfcalc-label"


def _names(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from mfcalc.label.levels import LEVELS

    known = ", ".join(f"{name} ({lv.description})" for name, lv in LEVELS.items())
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Label structures at levels of theory. Killed and started "
        "again, it continues where it stopped and recomputes nothing.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="structure files (HDF5, extxyz or any ASE format)")
    p.add_argument("--levels", required=True, type=_names, metavar="L1,L2", help=f"levels of theory: {known}")
    p.add_argument("--out", required=True, metavar="FILE.h5", help="HDF5 file to create or extend")
    p.add_argument(
        "--forces",
        type=_names,
        default=[],
        metavar="L1,L2",
        help="also forces at these levels (GFN2-xTB and wB97X have them by default; CCSD(T) costs 5-10x)",
    )
    p.add_argument("--no-forces", type=_names, default=[], metavar="L1,L2", help="energies only at these levels")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (OpenMP, BLAS, PySCF)")
    p.add_argument("--charge", type=int, help="molecular charge of every structure (default: the file's, else 0)")
    p.add_argument("--multiplicity", type=int, help="spin multiplicity 2S+1 (default: the file's, else 1)")
    p.add_argument(
        "--merge-seconds",
        type=float,
        default=300.0,
        help="write finished results into the HDF5 file this often (they are journaled at once)",
    )
    p.add_argument("--retry-failed", action="store_true", help="compute again what failed in an earlier run")
    p.add_argument(
        "--drop-unlabelled",
        action="store_true",
        help="remove from --out the structures that are in no input and have no label at all "
        "(taken out of an input list before they were computed); labels are never removed",
    )
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.label.run import label

        label(
            args.inputs,
            args.levels,
            args.out,
            forces=args.forces,
            no_forces=args.no_forces,
            workers=args.workers,
            threads=args.threads,
            charge=args.charge,
            multiplicity=args.multiplicity,
            merge_seconds=args.merge_seconds,
            retry_failed=args.retry_failed,
            drop_unlabelled=args.drop_unlabelled,
        )
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
