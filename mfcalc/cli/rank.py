"""mfcalc-rank-conformers: SMILES or file -> optimised, deduplicated, ranked conformers."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mfcalc.cli.common import run_cli

PROG = "mfcalc-rank-conformers"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Generate, optimise and rank conformers at one fidelity.")
    p.add_argument("source", metavar="SMILES|FILE", help="a SMILES, or an SDF / multi-frame XYZ of one molecule")
    p.add_argument("--model", default="default", help="model.pt, or 'default' for the shipped model")
    p.add_argument("--fidelity", help="head to rank at (default: the model's default)")
    p.add_argument("--n-conformers", type=int, default=50)
    p.add_argument("--fmax", type=float, default=0.01, help="eV/A")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument(
        "--optimizer",
        choices=["lbfgs", "fire"],
        default="lbfgs",
        help="batched optimiser (both move all conformers with one model call per step)",
    )
    p.add_argument(
        "--stall-steps",
        type=int,
        default=100,
        help="stop a conformer that makes no progress (no lower energy, no smaller maximum force) for "
        "this many steps; 0: never",
    )
    p.add_argument("--window", type=float, default=10.0, help="kcal/mol above the lowest to report")
    p.add_argument("--prune-rmsd", type=float, default=0.3, help="A, duplicate threshold")
    p.add_argument("--out", default="ranked.sdf", help="SDF of the ranked conformers")
    p.add_argument("--json", help="also write the records as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="relative energies of the ranked conformers, ensemble spread as error bars (matplotlib)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc import conformers

        if args.n_conformers < 1 or args.max_steps < 0 or args.fmax <= 0:
            raise ValueError("need --n-conformers >= 1, --max-steps >= 0 and --fmax > 0")
        result = conformers.rank(
            args.source,
            model=args.model,
            fidelity=args.fidelity,
            n_conformers=args.n_conformers,
            fmax=args.fmax,
            max_steps=args.max_steps,
            window=args.window,
            prune_rmsd=args.prune_rmsd,
            device=args.device,
            seed=args.seed,
            optimizer=args.optimizer,
            stall_steps=args.stall_steps or None,
        )
        print(conformers.format_table(result))
        conformers.write_sdf(result, args.out)
        if args.json:
            conformers.write_json(result, args.json)
        if args.plot:
            from mfcalc.plot import conformer_energies

            ranked = result.ranked
            spreads = [r.relative_spread_kcal_mol for r in ranked]
            conformer_energies(
                [r.relative_kcal_mol or 0.0 for r in ranked],
                None if any(s is None for s in spreads) else [float(s or 0.0) for s in spreads],
                args.plot,
                title=f"{result.smiles}, {result.fidelity} head; error bars: ensemble spread of the relative energy",
                labels=[r.id for r in ranked],
            )
            print(f"wrote {args.plot}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
