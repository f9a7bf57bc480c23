"""Pictures of what a model learned: parity plots, error histograms, learning curves and
conformer energies (optional extra ``plot``: matplotlib).

Figures are drawn on :class:`matplotlib.figure.Figure` objects with no pyplot state, so they
work headless (servers, CI) and never open a window.  Every number printed on a figure is
computed from the plotted arrays with the same definitions as ``mfcalc-eval``'s table
(RMSE and MAE per structure for energies, per component for forces, kcal/mol).
"""

from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mfcalc.units import KCAL_MOL_EV

DPI = 110  # small files: the README shows them


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("plots need matplotlib: pip install 'mfcalc[plot]'") from exc
    return Figure(figsize=(width, height), layout="constrained")


def rmse_mae(ref: np.ndarray, pred: np.ndarray) -> tuple:
    err = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def _parity(ax, ref: np.ndarray, pred: np.ndarray, what: str, unit: str) -> None:
    rmse, mae = rmse_mae(ref, pred)
    ax.scatter(ref, pred, s=4, alpha=0.5, linewidths=0, label=f"RMSE {rmse:.3f}\nMAE {mae:.3f} {unit}")
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8)
    ax.set_xlabel(f"reference {what} ({unit})")
    ax.set_ylabel(f"predicted {what} ({unit})")
    ax.legend(loc="upper left", frameon=False, handlelength=0, handletextpad=0)


def parity_plots(predictions: Dict[str, Dict[str, np.ndarray]], out_dir: str, title: str = "") -> List[str]:
    """``parity_<fidelity>.png`` (energies per structure after the atomic reference energies,
    forces per component) and ``errors_<fidelity>.png`` (error histograms) per fidelity with
    labels; returns the files written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, p in predictions.items():
        e_ref, e_pred = p["energy_ref"] / KCAL_MOL_EV, p["energy_pred"] / KCAL_MOL_EV
        f_ref, f_pred = p["forces_ref"] / KCAL_MOL_EV, p["forces_pred"] / KCAL_MOL_EV
        if len(e_ref) == 0 and len(f_ref) == 0:
            continue
        both = (("energy", e_ref, e_pred, "kcal/mol"), ("forces", f_ref, f_pred, "kcal/mol/A"))
        panels = [x for x in both if len(x[1])]
        fig = _figure(4.2 * len(panels), 4.0)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (what, ref, pred, unit) in zip(axes, panels):
            _parity(ax, ref, pred, "E - atomic refs" if what == "energy" else "force component", unit)
            ax.set_title(f"{name}: {what} (n={len(ref)})")
        if title:
            fig.suptitle(title, fontsize=9)
        path = os.path.join(out_dir, f"parity_{name}.png")
        fig.savefig(path, dpi=DPI)
        written.append(path)

        fig = _figure(4.2 * len(panels), 3.2)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (what, ref, pred, unit) in zip(axes, panels):
            err = pred - ref
            ax.hist(err, bins=min(60, max(10, len(err) // 10)), color="C1")
            ax.set_xlabel(f"{what} error ({unit})")
            ax.set_ylabel("count")
            ax.set_title(f"{name}: {what} errors")
        path = os.path.join(out_dir, f"errors_{name}.png")
        fig.savefig(path, dpi=DPI)
        written.append(path)
    return written


def read_log(path: str) -> Dict[str, np.ndarray]:
    """Columns of a training ``log.csv`` as float arrays (empty cells: NaN)."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]) for k in rows[0]}


def learning_curve(log_csv: str, out_png: str) -> str:
    """Train and validation loss, per-fidelity validation RMSE and the learning rate per
    epoch (one line per ensemble member), log scale."""
    log = read_log(log_csv)
    members = np.unique(log["member"]).astype(int) if "member" in log else np.array([1])
    rmse_cols = [k for k in log if k.startswith("valid_") and "rmse" in k and np.isfinite(log[k]).any()]
    fig = _figure(12, 3.6)
    ax_loss, ax_rmse, ax_lr = fig.subplots(1, 3)
    for m in members:
        rows = log["member"] == m if "member" in log else np.ones(len(log["epoch"]), dtype=bool)
        ep = log["epoch"][rows]
        first = m == members[0]  # one legend entry per quantity, one line per member
        ax_loss.plot(ep, log["train_loss"][rows], color="C0", alpha=0.7, label="train" if first else None)
        ax_loss.plot(ep, log["valid_loss"][rows], color="C3", alpha=0.7, label="valid" if first else None)
        for k, col in enumerate(rmse_cols):
            label = (
                col.replace("valid_", "")
                .replace("_forces_rmse_kcal_mol_a", " F")
                .replace("_energy_rmse_kcal_mol", " E")
            )
            ax_rmse.plot(ep, log[col][rows], color=f"C{k}", alpha=0.7, label=label if first else None)
        ax_lr.plot(ep, log["lr"][rows], color="C2", alpha=0.7)
    for ax, title in ((ax_loss, "loss"), (ax_rmse, "validation RMSE (kcal/mol, kcal/mol/A)"), (ax_lr, "learning rate")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
    ax_loss.legend(frameon=False, fontsize=8)
    ax_rmse.legend(frameon=False, fontsize=7, ncol=2)
    fig.savefig(out_png, dpi=DPI)
    return out_png


def conformer_energies(
    relative_kcal_mol: Sequence[float],
    spread_kcal_mol: Optional[Sequence[float]],
    out_png: str,
    title: str = "",
    labels: Optional[Sequence[Any]] = None,
) -> str:
    """Relative energies of ranked conformers, with the ensemble spread as error bars."""
    e = np.asarray(relative_kcal_mol, dtype=np.float64)
    fig = _figure(max(4.0, 0.35 * len(e) + 2), 3.4)
    ax = fig.subplots()
    x = np.arange(len(e))
    yerr = None if spread_kcal_mol is None else np.asarray(spread_kcal_mol, dtype=np.float64)
    ax.errorbar(x, e, yerr=yerr, fmt="o", color="C0", ecolor="0.4", capsize=3, ms=5)
    ax.set_xticks(x, [str(v) for v in labels] if labels is not None else [str(i + 1) for i in x], fontsize=8)
    ax.set_xlabel("conformer (input id), lowest first")
    ax.set_ylabel("relative energy (kcal/mol)")
    ax.axhline(0, color="0.7", lw=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(out_png, dpi=DPI)
    return out_png
