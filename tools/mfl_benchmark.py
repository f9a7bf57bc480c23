"""The paper's multi-fidelity experiment matrix on the reference data, printed as one table.

Every row trains the same model size with the same budget on one fixed split (grouped by
SMILES, so test molecules are unseen, and an in-sample random split), for K seeds, and is
scored on the held-out test structures of its target level of theory:

* energies (RMSE, MAE, kcal/mol) of the target fidelity;
* relative conformer energies: per test molecule, energies minus that molecule's mean
  (constant offsets drop out), kcal/mol;
* forces (RMSE, kcal/mol/A) where reference forces exist: DFT forces on the test split;
  CCSD(T) forces on the structures that carry ``ccsd(t)_dz.forces`` (no row ever trains on
  CCSD(T) forces, so these are predictions of labels the model never saw, whichever split
  those structures are in).

Improvement of a multi-fidelity row over its SF-X/E baseline is (RMSE_SF - RMSE_MF) / RMSE_SF.

    python tools/mfl_benchmark.py --seeds 3 --epochs 150 --json mfl.json       # full matrix
    python tools/mfl_benchmark.py --rows SF-cc/E MF-dft/EF-cc/E --seeds 1      # a subset
    python tools/mfl_benchmark.py --report tools/results/mfl_*.json              # one table from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.config import FidelityConfig, RunConfig
from mfcalc.data import load_data, parse_fidelity
from mfcalc.data.dataset import split_indices
from mfcalc.metrics import accumulate_stats, residual_data, stats_to_metrics
from mfcalc.train import train
from mfcalc.units import KCAL_MOL_EV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "mf_reference.h5")
KEYS = {
    "xtb": ("gfn2_xtb.energy", "gfn2_xtb.forces"),
    "dft": ("wb97x_dz.energy", "wb97x_dz.forces"),
    "cc": ("ccsd(t)_dz.energy", "ccsd(t)_dz.forces"),
}


@dataclass
class Row:
    name: str  # paper notation
    case: str
    fidelities: Dict[str, bool]  # name -> train on forces?  (in head order, target last)
    target: str
    baseline: Optional[str] = None  # the SF-X/E row it is compared with
    keep_high: float = 1.0  # fraction of training structures that keep the target's energy


def matrix() -> List[Row]:
    rows = [
        Row("SF-dft/E", "low forces help the high head", {"dft": False}, "dft"),
        Row("SF-dft/EF", "low forces help the high head", {"dft": True}, "dft", "SF-dft/E"),
        Row("MF-xtb/E-dft/E", "low forces help the high head", {"xtb": False, "dft": False}, "dft", "SF-dft/E"),
        Row("MF-xtb/EF-dft/E", "low forces help the high head", {"xtb": True, "dft": False}, "dft", "SF-dft/E"),
        Row("MF-xtb/EF-dft/EF", "low forces help the high head", {"xtb": True, "dft": True}, "dft", "SF-dft/E"),
        Row("SF-cc/E", "DFT -> CC", {"cc": False}, "cc"),
        Row("MF-dft/E-cc/E", "DFT -> CC", {"dft": False, "cc": False}, "cc", "SF-cc/E"),
        Row("MF-dft/EF-cc/E", "DFT -> CC", {"dft": True, "cc": False}, "cc", "SF-cc/E"),
    ]
    for frac in (0.10, 0.25):
        tag = f"@{int(frac * 100)}%"
        rows += [
            Row(f"SF-cc/E{tag}", "scarce high level", {"cc": False}, "cc", keep_high=frac),
            Row(
                f"MF-dft/EF-cc/E{tag}",
                "scarce high level",
                {"dft": True, "cc": False},
                "cc",
                f"SF-cc/E{tag}",
                keep_high=frac,
            ),
        ]
    rows.append(
        Row("MF-xtb/EF-dft/EF-cc/E", "three fidelities", {"xtb": True, "dft": True, "cc": False}, "cc", "SF-cc/E")
    )
    return rows


def relative_energy_rmse(model, data, structures, target: str) -> Optional[float]:
    """RMSE (kcal/mol) of energies relative to each molecule's mean over its test structures."""
    idx = np.asarray(structures)
    k = data.fidelities.index(target)
    rows = idx[np.isfinite(data.energy[idx, k])]
    if len(rows) == 0:
        return None
    from mfcalc.data.dataset import iterate_batches

    pred = []
    for batch in iterate_batches(data, rows, 64, dtype=torch.float64):
        with torch.no_grad():
            out = model(batch.numbers, batch.positions, batch.mol_index, batch.n_mol)
        pred.append(out["energy"][:, model.fidelity_index(target)].numpy())
    pred = np.concatenate(pred)
    ref = data.energy[rows, k]
    labels = data.group_labels("smiles")[rows]
    errs = []
    for mol in np.unique(labels):
        sel = labels == mol
        if sel.sum() < 2:
            continue
        errs.append((pred[sel] - pred[sel].mean()) - (ref[sel] - ref[sel].mean()))
    if not errs:
        return None
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)) / KCAL_MOL_EV)


