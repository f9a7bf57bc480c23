"""Check that two ``mfcalc-eval --json`` files report the same numbers.

Installing a default model measures its card twice: on the run's test rows (through the run's
``split.npz``) and on the same rows frozen into ``models/default_test.h5``.  Both must agree,
or the frozen file does not hold the structures and labels the run was tested on.

    python tools/same_metrics.py RUN/eval_test.json models/default_metrics.json
"""

import argparse
import json
import math
import sys
from typing import Dict, List

# what identifies a test set and what the card quotes; float32 sums over different row orders
# agree to about 1e-6 relative, so 1e-4 separates a reordering from other data
COMPARED = ("n_energy", "n_force_components", "energy_rmse_kcal_mol", "forces_rmse_kcal_mol_a")
RTOL = 1e-4


def differences(a: Dict[str, Dict[str, float]], b: Dict[str, Dict[str, float]], rtol: float = RTOL) -> List[str]:
    """Readable lines, one per disagreement (empty when the two agree)."""
    problems = []
    if set(a) != set(b):
        problems.append(f"fidelities differ: {sorted(a)} vs {sorted(b)}")
    for fid in sorted(set(a) & set(b)):
        for key in COMPARED:
            x, y = a[fid].get(key), b[fid].get(key)
            if x is None and y is None:
                continue
            if x is None or y is None:
                problems.append(f"{fid} {key}: {x} vs {y}")
            elif not math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=0.0):
                problems.append(f"{fid} {key}: {x:.6g} vs {y:.6g}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", help="metrics JSON written by mfcalc-eval --json")
    p.add_argument("second", help="metrics JSON to compare with")
    p.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance (default %(default)g)")
    args = p.parse_args(argv)
    with open(args.first) as fh:
        a = json.load(fh)
    with open(args.second) as fh:
        b = json.load(fh)
    problems = differences(a, b, args.rtol)
    if problems:
        print(f"{args.first} and {args.second} disagree:", file=sys.stderr)
        for line in problems:
            print("  " + line, file=sys.stderr)
        return 1
    print(f"{args.first} and {args.second} agree ({', '.join(sorted(a))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
