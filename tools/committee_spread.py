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

``--errors``: does the spread point at the errors?  On the labelled picks that carry forces,
the Spearman rank correlation of each model's energy spread and force spread with its own
force RMSE against the labels.  Meaningful for a model that never trained on those labels
(e.g. the shipped model on the newest round); a model that did is ranked by its training error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.data import parse_fidelity, read_hdf5
from mfcalc.data.dataset import iterate_batches, read_structures
from mfcalc.data.fidelity import head_index
from mfcalc.data.identity import geometry_keys
from mfcalc.data.records import MFData
from mfcalc.select import already_labelled, committee_scores
from mfcalc.units import KCAL_MOL_EV

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from campaign_status import label_targets, pick_kind  # noqa: E402


def force_rmse(model_path: str, data: MFData, fidelity: str) -> np.ndarray:
    """(S,) RMSE of the model's mean forces (one head) against the data's first forces, eV/A."""
    module, meta = export.load(model_path)
    module = module.to(torch.float64)
    head = head_index(list(meta[keys.META_FIDELITIES]), fidelity)
    reference = np.asarray(data.forces[data.fidelities[0]])
    out = np.full(len(data), np.nan)
    for batch in iterate_batches(data, np.arange(len(data)), 32, dtype=torch.float64):
        f = module.compute(batch.numbers, batch.positions, batch.mol_index, batch.n_mol, head, forces_spread=False)
        err = ((f[keys.FORCES].detach().numpy() - reference[data.atom_index(batch.index.numpy())]) ** 2).sum(axis=1)
        owner = batch.mol_index.numpy()
        out[batch.index.numpy()] = np.sqrt(np.bincount(owner, weights=err) / (3 * np.bincount(owner)))
    return out


def labelled_with_forces(picks: MFData, store: str, level: str) -> MFData:
    """The picks' labelled structures with their ``level`` energies and forces from the store."""
    stored = read_hdf5(store, [parse_fidelity(f"label={level}.energy,{level}.forces")])
    wanted = set(geometry_keys(picks))
    ok = stored.forces_mask()[:, 0]
    rows = [i for i, k in enumerate(geometry_keys(stored)) if k in wanted and ok[i]]
    return stored.subset(np.array(rows, dtype=np.int64))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation over the structures where both are finite (NaN under 3)."""
    from scipy.stats import spearmanr  # scipy comes with ASE

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() >= 3 else float("nan")


def spread_rows(
    picks: str,
    models: List[str],
    store: str,
    level: str,
    fidelity: str,
    limit: Optional[int] = None,
    errors: bool = False,
) -> List[Dict[str, object]]:
    """Per model: picks scored, labelled and unlabelled counts and median scores; with
    ``errors``, the rank correlation of its spreads with its force error on the labelled picks."""
    data = read_structures(picks)[0]
    if limit is not None and limit < len(data):  # a quick look: the first picks (labelling order)
        data = data.subset(np.arange(limit))
    labelled = already_labelled(data, store, level) if os.path.exists(store) else np.zeros(len(data), dtype=bool)
    truth = labelled_with_forces(data, store, level) if errors and labelled.any() else None
    if truth is not None:  # each labelled structure's row among the picks: its spreads are scored there
        pick_row = {k: i for i, k in enumerate(geometry_keys(data))}
        truth_rows = np.array([pick_row[k] for k in geometry_keys(truth)], dtype=np.int64)
    rows = []
    for model in models:
        scores = committee_scores(model, data, by="spread", fidelity=fidelity)
        score = scores.score
        extra: Dict[str, object] = {}
        if truth is not None:
            error = force_rmse(model, truth, fidelity)
            extra = dict(
                n_errors=len(truth),
                median_force_rmse=float(np.nanmedian(error)) / KCAL_MOL_EV,
                rho_energy_spread=spearman(score[truth_rows], error),
                rho_force_spread=spearman(scores.force_spread[truth_rows], error),
            )

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
                **extra,
            )
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("picks", help="a round's pick file, data/campaign/round<R>_<kind>.extxyz")
    p.add_argument("--models", nargs="+", required=True, help="the round's committee first, then later models")
    p.add_argument("--fidelity", default="dft", help="the head whose spread picked them (default: dft)")
    p.add_argument("--limit", type=int, help="score only the first N picks (a quick look)")
    p.add_argument("--errors", action="store_true", help="rank correlation of the spreads with the force error")
    p.add_argument("--root", default=REPO, help="the repository whose data/label_targets.txt names the store")
    args = p.parse_args(argv)
    kind = pick_kind(args.picks)
    targets = label_targets(args.root)
    if kind not in targets:
        raise SystemExit(f"{args.picks}: not a pick file of a kind in data/label_targets.txt ({sorted(targets)})")
    store, level = targets[kind]
    rows = spread_rows(
        args.picks, args.models, os.path.join(args.root, store), level, args.fidelity, args.limit, args.errors
    )
    print(f"{args.picks}: {args.fidelity}-head energy spread / sqrt(N atoms), eV; labels at {level} in {store}")
    print("| model | picks | labelled | median, labelled | not labelled | median, not labelled | median, all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {os.path.relpath(str(r['model']), args.root)} | {r['n']} | {r['labelled']} | "
            f"{r['median_labelled']:.4f} | {r['unlabelled']} | {r['median_unlabelled']:.4f} | {r['median_all']:.4f} |"
        )
    if args.errors and any("n_errors" in r for r in rows):
        print(f"\nLabelled picks with {level} forces: does each model's spread rank its own force error?")
        print("| model | structures | median force RMSE, kcal/mol/A | Spearman: energy spread | force spread |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {os.path.relpath(str(r['model']), args.root)} | {r['n_errors']} | {r['median_force_rmse']:.2f} | "
                f"{r['rho_energy_spread']:.2f} | {r['rho_force_spread']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