def run_row(row: Row, split_by: str, seed: int, args, full, workdir: str) -> Dict[str, Optional[float]]:
    names = list(row.fidelities)
    specs = [parse_fidelity(f"{n}={KEYS[n][0]}" + (f",{KEYS[n][1]}" if row.fidelities[n] else "")) for n in names]
    data = full.with_fidelities(names)
    data.forces = {n: full.forces[n] for n in names if row.fidelities[n]}
    split = split_indices(data, args.valid_fraction, args.test_fraction, by=split_by, seed=args.split_seed)
    if row.keep_high < 1.0:  # hide the target's energy on most training structures
        data.energy = np.array(data.energy, copy=True)
        rng = np.random.default_rng(1000 + seed)
        train_rows = split["train"]
        hide = rng.choice(train_rows, int(round(len(train_rows) * (1 - row.keep_high))), replace=False)
        data.energy[hide, names.index(row.target)] = np.nan
    cfg = RunConfig(
        data=[DATA],
        out=os.path.join(workdir, f"{row.name.replace('/', '_')}-{split_by}-{seed}"),
        fidelities=[FidelityConfig(s.name, s.energy_key, s.forces_key, **args.weights.get(s.name, {})) for s in specs],
    )
    cfg.model.n_features, cfg.model.n_sensitivities = args.n_features, args.n_sensitivities
    cfg.model.n_atom_layers, cfg.model.tensor_order = args.n_atom_layers, args.tensor_order
    cfg.model.cusp_reg = args.cusp_reg
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.seed, t.device = args.epochs, args.batch_size, args.lr, seed, "cpu"
    t.valid_fraction, t.test_fraction, t.split_by, t.max_minutes = (
        args.valid_fraction,
        args.test_fraction,
        split_by,
        args.max_minutes,
    )
    t.early_stopping, t.min_epochs, t.energy_loss = args.early_stopping, args.min_epochs, args.energy_loss
    metrics = train(cfg, log=lambda _msg: None, data=data, split=split)  # one fixed split for every row
    model, _meta = export.load(os.path.join(cfg.out, "model.pt"))
    model = model.double()
    # score the target on the test (or validation) split, and CCSD(T) forces wherever they exist
    scored = args.score_on
    m = metrics[scored][row.target]
    out: Dict[str, Optional[float]] = {
        "energy_rmse": m["energy_rmse_kcal_mol"],
        "energy_mae": m["energy_mae_kcal_mol"],
        "forces_rmse": m["forces_rmse_kcal_mol_a"] if row.target != "cc" else None,
        "rel_energy_rmse": relative_energy_rmse(model, full.with_fidelities([row.target]), split[scored], row.target),
    }
    if row.target == "dft" and out["forces_rmse"] is None:  # dft forces not trained: still score them
        out["forces_rmse"] = score_forces(model, full, "dft", split[scored], _meta)
    if row.target == "cc":
        has = np.nonzero(full.forces_mask()[:, full.fidelities.index("cc")])[0]
        if scored == "valid":  # investigations look at validation structures only
            has = np.intersect1d(has, split["valid"])
        out["forces_rmse"] = score_forces(model, full, "cc", has, _meta) if len(has) else None
    return out


def score_forces(model, full, fid: str, structures, meta) -> Optional[float]:
    species = list(meta[keys.META_SPECIES])
    ref = meta[keys.META_REFERENCE_ENERGIES][fid]
    one = full.with_fidelities([fid])
    one.forces = {fid: full.forces[fid]}
    resid = residual_data(one, species, np.array([[ref[str(z)] for z in species]]))
    stats = accumulate_stats(
        model, resid, np.asarray(structures), list(meta[keys.META_FIDELITIES]), 64, torch.device("cpu"), torch.float64
    )
    return stats_to_metrics(stats, [fid])[fid]["forces_rmse_kcal_mol_a"]


def summarise(values: Sequence[Optional[float]]):
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return None, None
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def gain(base: Optional[float], value: Optional[float]) -> Optional[float]:
    """The paper's improvement, (RMSE_SF - RMSE_MF) / RMSE_SF, in percent."""
    if not base or value is None:
        return None
    return 100.0 * (base - value) / base


