"""Evaluate a saved model file on labelled data: per-fidelity energy and force errors.

Used by ``mfcalc-eval``.  The model may be evaluated on any fidelity binding whose name is
one of its heads, including labels it never trained on (e.g. CCSD(T) forces).  Energies
are compared after subtracting the model's own reference energies in float64, so the
numbers are exact to the model's precision rather than to float32 totals.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.data.dataset import load_data, molecule_codes
from mfcalc.data.fidelity import FidelitySpec
from mfcalc.data.records import MFData
from mfcalc.metrics import (
    accumulate_stats,
    centred_stats,
    group_sums_buffer,
    molecule_relative_rmse,
    residual_data,
    stats_to_metrics,
)


def evaluate_file(
    model_path: str,
    data_paths: Sequence[str],
    fidelities: Sequence[FidelitySpec],
    structures: Optional[np.ndarray] = None,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float64",
) -> Dict[str, Dict[str, Any]]:
    """Metrics per fidelity of the model file on the data (all structures, or ``structures``)."""
    return evaluate(model_path, load_data(list(data_paths), list(fidelities)), structures, batch_size, device, dtype)[0]


def evaluate(
    model_path: str,
    data: MFData,
    structures: Optional[np.ndarray] = None,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float64",
    predictions: bool = False,
    molecule_key: Optional[str] = "smiles",
    per_molecule: bool = False,
) -> Tuple[Dict[str, Dict[str, Any]], Optional[Dict[str, Dict[str, np.ndarray]]]]:
    """``(metrics per fidelity, predictions or None)`` of the model file on ``data``, whose
    fidelity names must be heads of the model.  ``predictions``: also the reference and
    predicted values behind the metrics (for parity plots).  Where the data name each
    structure's molecule (group column ``molecule_key``), the metrics also hold the error of
    energies relative within each molecule, which decides conformer rankings and which a
    total-energy RMSE hides under per-molecule offsets; ``per_molecule``: also that error for
    each molecule (``molecules``, worst first), to see which chemistry a model ranks worst."""
    model, meta = export.load(model_path, device=device)
    known = list(meta[keys.META_FIDELITIES])
    for name in data.fidelities:
        if name not in known:
            raise ValueError(f"fidelity {name!r} is not a head of {model_path}; it has: {', '.join(known)}")
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    model = model.to(torch_dtype)
    species = list(meta[keys.META_SPECIES])
    ref = meta[keys.META_REFERENCE_ENERGIES]
    reference = np.array([[ref[name][str(z)] for z in species] for name in data.fidelities])
    resid = residual_data(data, species, reference)
    idx = np.arange(len(data)) if structures is None else np.asarray(structures, dtype=np.int64)
    if len(idx) == 0:
        raise ValueError("no structures to evaluate")
    dev = torch.device(device)
    preds: Optional[Dict[str, Dict[str, np.ndarray]]] = {} if predictions else None
    molecule = molecule_codes(data, molecule_key) if molecule_key and molecule_key in data.groups else None
    sums = group_sums_buffer(molecule, len(data.fidelities))
    stats = accumulate_stats(
        model, resid, idx, known, batch_size, dev, torch_dtype, predictions=preds, molecule=molecule, molecule_sums=sums
    )
    metrics = stats_to_metrics(stats, data.fidelities, None if sums is None else centred_stats(sums))
    if per_molecule and sums is not None and molecule is not None and molecule_key is not None:
        for name, rows in zip(data.fidelities, _molecule_rows(data, molecule_key, molecule, sums)):
            metrics[name]["molecules"] = rows
    return metrics, preds


def _molecule_rows(data: MFData, key: str, molecule: np.ndarray, sums: torch.Tensor) -> List[List[Dict[str, Any]]]:
    """Per fidelity, ``{molecule, n_atoms, n, relative_rmse_kcal_mol}`` of every molecule with
    two or more labelled structures evaluated, worst first."""
    rmse, count = molecule_relative_rmse(sums)
    codes, names = data.groups[key]
    first = np.full(len(sums), -1, dtype=np.int64)
    present, first_index = np.unique(molecule, return_index=True)
    first[present] = first_index  # a structure of each molecule, for its name and size
    out: List[List[Dict[str, Any]]] = []
    for k in range(rmse.shape[1]):
        rows = [
            {
                "molecule": str(names[codes[first[g]]]),
                "n_atoms": int(data.n_atoms[first[g]]),
                "n": int(count[g, k]),
                "relative_rmse_kcal_mol": float(rmse[g, k]),
            }
            for g in np.nonzero(np.isfinite(rmse[:, k].numpy()))[0]
        ]
        out.append(sorted(rows, key=lambda r: -r["relative_rmse_kcal_mol"]))
    return out
