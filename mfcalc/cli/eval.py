"""mfcalc-eval: error table of a model file on labelled data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np

from mfcalc.cli.common import run_cli

PROG = "mfcalc-eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Energy and force errors of a model per fidelity.")
    p.add_argument("--model", required=True, help="model.pt written by mfcalc-train")
    p.add_argument("--data", nargs="+", metavar="FILE")
    p.add_argument(
        "--fidelity",
        action="append",
        metavar="NAME=ENERGY_KEY[,FORCES_KEY]",
        help="binding of a model head to keys of the data (any label, trained on or not)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read the data as a training config binds it: per-fidelity files, keys and units "
        "(e.g. forces in hartree/bohr); instead of --data/--fidelity",
    )
    p.add_argument("--energy-unit", help="unit of the energies in the data (default: the format's)")
    p.add_argument(
        "--split",
        metavar="DIR/split.npz:NAME",
        help="evaluate only one split of a training run, e.g. run/split.npz:test",
    )
    p.add_argument(
        "--molecule-key",
        help="group column naming each structure's molecule, for the error of energies relative within "
        "each molecule (default: smiles where the data have it)",
    )
    p.add_argument(
        "--per-molecule",
        type=int,
        default=0,
        metavar="N",
        help="also list, per fidelity, the N molecules whose relative energies the model gets most wrong "
        "(--json then holds every molecule)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--plot", metavar="DIR", help="write parity plots and error histograms per fidelity (matplotlib)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.config import RunConfig, load_run_data
        from mfcalc.data.dataset import load_data
        from mfcalc.data.fidelity import parse_fidelity
        from mfcalc.evaluate import evaluate
        from mfcalc.metrics import format_molecules, format_table

        if args.config:
            if args.data or args.fidelity:
                raise ValueError("--config binds the data itself: leave out --data and --fidelity")
            data = load_run_data(RunConfig.from_toml(args.config), say=lambda m: print(m, file=sys.stderr))
            source = args.config
        else:
            if not args.data or not args.fidelity:
                raise ValueError("give --data FILE... and --fidelity NAME=KEY[,KEY], or --config FILE.toml")
            specs = [parse_fidelity(t, energy_unit=args.energy_unit) for t in args.fidelity]
            data = load_data(list(args.data), specs)
            source = ", ".join(args.data)
        if args.per_molecule < 0:
            raise ValueError(f"--per-molecule {args.per_molecule}: give a number of molecules, 1 or more")
        if args.molecule_key and args.molecule_key not in data.groups:
            raise ValueError(
                f"--molecule-key {args.molecule_key!r}: the data have no such group column "
                f"(they have {sorted(data.groups) or 'none'})"
            )
        structures = None
        if args.split:
            path, _, name = args.split.rpartition(":")
            if not path or not os.path.exists(path):
                raise ValueError(f"--split {args.split!r} must be DIR/split.npz:NAME with an existing file")
            with np.load(path) as npz:
                if name not in npz:
                    raise ValueError(f"--split: no split {name!r} in {path}; it has {sorted(npz.files)}")
                structures = npz[name]
        metrics, predictions = evaluate(
            args.model,
            data,
            structures,
            batch_size=args.batch_size,
            device=args.device,
            predictions=bool(args.plot),
            molecule_key=args.molecule_key or "smiles",
            per_molecule=args.per_molecule > 0,
        )
        title = f"{args.model} on {source}" + (f" ({args.split})" if args.split else "")
        print(format_table(metrics, title=title))
        if args.per_molecule > 0:
            print(format_molecules(metrics, args.per_molecule))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(metrics, fh, indent=1)
        if args.plot and predictions is not None:
            from mfcalc.plot import parity_plots

            for path in parity_plots(predictions, args.plot, title=title):
                print(f"wrote {path}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
