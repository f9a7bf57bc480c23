"""mfcalc-sample: SMILES or files -> candidate structures (extxyz) for mfcalc-label and mfcalc-select."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mfcalc.cli.common import run_cli

PROG = "mfcalc-sample"


def _floats(text: str) -> List[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of temperatures") from None


def _elements(text: str) -> List[int]:
    from ase.data import atomic_numbers

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in atomic_numbers]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown element symbol(s) {unknown}")
    return [atomic_numbers[n] for n in names]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Sample candidate structures around molecules: conformer "
        "minima, torsion scans, normal-mode and MD samples (GFN2-xTB or a model).",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SMILES_OR_FILE",
        help="SMILES, a .smi/.txt list of SMILES, or an SDF/XYZ with one molecule's conformers",
    )
    p.add_argument("--out", required=True, metavar="FILE.extxyz", help="output (its parts go to FILE.extxyz.parts/)")
    p.add_argument("--conformers", action="store_true", help="write every distinct minimum within --window")
    p.add_argument("--torsions", action="store_true", help="scan every rotatable bond through 360 degrees")
    p.add_argument("--rigid-scans", action="store_true", help="rotate only (default: relax all but the dihedral)")
    p.add_argument("--scan-step", type=float, default=30.0, metavar="DEG")
    p.add_argument(
        "--normal-modes",
        type=_floats,
        default=[],
        metavar="T1,T2",
        help="normal-mode samples around each minimum at these temperatures (K)",
    )
    p.add_argument("--md", type=_floats, default=[], metavar="T1,T2", help="MD snapshots at these temperatures (K)")
    p.add_argument("--md-minima", type=int, metavar="N", help="MD from the lowest N minima only (default: every one)")
    p.add_argument(
        "--max-minima",
        type=int,
        metavar="N",
        help="keep and sample around the lowest N minima within --window only (default: every one; "
        "floppy drug-sized molecules have dozens)",
    )
    p.add_argument("--per-temperature", type=int, default=10, help="samples per minimum and temperature")
    p.add_argument("--n-embed", type=int, default=20, help="ETKDG conformers to start from")
    p.add_argument("--window", type=float, default=5.0, help="kcal/mol above the lowest minimum")
    p.add_argument(
        "--elements",
        type=_elements,
        default=None,
        metavar="H,C,N,...",
        help="allowed elements (default H,C,N,O,F,S,Cl); other molecules are skipped",
    )
    p.add_argument("--max-heavy-atoms", type=int, help="skip larger molecules")
    p.add_argument("--model", metavar="MODEL.pt", help="move atoms with this model instead of GFN2-xTB")
    p.add_argument("--fidelity", help="the model's head (default: its default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the engine that moves the atoms (default 1: with more, GFN2-xTB's parallel sums "
        "change order from run to run and MD samples are no longer reproducible)",
    )
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.device import set_threads
        from mfcalc.sample.run import ANI2X_ELEMENTS, SampleSettings, sample

        if args.per_temperature < 1 or args.n_embed < 1 or args.window < 0 or not 0 < args.scan_step < 360:
            raise ValueError("need --per-temperature >= 1, --n-embed >= 1, --window >= 0, 0 < --scan-step < 360")
        if args.max_minima is not None and args.max_minima < 1:
            raise ValueError(f"--max-minima must be at least 1, got {args.max_minima}")
        settings = SampleSettings(
            conformers=args.conformers,
            torsions=args.torsions,
            relaxed_scans=not args.rigid_scans,
            scan_step=args.scan_step,
            normal_modes=args.normal_modes,
            md=args.md,
            md_minima=args.md_minima,
            max_minima=args.max_minima,
            per_temperature=args.per_temperature,
            n_embed=args.n_embed,
            window=args.window,
            elements=args.elements or ANI2X_ELEMENTS,
            max_heavy_atoms=args.max_heavy_atoms,
            seed=args.seed,
        )
        restore = set_threads(args.threads)  # refuses fewer than 1
        try:
            sample(args.sources, args.out, settings, model=args.model, fidelity=args.fidelity)
        finally:
            restore()
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
