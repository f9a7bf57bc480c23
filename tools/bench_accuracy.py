"""Accuracy against CCSD(T)/cc-pVDZ on held-out molecules: mfcalc models vs GFN2-xTB, wB97X and ANI-1ccx.

The benchmark file (``data/benchmark/heldout.h5``, built by ``tools/campaign.sh heldout`` before
any model saw these molecules) holds

* (a) every conformer within 5 kcal/mol of 10 molecules with 4-6 heavy atoms
  (``data/campaign/heldout_conformers.smi``), GFN2-xTB minima, CCSD(T) single points;
* (b) thermal snapshots of 12 unseen small molecules (``heldout_small.smi``), CCSD(T)
  energies, and CCSD(T) forces on every second snapshot.

Every method is scored on the same structures: relative energies (each molecule's mean error
removed, as data/README.md defines relE) and forces where CCSD(T) forces exist.  GFN2-xTB and
wB97X/6-31G* come from the labels in the file; ANI-1ccx (``../shared/peers``, trained to
CCSD(T)*/CBS, so part of its error is the basis) through TorchANI when it is installed.

    python tools/bench_accuracy.py [--model models/default.pt ...] [--json out.json]

``--reference wb97x_dz`` (or ``gfn2_xtb``) scores everything against that level instead, on the
same structures: ``--heads dft --reference wb97x_dz`` shows how well a head fits its own level,
which separates a head's training error from the gap between the levels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.conformers.molecules import read_smiles_list
from mfcalc.data import parse_fidelity, read_hdf5
from mfcalc.data.fidelity import head_index
from mfcalc.data.hdf5 import list_keys
from mfcalc.data.records import MFData
from mfcalc.units import KCAL_MOL_EV

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ani_peer import PEERS, load_ani1ccx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(REPO, "data", "benchmark", "heldout.h5")
LISTS = os.path.join(REPO, "data", "campaign")
LEVELS = {"CCSD(T)/cc-pVDZ": "ccsd(t)_dz", "GFN2-xTB": "gfn2_xtb", "wB97X/6-31G*": "wb97x_dz"}
Predict = Callable[[MFData, np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]  # eV, eV/A (A, 3)


def column(level: str) -> str:
    """The fidelity name a level's column gets (a name is one word: ccsd(t)_dz -> ccsdt_dz)."""
    return level.replace("(t)", "t")


def load(path: str, reference: str = "ccsd(t)_dz") -> MFData:
    """The file's reference level (column 0) and the other levels; forces only where the file has
    them (the CCSD(T) forces are labelled last, so a growing benchmark file may have none yet)."""
    present = set(list_keys(path))

    def spec(level: str):
        forces = f",{level}.forces" if f"{level}.forces" in present else ""
        return parse_fidelity(f"{column(level)}={level}.energy{forces}")

    return read_hdf5(path, [spec(reference)] + [spec(lv) for lv in LEVELS.values() if lv != reference])


