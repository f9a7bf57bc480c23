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
    p.add_argument("--data", nargs="+", required=True, metavar="FILE")
    p.add_argument(
        "--fidelity",
        action="append",
        required=True,
        metavar="NAME=ENERGY_KEY[,FORCES_KEY]",
        help="binding of a model head to keys of the data (any label, trained on or not)",
    )
    p.add_argument("--energy-unit", help="unit of the energies in the data (default: the format's)")
    p.add_argument(
        "--split",
        metavar="DIR/split.npz:NAME",
        help="evaluate only one split of a training run, e.g. run/split.npz:test",
    )
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.data.fidelity import parse_fidelity
        from mfcalc.evaluate import evaluate_file
        from mfcalc.metrics import format_table

        specs = [parse_fidelity(t, energy_unit=args.energy_unit) for t in args.fidelity]
        structures = None
        if args.split:
            path, _, name = args.split.rpartition(":")
            if not path or not os.path.exists(path):
                raise ValueError(f"--split {args.split!r} must be DIR/split.npz:NAME with an existing file")
            with np.load(path) as npz:
                if name not in npz:
                    raise ValueError(f"--split: no split {name!r} in {path}; it has {sorted(npz.files)}")
                structures = npz[name]
        metrics = evaluate_file(
            args.model, args.data, specs, structures=structures, batch_size=args.batch_size, device=args.device
        )
        print(
            format_table(
                metrics, title=f"{args.model} on {', '.join(args.data)}" + (f" ({args.split})" if args.split else "")
            )
        )
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(metrics, fh, indent=1)
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
