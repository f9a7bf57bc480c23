"""mfcalc-plot: the learning curve of a training run, at any time (from its log.csv)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mfcalc.cli.common import run_cli

PROG = "mfcalc-plot"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Draw RUN_DIR/learning_curve.png (losses, validation RMSE per fidelity, learning rate) "
        "from RUN_DIR/log.csv; works while the run is still training.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of mfcalc-train")
    p.add_argument("--out", metavar="FILE.png", help="where to write (default: RUN_DIR/learning_curve.png)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.plot import learning_curve

        log = os.path.join(args.run_dir, "log.csv")
        if not os.path.exists(log):
            raise FileNotFoundError(f"no {log}: is {args.run_dir} an mfcalc-train output directory?")
        out = learning_curve(log, args.out or os.path.join(args.run_dir, "learning_curve.png"))
        print(f"wrote {out}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
