"""Committee spread on a round's picks, before and after their labels: did labelling teach?

Query by committee picks the structures its members disagree on most; once those are labelled
and a later model trained with them, its members should agree there.  For one pick file this
prints, for each model given (the round's own committee first, then later ones), the median
score the picks were chosen by (the energy spread of one head over sqrt(N atoms), eV), for
the picks already labelled and for those not yet labelled.  Compare within one model: a
later model is another architecture and data set, so its absolute spread says little, but
if its spread on the labelled picks is lower than on the unlabelled ones (which the round's
committee scored alike), the labels are what it learnt from.

    python tools/committee_spread.py data/campaign/round1_dft.extxyz \\
        --models data/campaign/committee1.pt data/campaign/committee2.pt models/default.pt

The store and level a pick kind is labelled into come from data/label_targets.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional

import numpy as np

from mfcalc.data.dataset import read_structures
from mfcalc.select import already_labelled, committee_scores

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from campaign_status import label_targets  # noqa: E402


def spread_rows(
    picks: str, models: List[str], store: str, level: str, fidelity: str, limit: Optional[int] = None
) -> List[Dict[str, object]]:
    """Per model: picks scored, labelled and unlabelled counts and median scores."""
    data = read_structures(picks)[0]
    if limit is not None and limit < len(data):  # a quick look: the first picks (labelling order)
        data = data.subset(np.arange(limit))
    labelled = already_labelled(data, store, level) if os.path.exists(store) else np.zeros(len(data), dtype=bool)
    rows = []
    for model in models:
        score = committee_scores(model, data, by="spread", fidelity=fidelity).score

        def median(mask: np.ndarray) -> float:
            values = score[mask & np.isfinite(score)]
            return float(np.median(values)) if len(values) else float("nan")

        rows.append(
            dict(
                model=model,
                n=int(np.isfinite(score).sum()),
                labelled=int(labelled.sum()),
                unlabelled=int((~labelled).sum()),
                median_labelled=median(labelled),
                median_unlabelled=median(~labelled),
                median_all=median(np.ones(len(data), dtype=bool)),
            )
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("picks", help="a round's pick file, data/campaign/round<R>_<kind>.extxyz")
    p.add_argument("--models", nargs="+", required=True, help="the round's committee first, then later models")
    p.add_argument("--fidelity", default="dft", help="the head whose spread picked them (default: dft)")
    p.add_argument("--limit", type=int, help="score only the first N picks (a quick look)")
    p.add_argument("--root", default=REPO, help="the repository whose data/label_targets.txt names the store")
    args = p.parse_args(argv)
    found = re.match(r"round\d+_([a-z]+)", os.path.basename(args.picks))
    targets = label_targets(args.root)
    if not found or found.group(1) not in targets:
        raise SystemExit(f"{args.picks}: not a pick file of a kind in data/label_targets.txt ({sorted(targets)})")
    store, level = targets[found.group(1)]
    rows = spread_rows(args.picks, args.models, os.path.join(args.root, store), level, args.fidelity, args.limit)
    print(f"{args.picks}: {args.fidelity}-head energy spread / sqrt(N atoms), eV; labels at {level} in {store}")
    print("| model | picks | labelled | median, labelled | not labelled | median, not labelled | median, all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {os.path.relpath(str(r['model']), args.root)} | {r['n']} | {r['labelled']} | "
            f"{r['median_labelled']:.4f} | {r['unlabelled']} | {r['median_unlabelled']:.4f} | {r['median_all']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
