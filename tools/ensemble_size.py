"""Ensemble size on the validation split: how much would more members help?

A K-member ensemble's squared error splits into what every member gets wrong alike and what
averaging removes: for members trained the same way from different seeds, the expected
mean-squared error of the mean of K of them is ``a + b / K`` (``a``: the members' common
error, ``b``: their variance about their mean).  This scores each member of a trained
ensemble once (``mfcalc-eval``'s own pass, one member at a time), averages the squared
error over every subset of K members for K = 1..N (an unbiased estimate of the K-member
error, each subset being K members drawn from the same population), fits ``a`` and ``b``
and extrapolates: what 8 or 16 members would give, and the floor no ensemble goes below.
Scored per head: within-molecule relative energies (relE, what conformer rankings depend
on) and force components.  No training; the test part is never scored.

    python tools/ensemble_size.py --model models/default.pt \\
        --config data/campaign/default_v4/config.toml \\
        --split data/campaign/default_v4/split.npz:valid --json runs/ensemble_size.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mfcalc import export, keys
from mfcalc.units import KCAL_MOL_EV

EXTRAPOLATE = (8, 16)


def member_predictions(
    model_path: str, data, structures: Optional[np.ndarray], batch_size: int
) -> List[Dict[str, Dict[str, np.ndarray]]]:
    """Per member, ``evaluate``'s predictions (energies and forces per head) on ``data``."""
    from mfcalc.evaluate import evaluate
    from mfcalc.model.ensemble import Ensemble

    module, meta = export.load(model_path)
    ensemble = export.eager_model(module, meta, model_path)
    if ensemble.n_members < 2:
        raise ValueError(f"{model_path} has one member: an ensemble-size study needs a model with two or more members")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(ensemble.n_members):
            path = os.path.join(tmp, f"member{k}.pt")
            export.save(Ensemble([ensemble.member(k)]), path, {**meta, keys.META_ENSEMBLE_SIZE: 1})
            _, preds = evaluate(path, data, structures, batch_size=batch_size, predictions=True, molecule_key=None)
            assert preds is not None
            out.append(preds)
            print(f"member {k + 1} of {ensemble.n_members} scored", file=sys.stderr, flush=True)
    return out


def squared_errors(
    members: Sequence[Dict[str, np.ndarray]], subset: Sequence[int], molecule: np.ndarray
) -> Dict[str, float]:
    """Mean squared errors (kcal/mol units) of the mean of ``subset``'s members for one head:
    ``relative`` (energies relative within each molecule with two or more structures, as
    :func:`mfcalc.metrics.centred_stats`) and ``forces`` (components), and ``n_relative``."""
    first = members[0]
    residual = np.mean([members[k]["energy_pred"] for k in subset], axis=0) - first["energy_ref"]
    groups = molecule[first["structure"]]
    codes, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=residual) / counts
    paired = counts[inverse] >= 2
    centred = (residual - mean[inverse])[paired]
    out = {
        "relative": float(np.mean(centred**2)) / KCAL_MOL_EV**2 if centred.size else float("nan"),
        "n_relative": int(paired.sum()),
    }
    if first["forces_ref"].size:
        force = np.mean([members[k]["forces_pred"] for k in subset], axis=0) - first["forces_ref"]
        out["forces"] = float(np.mean(force**2)) / KCAL_MOL_EV**2
    return out


def fit_floor_and_variance(sizes: Sequence[int], mse: Sequence[float]) -> tuple:
    """Least-squares ``(a, b)`` of ``mse = a + b / K``."""
    design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, dtype=float)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(mse, dtype=float), rcond=None)
    return float(a), float(b)


def study(predictions: List[Dict[str, Dict[str, np.ndarray]]], molecule: np.ndarray) -> Dict[str, Any]:
    """Per head and measure, from two or more members' predictions: the RMSE of K-member
    ensembles for every K (mean over subsets, and the best and worst subset), the fit and its
    extrapolation."""
    n = len(predictions)
    result: Dict[str, Any] = {}
    for head in predictions[0]:
        members = [p[head] for p in predictions]
        if members[0]["energy_ref"].size == 0:
            continue
        # every subset scored once; each measure reads its own number
        errors = {
            size: [squared_errors(members, subset, molecule) for subset in itertools.combinations(range(n), size)]
            for size in range(1, n + 1)
        }
        rows: Dict[str, Any] = {}
        for measure in ("relative", "forces"):
            by_size = []
            for size in range(1, n + 1):
                values = [e[measure] for e in errors[size] if measure in e and np.isfinite(e[measure])]
                if values:
                    by_size.append((size, float(np.mean(values)), float(np.min(values)), float(np.max(values))))
            if len(by_size) < n:
                continue
            a, b = fit_floor_and_variance([s for s, *_ in by_size], [m for _, m, *_ in by_size])
            rows[measure] = {
                "by_size": [
                    {"members": s, "rmse": np.sqrt(m), "best": np.sqrt(lo), "worst": np.sqrt(hi)}
                    for s, m, lo, hi in by_size
                ],
                "floor_rmse": float(np.sqrt(max(a, 0.0))),
                "variance_kcal2": b,
                "extrapolated": {str(k): float(np.sqrt(max(a + b / k, 0.0))) for k in EXTRAPOLATE},
            }
        if rows:
            rows["n_relative"] = errors[1][0]["n_relative"]
            result[head] = rows
    return result


def format_result(result: Dict[str, Any], title: str) -> str:
    sizes = [r["members"] for r in next(iter(next(iter(result.values())).values()))["by_size"]]
    head = ["head", "measure"] + [f"K={k}" for k in sizes] + [f"K={k} (fit)" for k in EXTRAPOLATE] + ["floor (K=inf)"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in result.items():
        for measure in ("relative", "forces"):
            if measure not in rows:
                continue
            r = rows[measure]
            cells = [f"{s['rmse']:.3f} ({s['best']:.2f}-{s['worst']:.2f})" for s in r["by_size"]]
            cells += [f"{r['extrapolated'][str(k)]:.3f}" for k in EXTRAPOLATE] + [f"{r['floor_rmse']:.3f}"]
            label = "relE (kcal/mol)" if measure == "relative" else "forces (kcal/mol/A)"
            lines.append("| " + " | ".join([name, label] + cells) + " |")
    lines += [
        "",
        "K=k: RMSE of the mean of k members, averaged (as squared error) over every subset of k; "
        "in brackets the best and worst subset. Fit: mse = a + b/k over the measured k; floor: sqrt(a).",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an ensemble model file (two or more members)")
    p.add_argument("--config", required=True, help="the training config that binds the data (config.toml)")
    p.add_argument("--split", required=True, metavar="DIR/split.npz:NAME", help="e.g. run/split.npz:valid")
    p.add_argument("--molecule-key", default="smiles")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)

    from mfcalc.config import RunConfig, load_run_data
    from mfcalc.data.dataset import molecule_codes

    path, _, name = args.split.rpartition(":")
    if not os.path.exists(path):
        p.error(f"--split {args.split!r}: no file {path!r}")
    with np.load(path) as npz:
        if name not in npz:
            p.error(f"--split: no split {name!r} in {path}; it has {sorted(npz.files)}")
        structures = npz[name]
    data = load_run_data(RunConfig.from_toml(args.config), say=lambda m: print(m, file=sys.stderr))
    molecule = molecule_codes(data, args.molecule_key)
    result = study(member_predictions(args.model, data, structures, args.batch_size), molecule)
    print(format_result(result, f"{args.model} on {args.split}"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