def model_predictor(path: str, fidelity: str = "cc") -> Predict:
    model, meta = export.load(path)
    model = model.double()
    head = head_index(list(meta[keys.META_FIDELITIES]), fidelity)

    def predict(data: MFData, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        energy, forces = np.zeros(len(rows)), []
        for k, i in enumerate(rows):
            atoms = data.atom_index(np.array([i]))
            z = torch.as_tensor(np.asarray(data.numbers[atoms]), dtype=torch.long)
            x = torch.as_tensor(np.asarray(data.positions[atoms]), dtype=torch.float64)
            out = model.compute(z, x, torch.zeros(len(z), dtype=torch.long), 1, head, forces_spread=False)
            energy[k] = float(out[keys.ENERGY][0].detach())
            forces.append(out[keys.FORCES].detach().numpy())
        return energy, np.concatenate(forces)

    return predict


def constant_predictor(data: MFData, rows: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    return np.zeros(len(rows)), None


def label_predictor(column: int) -> Predict:
    def predict(data: MFData, rows: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        name = data.fidelities[column]
        forces = np.asarray(data.forces[name])[data.atom_index(rows)] if name in data.forces else None
        return np.asarray(data.energy[rows, column]), forces

    return predict


def ani_predictor(peers: str) -> Optional[Predict]:
    """ANI-1ccx through TorchANI (Hartree -> eV here, once), or None when unavailable."""
    model = load_ani1ccx(peers)
    if model is None:
        return None
    from ase.units import Hartree

    ani = model.double()

    def predict(data: MFData, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        energy, forces = np.zeros(len(rows)), []
        for k, i in enumerate(rows):
            atoms = data.atom_index(np.array([i]))
            z = torch.as_tensor(np.asarray(data.numbers[atoms])[None], dtype=torch.long)
            x = torch.as_tensor(np.asarray(data.positions[atoms])[None], dtype=torch.float64).requires_grad_(True)
            e = ani((z, x)).energies.sum()
            energy[k] = float(e.detach()) * Hartree
            forces.append(-torch.autograd.grad(e, x)[0][0].numpy() * Hartree)
        return energy, np.concatenate(forces)

    return predict


def relative_rmse(pred: np.ndarray, ref: np.ndarray, groups: np.ndarray) -> float:
    """RMSE (kcal/mol) after removing each molecule's mean error."""
    err = pred - ref
    for g in np.unique(groups):
        err[groups == g] -= err[groups == g].mean()
    return float(np.sqrt(np.mean(err**2)) / KCAL_MOL_EV)


def score(data: MFData, predict: Predict, sets: Dict[str, np.ndarray], species_ok: np.ndarray) -> Dict[str, float]:
    """relE RMSE per set against the reference (column 0), and force RMSE where the reference
    has forces (kcal/mol, kcal/mol/A)."""
    smiles = data.group_labels("smiles")
    ref_e = data.energy[:, 0]
    out: Dict[str, float] = {}
    for name, rows in sets.items():
        rows = rows[np.isfinite(ref_e[rows]) & species_ok[rows]]
        if len(rows) == 0:  # nothing labelled yet in a growing benchmark file
            continue
        energy, _ = predict(data, rows)
        ok = np.isfinite(energy)
        pred, ref, mols = energy[ok], ref_e[rows][ok], smiles[rows][ok]
        out[f"{name} relE"] = relative_rmse(pred, ref, mols)
        out[f"{name} n"] = int(ok.sum())
        for mol in np.unique(mols):  # per molecule, for the --per-molecule table
            m = mols == mol
            out[f"{name}: {mol}"] = relative_rmse(pred[m], ref[m], mols[m])
            out[f"{name}: {mol} n"] = int(m.sum())
    fmask = data.forces_mask()[:, 0] & species_ok
    rows = np.nonzero(fmask & np.isin(np.arange(len(data)), sets["unseen small"]))[0]
    if len(rows):
        _, forces = predict(data, rows)
        ref = np.asarray(data.forces[data.fidelities[0]])[data.atom_index(rows)]
        if forces is not None and np.isfinite(forces).all():
            out["forces"] = float(np.sqrt(np.mean((forces - ref) ** 2)) / KCAL_MOL_EV)
        out["forces n"] = int(len(rows))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA)
    p.add_argument("--model", nargs="*", default=[os.path.join(REPO, "models", "default.pt")])
    p.add_argument("--peers", default=PEERS)
    p.add_argument(
        "--conformer-molecules",
        default=os.path.join(LISTS, "heldout_conformers.smi"),
        help="SMILES list of the conformer set (a)",
    )
    p.add_argument(
        "--small-molecules",
        default=os.path.join(LISTS, "heldout_small.smi"),
        help="SMILES list of the unseen-small-molecule set (b)",
    )
    p.add_argument(
        "--heads",
        nargs="+",
        default=["cc"],
        help="heads of each model to score against the reference (default: cc); e.g. cc dft xtb shows how much "
        "of a head's error the lower levels share",
    )
    p.add_argument(
        "--reference",
        default="ccsd(t)_dz",
        choices=sorted(LEVELS.values()),
        help="the level every method is scored against (default: CCSD(T)/cc-pVDZ)",
    )
    p.add_argument("--per-molecule", action="store_true", help="also print relE RMSE per molecule and method")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not os.path.exists(args.data):
        print(f"no benchmark file {args.data}: build it with tools/campaign.sh heldout", file=sys.stderr)
        return 2
    data = load(args.data, args.reference)
    reference_name = next(label for label, level in LEVELS.items() if level == args.reference)
    smiles = data.group_labels("smiles")
    sets = {
        "conformers": np.nonzero(np.isin(smiles, read_smiles_list(args.conformer_molecules)))[0],
        "unseen small": np.nonzero(np.isin(smiles, read_smiles_list(args.small_molecules)))[0],
    }
    methods: Dict[str, Tuple[Predict, List[int]]] = {}
    for path in args.model:
        meta = export.load(path)[1]
        for head in args.heads:
            if head not in meta[keys.META_FIDELITIES]:
                p.error(f"--heads: {path} has no head {head!r}; its heads are {meta[keys.META_FIDELITIES]}")
            methods[f"mfcalc {os.path.relpath(path)} ({head} head)"] = (
                model_predictor(path, head),
                meta[keys.META_SPECIES],
            )
    for label, level in LEVELS.items():
        if level != args.reference:
            methods[label] = (label_predictor(data.fidelities.index(column(level))), list(range(1, 119)))
    # the floor every method must beat: the same energy for every structure of a molecule
    # (its relE RMSE is the spread of the reference's relative energies themselves)
    methods["no method: a constant per molecule"] = (constant_predictor, list(range(1, 119)))
    ani = ani_predictor(args.peers)
    if ani is not None:
        methods["ANI-1ccx (TorchANI)"] = (ani, [1, 6, 7, 8])
    owner = np.repeat(np.arange(len(data)), data.n_atoms)
    rows: Dict[str, Dict[str, float]] = {}
    for name, (predict, species) in methods.items():
        bad = np.zeros(len(data), dtype=bool)
        bad[np.unique(owner[~np.isin(np.asarray(data.numbers), species)])] = True
        rows[name] = score(data, predict, sets, ~bad)
    cols = ["conformers relE", "unseen small relE", "forces"]
    print(
        "| method | conformers: relE RMSE (n) | unseen small molecules: relE RMSE (n) | "
        f"{reference_name.split('/')[0]} forces RMSE (n) |"
    )
    print("|---|---|---|---|")
    for name, r in rows.items():
        cells = [
            f"{r[c]:.2f} ({r[c.replace('relE', 'n').replace('forces', 'forces n')]})" if c in r else "-" for c in cols
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"\nkcal/mol and kcal/mol/A against {reference_name}; each molecule's mean error removed; methods are scored "
        "only on molecules whose elements they know (ANI-1ccx: H, C, N, O)."
    )
    if args.per_molecule:
        names = list(rows)
        mols = sorted({k for r in rows.values() for k in r if ": " in k and not k.endswith(" n")})
        print("\n| molecule | structures | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for key in mols:
            n = max(r.get(key + " n", 0) for r in rows.values())
            cells = [f"{rows[m][key]:.2f}" if key in rows[m] else "-" for m in names]
            print(f"| {key} | {n} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