def print_table(
    results: Dict[str, Dict[str, List[Dict]]], rows: Sequence[Row], header: str, markdown: bool = False
) -> Dict:
    """Mean +- 95 % interval per row and split, with gains over the row's SF-X/E baseline."""
    summary: Dict = {}
    for split_by, by_row in results.items():
        for name, runs in by_row.items():
            summary.setdefault(split_by, {})[name] = {k: summarise([r[k] for r in runs]) for k in runs[0]}

    def fmt(cols, key, width=15):
        mean, half = cols[key]
        if mean is None:
            return "-" if markdown else f"{'-':>{width}}"
        return f"{mean:.2f} +- {half:.2f}" if markdown else f"{mean:7.3f} +- {half:5.2f}"

    if markdown:
        print("| split | case | row | n | E RMSE | relE RMSE | F RMSE | vs | E gain | F gain |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for split_by, by_row in results.items():
        label = "grouped (unseen molecules)" if split_by == "smiles" else "random (in-sample)"
        if not markdown:
            print(f"\nsplit: {label}; {header}; mean +- 95% interval; kcal/mol, kcal/mol/A")
            print(
                f"{'case':<30} {'row':<24} {'E RMSE':>15} {'E MAE':>7} {'relE RMSE':>15} {'F RMSE':>15} "
                f"{'dE %':>6} {'dF %':>6}"
            )
        for row in rows:
            if row.name not in by_row:
                continue
            cols = summary[split_by][row.name]
            base = summary[split_by].get(row.baseline) if row.baseline else None
            ge = gain(base["energy_rmse"][0], cols["energy_rmse"][0]) if base else None
            gf = gain(base["forces_rmse"][0], cols["forces_rmse"][0]) if base else None
            if markdown:
                print(
                    f"| {label} | {row.case} | {row.name} | {len(by_row[row.name])} | {fmt(cols, 'energy_rmse')} | "
                    f"{fmt(cols, 'rel_energy_rmse')} | {fmt(cols, 'forces_rmse')} | {row.baseline if base else ''} | "
                    f"{'' if ge is None else f'{ge:.0f} %'} | {'' if gf is None else f'{gf:.0f} %'} |"
                )
            else:
                print(
                    f"{row.case:<30} {row.name:<24} {fmt(cols, 'energy_rmse')} {cols['energy_mae'][0]:7.3f} "
                    f"{fmt(cols, 'rel_energy_rmse')} {fmt(cols, 'forces_rmse')} "
                    f"{'' if ge is None else f'{ge:6.0f}':>6} {'' if gf is None else f'{gf:6.0f}':>6}"
                )
    return summary


def report(paths: Sequence[str]) -> int:
    """Merge the per-seed results of several --json files and print one markdown table."""
    merged: Dict[str, Dict[str, List[Dict]]] = {}
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        for split_by, by_row in doc["results"].items():
            for name, runs in by_row.items():
                if name in merged.get(split_by, {}):
                    raise SystemExit(f"{path}: row {name!r} ({split_by}) is already in an earlier file")
                merged.setdefault(split_by, {})[name] = runs
    order = {"smiles": 1, "random": 0}
    merged = dict(sorted(merged.items(), key=lambda kv: order.get(kv[0], 2)))
    print_table(merged, matrix(), "merged", markdown=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="*", help="row names to run (default: all)")
    p.add_argument("--splits", nargs="*", default=["smiles", "random"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--early-stopping", type=int, default=25)
    p.add_argument(
        "--min-epochs",
        type=int,
        default=0,
        help="no early stop before this epoch (0, the default, is how the README table was run)",
    )
    p.add_argument("--max-minutes", type=float, default=None, help="per training run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-features", type=int, default=20)
    p.add_argument("--n-sensitivities", type=int, default=20)
    p.add_argument("--n-atom-layers", type=int, default=3)
    p.add_argument("--tensor-order", type=int, default=2)
    p.add_argument("--cusp-reg", type=float, default=1e-4, help="eps in the tensor-sensitivity norms")
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--energy-loss", choices=["structure", "atom"], default="structure")
    p.add_argument(
        "--loss-weight",
        action="append",
        default=[],
        metavar="NAME:energy=W,forces=W,hier=W",
        help="loss weights of a fidelity wherever a row trains it (as mfcalc-train)",
    )
    p.add_argument(
        "--score-on",
        choices=["test", "valid"],
        default="test",
        help="valid: score on the validation split (for investigating recipes without looking at the test split)",
    )
    p.add_argument("--json", help="write all per-seed results and the summary here")
    p.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="train nothing: merge these --json files and print one markdown table",
    )
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.report:
        return report(args.report)
    from mfcalc.cli.train import parse_loss_weight

    try:
        args.weights = dict(parse_loss_weight(text) for text in args.loss_weight)
    except ValueError as exc:
        p.error(str(exc))

    rows = [r for r in matrix() if not args.rows or r.name in args.rows]
    unknown = set(args.rows or []) - {r.name for r in matrix()}
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; known: {[r.name for r in matrix()]}")
    full = load_data([DATA], [parse_fidelity(f"{n}={e},{f}") for n, (e, f) in KEYS.items()])
    workdir = args.workdir or tempfile.mkdtemp(prefix="mfl-")
    results: Dict[str, Dict[str, List[Dict]]] = {}
    t0 = time.perf_counter()
    total = len(rows) * len(args.splits) * args.seeds
    done = 0
    for split_by in args.splits:
        for row in rows:
            for seed in range(args.seeds):
                res = run_row(row, split_by, seed, args, full, workdir)
                results.setdefault(split_by, {}).setdefault(row.name, []).append(res)
                done += 1
                print(
                    f"[{done}/{total}] {split_by:<6} {row.name:<24} seed {seed}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in res.items() if v is not None)
                    + f"  ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )

    header = f"scored on the {args.score_on} split; {args.seeds} seeds"
    summary = print_table(results, rows, header)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "results": results, "summary": summary}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
