"""Error metrics of a model on labelled structures, per fidelity, in eV and kcal/mol.

Errors are summarised per fidelity as additive sums (squared error, absolute error, count),
so the statistics of several batches or DistributedDataParallel ranks add up exactly before
the non-linear RMSE is taken.  Training (:mod:`mfcalc.train.loss`) builds its loss from the
same statistics; evaluation uses them without importing the training package.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from mfcalc import keys
from mfcalc.data.dataset import iterate_batches, species_counts
from mfcalc.data.fidelity import head_index
from mfcalc.data.records import MFData
from mfcalc.model import grad
from mfcalc.units import KCAL_MOL_EV

ENERGY, FORCES = 0, 1
SUMSQ, SUMABS, COUNT = 0, 1, 2


def error_stats(err: Tensor, mask: Tensor) -> Tensor:
    """(3,) [sum of squares, sum of |err|, count] of ``err`` where ``mask`` (broadcastable) is True."""
    m = mask.to(err.dtype).expand_as(err)
    e = err * m
    return torch.stack([(e * e).sum(), e.abs().sum(), m.sum()])


def batch_stats(
    pred_energy: Tensor,
    energy: Tensor,
    energy_mask: Tensor,
    pred_forces: Tensor,
    forces: Tensor,
    forces_mask: Tensor,
    mol_index: Tensor,
    force_fidelities: Sequence[int],
    energy_per_atom: bool = False,
) -> Tensor:
    """Error statistics (F, 2, 3) in eV and eV/Angstrom for one batch.

    Args:
        pred_energy, energy: (B, F) predicted and reference energies (same reference shift).
        energy_mask, forces_mask: (B, F) bool.
        pred_forces, forces: (A, F, 3); only ``force_fidelities`` columns are compared.
        mol_index: (A,) structure of each atom.
        energy_per_atom: compare energies per atom (eV/atom) instead of per structure, so
            large structures do not dominate the energy term (a training option; reported
            metrics stay per structure).
    """
    n_fid = energy.shape[1]
    rows: List[Tensor] = []
    zero = torch.zeros(3, dtype=pred_energy.dtype, device=pred_energy.device)
    e_err = pred_energy - energy
    if energy_per_atom:
        e_err = e_err / torch.bincount(mol_index, minlength=energy.shape[0]).clamp(min=1).to(energy.dtype)[:, None]
    for k in range(n_fid):
        e_stats = error_stats(e_err[:, k], energy_mask[:, k])
        if k in force_fidelities:
            atom_mask = forces_mask[mol_index, k][:, None]
            f_stats = error_stats(pred_forces[:, k] - forces[:, k], atom_mask)
        else:
            f_stats = zero
        rows.append(torch.stack([e_stats, f_stats]))
    return torch.stack(rows)


def group_sums(residual: Tensor, mask: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """(G, F, 3) [sum of r^2, sum of r, count] of the energy residuals ``r`` (B, F) of each group.

    A group is one molecule's structures (``group`` (B,) in [0, G)); only labelled entries
    (``mask`` (B, F)) count.  The sums add up exactly over batch shards and ranks, and from
    them :func:`centred_stats` gives the error of the energies *relative within each molecule*.
    """
    m = mask.to(residual.dtype)
    r = residual * m
    per_structure = torch.stack([r * r, r, m], dim=-1)  # (B, F, 3)
    out = torch.zeros(n_groups, residual.shape[1], 3, dtype=residual.dtype, device=residual.device)
    return out.index_add(0, group, per_structure)


def group_sums_buffer(molecule: Optional[np.ndarray], n_fidelities: int) -> Optional[Tensor]:
    """Zeroed (molecules, F, 3) float64 sums for :func:`accumulate_stats`'s ``molecule_sums``,
    or ``None`` where no molecule codes are given."""
    if molecule is None:
        return None
    return torch.zeros(int(molecule.max()) + 1, n_fidelities, 3, dtype=torch.float64)


def centred_stats(sums: Tensor) -> Tensor:
    """(F, 2) [sum of squared deviations from each group's mean residual, structures counted]
    over the groups with at least two labelled structures: the squared error of relative
    energies within each molecule, a constant offset per molecule removed."""
    n = sums[..., 2]
    pairs = n >= 2
    deviation = sums[..., 0] - sums[..., 1] ** 2 / n.clamp(min=1.0)
    zero = torch.zeros_like(deviation)
    return torch.stack([torch.where(pairs, deviation, zero).sum(dim=0), torch.where(pairs, n, zero).sum(dim=0)], dim=-1)


def relative_rmse(centred: Tensor) -> Tensor:
    """(F,) RMSE of relative energies within molecules in kcal/mol from (F, 2) eV statistics
    (:func:`centred_stats`); 0 where no molecule had two labelled structures (the loss term)."""
    n = centred[:, 1]
    mse = centred[:, 0].clamp(min=0.0) / n.clamp(min=1.0) / KCAL_MOL_EV**2
    return torch.where(n > 0, torch.sqrt(mse + 1e-20), torch.zeros_like(mse))


def molecule_relative_rmse(sums: Tensor) -> Tuple[Tensor, Tensor]:
    """``(rmse (G, F) kcal/mol, count (G, F))`` of the energies relative within each molecule
    from :func:`group_sums`'s sums: which molecules a model ranks worst; NaN where a molecule
    has fewer than two labelled structures."""
    n = sums[..., 2]
    deviation = (sums[..., 0] - sums[..., 1] ** 2 / n.clamp(min=1.0)).clamp(min=0.0)
    rmse = torch.sqrt(deviation / n.clamp(min=1.0)) / KCAL_MOL_EV
    return torch.where(n >= 2, rmse, torch.full_like(rmse, float("nan"))), n


def relative_rmse_values(centred: Tensor) -> List[Optional[float]]:
    """:func:`relative_rmse` for reports: ``None``, not 0, where nothing was compared."""
    return [float(r) if n > 0 else None for r, n in zip(relative_rmse(centred), centred[:, 1])]


def residual_data(data: MFData, species: Sequence[int], reference: np.ndarray) -> MFData:
    """A view of ``data`` whose energies are minus the per-species reference energies.

    The subtraction is done once in float64, so float32 training and evaluation only ever
    see chemistry-sized numbers (a few eV), never totals of thousands of eV.

    Args:
        reference: (F, n_species) eV, in the order of ``data.fidelities``.
    """
    e0 = species_counts(data, species) @ np.asarray(reference, dtype=np.float64).T
    return MFData(
        fidelities=data.fidelities,
        numbers=data.numbers,
        positions=data.positions,
        offsets=data.offsets,
        cell=data.cell,
        pbc=data.pbc,
        energy=np.asarray(data.energy) - e0,
        forces=data.forces,
        groups=data.groups,
    )


def _predicted_batches(
    model,
    data: MFData,
    structures: np.ndarray,
    model_fidelities: Sequence[str],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    forces_mask: Optional[np.ndarray] = None,
):
    """(batch, predicted residual energies (B, F_data), predicted forces (A, F_data, 3),
    force columns) for every batch: the one prediction loop of statistics and plots."""
    heads = [head_index(list(model_fidelities), name) for name in data.fidelities]
    force_cols = [k for k, name in enumerate(data.fidelities) if name in data.forces]
    for batch in iterate_batches(data, structures, batch_size, dtype=dtype, forces_mask=forces_mask):
        batch = batch.to(device)
        positions = batch.positions.detach().requires_grad_(bool(force_cols))
        with torch.set_grad_enabled(bool(force_cols)):
            out = model(batch.numbers, positions, batch.mol_index, batch.n_mol, batch.cell, batch.pbc)
            levels = out[keys.ENERGY_LEVELS][:, 1:].sum(dim=1)[:, heads]  # (B, F_data)
            wanted = [k for k in force_cols if bool(batch.forces_mask[:, k].any())]
            pred_f = grad.forces_of_columns(levels, positions, wanted) if wanted else torch.zeros_like(batch.forces)
        yield batch, levels.detach(), pred_f.detach(), force_cols


def accumulate_stats(
    model,
    data: MFData,
    structures: np.ndarray,
    model_fidelities: Sequence[str],
    batch_size: int = 64,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    forces_mask: Optional[np.ndarray] = None,
    predictions: Optional[Dict[str, Dict[str, np.ndarray]]] = None,
    molecule: Optional[np.ndarray] = None,
    molecule_sums: Optional[Tensor] = None,
) -> torch.Tensor:
    """Summed error statistics (F_data, 2, 3) of ``model`` on ``data`` (residual energies).

    ``model`` is anything with the model ``forward`` (eager, ensemble or TorchScript); its
    prediction compared to the residual energy is the sum of hierarchy levels n >= 1.
    ``model_fidelities`` maps data fidelities to model heads by name; ``forces_mask``
    (``data.forces_mask()``) may be passed when the caller already has it (every epoch).
    ``predictions``: a dict that receives, in the same pass, the values behind the statistics
    for parity plots: per data fidelity, where labelled, ``structure`` (indices into ``data``),
    ``energy_ref`` / ``energy_pred`` (residual energies per structure, eV), ``n_atoms`` and
    ``forces_ref`` / ``forces_pred`` (components, eV/A, in the structures' atom order).
    ``molecule`` (S,) codes of ``data``'s structures and ``molecule_sums`` (max code + 1, F_data, 3):
    the per-molecule :func:`group_sums` are added into it in the same pass (relative energies).
    """
    total = torch.zeros(len(data.fidelities), 2, 3, dtype=torch.float64)
    fields = ("structure", "energy_ref", "energy_pred", "n_atoms", "forces_ref", "forces_pred")
    parts: Dict[str, Dict[str, List[np.ndarray]]] = {name: {f: [] for f in fields} for name in data.fidelities}
    for batch, levels, pred_f, force_cols in _predicted_batches(
        model, data, structures, model_fidelities, batch_size, device, dtype, forces_mask
    ):
        stats = batch_stats(
            levels,
            batch.energy,
            batch.energy_mask,
            pred_f,
            batch.forces,
            batch.forces_mask,
            batch.mol_index,
            force_cols,
        )
        total += stats.double().cpu()
        if molecule is not None and molecule_sums is not None:  # sums of the batch's molecules only
            codes, local = np.unique(molecule[batch.index.cpu().numpy()], return_inverse=True)
            group = torch.as_tensor(local.reshape(-1), device=levels.device)
            sums = group_sums(levels - batch.energy, batch.energy_mask, group, len(codes))
            molecule_sums.index_add_(0, torch.as_tensor(codes), sums.double().cpu())
        if predictions is not None:
            _append_predictions(parts, data.fidelities, batch, levels, pred_f, force_cols)
    if predictions is not None:
        for name, p in parts.items():
            predictions[name] = {f: np.concatenate(v) if v else np.zeros(0) for f, v in p.items()}
    return total


def _append_predictions(parts, fidelities: Sequence[str], batch, levels: Tensor, pred_f: Tensor, force_cols) -> None:
    counts = torch.bincount(batch.mol_index, minlength=batch.n_mol).cpu().numpy()
    for k, name in enumerate(fidelities):
        have = batch.energy_mask[:, k].cpu().numpy()
        p = parts[name]
        p["structure"].append(batch.index.cpu().numpy()[have])
        p["energy_ref"].append(batch.energy[:, k].cpu().numpy()[have])
        p["energy_pred"].append(levels[:, k].cpu().numpy()[have])
        p["n_atoms"].append(counts[have])
        if k in force_cols:
            atoms = batch.forces_mask[batch.mol_index, k].cpu().numpy()
            p["forces_ref"].append(batch.forces[:, k].cpu().numpy()[atoms].reshape(-1))
            p["forces_pred"].append(pred_f[:, k].cpu().numpy()[atoms].reshape(-1))


def stats_to_metrics(
    stats: torch.Tensor, fidelities: Sequence[str], centred: Optional[Tensor] = None
) -> Dict[str, Dict[str, Any]]:
    """Per-fidelity metrics dict from summed statistics; ``None`` where there are no labels.
    With ``centred`` (:func:`centred_stats`) also the RMSE of energies relative within each
    molecule (``relative_rmse_kcal_mol``: each molecule's mean error removed, what conformer
    rankings depend on) and ``n_relative``, the structures of molecules with at least two."""
    out: Dict[str, Dict[str, Any]] = {}
    relative = None if centred is None else relative_rmse_values(centred)
    for k, name in enumerate(fidelities):
        row: Dict[str, Any] = {}
        for term, label, unit_ev, unit_kcal in (
            (ENERGY, "energy", "ev", "kcal_mol"),
            (FORCES, "forces", "ev_a", "kcal_mol_a"),
        ):
            s = stats[k, term]
            n = float(s[COUNT])
            rmse: Optional[float] = float(np.sqrt(float(s[SUMSQ]) / n)) if n > 0 else None
            mae: Optional[float] = float(s[SUMABS]) / n if n > 0 else None
            row[f"{label}_rmse_{unit_ev}"] = rmse
            row[f"{label}_mae_{unit_ev}"] = mae
            row[f"{label}_rmse_{unit_kcal}"] = rmse / KCAL_MOL_EV if rmse is not None else None
            row[f"{label}_mae_{unit_kcal}"] = mae / KCAL_MOL_EV if mae is not None else None
        row["n_energy"] = int(stats[k, ENERGY, COUNT])
        row["n_force_components"] = int(stats[k, FORCES, COUNT])
        if centred is not None and relative is not None:
            row["relative_rmse_kcal_mol"] = relative[k]
            row["n_relative"] = int(centred[k, 1])
        out[name] = row
    return out


def format_table(metrics: Dict[str, Dict[str, Any]], title: str = "") -> str:
    """Plain-text table of per-fidelity metrics (kcal/mol and eV)."""

    def f(x: Optional[float], fmt: str = "{:9.4f}") -> str:
        return fmt.format(x) if x is not None else f"{'-':>9}"

    lines: List[str] = []
    if title:
        lines.append(title)
    lines.append(
        f"{'fidelity':<10} {'n_E':>6} {'E RMSE':>9} {'E MAE':>9} {'E RMSE':>9} {'n_F':>7} {'F RMSE':>9} "
        f"{'F MAE':>9} {'F RMSE':>9}"
    )
    lines.append(
        f"{'':<10} {'':>6} {'kcal/mol':>9} {'kcal/mol':>9} {'meV':>9} {'comp.':>7} {'kcal/mol/A':>9} "
        f"{'kcal/mol/A':>9} {'meV/A':>9}"
    )
    relative = any("n_relative" in m for m in metrics.values())
    if relative:
        lines[-2] += f" {'n_rel':>6} {'relE RMSE':>9}"
        lines[-1] += f" {'':>6} {'kcal/mol':>9}"
    for name, m in metrics.items():
        e_mev = m["energy_rmse_ev"] * 1000 if m["energy_rmse_ev"] is not None else None
        f_mev = m["forces_rmse_ev_a"] * 1000 if m["forces_rmse_ev_a"] is not None else None
        lines.append(
            f"{name:<10} {m['n_energy']:>6d} {f(m['energy_rmse_kcal_mol'])} {f(m['energy_mae_kcal_mol'])} "
            f"{f(e_mev, '{:9.2f}')} {m['n_force_components']:>7d} {f(m['forces_rmse_kcal_mol_a'])} "
            f"{f(m['forces_mae_kcal_mol_a'])} {f(f_mev, '{:9.2f}')}"
        )
        if relative:
            lines[-1] += f" {m.get('n_relative', 0):>6d} {f(m.get('relative_rmse_kcal_mol'))}"
    if relative:
        lines.append("relE: energies relative within each molecule (its mean error removed), over molecules with 2+")
    return "\n".join(lines)


def format_molecules(metrics: Dict[str, Dict[str, Any]], top: int) -> str:
    """Per fidelity, the ``top`` molecules with the largest relE RMSE (``molecules`` of
    :func:`mfcalc.evaluate.evaluate` with ``per_molecule``), worst first."""
    lines: List[str] = []
    for name, m in metrics.items():
        rows = m.get("molecules")
        if rows is None:
            continue
        lines.append(f"{name}: {min(top, len(rows))} of {len(rows)} molecules with the largest relE RMSE")
        lines.append(f"  {'relE RMSE':>9} {'n':>5} {'atoms':>5}  molecule")
        lines.extend(
            f"  {r['relative_rmse_kcal_mol']:9.3f} {r['n']:>5d} {r['n_atoms']:>5d}  {r['molecule']}" for r in rows[:top]
        )
    if not lines:
        return "no per-molecule errors: the data name no molecules (group column, --molecule-key)"
    return "\n".join(lines)
