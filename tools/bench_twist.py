"""Twist probe: the energy of a partial double bond turned 90 degrees, model heads against QM.

Amide, thioamide and ester C-N / C-O bonds are single bonds on paper and conjugated in fact:
turning one by 90 degrees costs 10-28 kcal/mol, which is what keeps an amide from flipping in
MD at room temperature.  A model that learned conformers but not this conjugation puts the
twisted form far too low, and nothing in a conformer benchmark shows it (the minima are fine).
Each case is one MMFF geometry of the molecule, planar, and the same geometry with the bond
turned rigidly by 90 degrees (RDKit moves the atoms on one side; nothing relaxes), so every
method sees identical coordinates; the table gives E(twisted) - E(planar) in kcal/mol per
model head and per reference level (``mfcalc.label.levels``: GFN2-xTB in seconds, wB97X in
about a minute per molecule).

    python tools/bench_twist.py --model models/default.pt --heads xtb dft cc --levels gfn2_xtb wb97x_dz
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# name, SMILES, torsion (SMARTS, the last atom's side turns), planar angle of that torsion
CASES: List[Tuple[str, str, str, float]] = [
    ("formamide", "NC=O", "O=C-N-[H]", 0.0),
    ("N-methylacetamide", "CC(=O)NC", "O=C-N-[CH3]", 0.0),
    ("N,N-dimethylformamide", "CN(C)C=O", "O=C-N-[CH3]", 0.0),
    ("thioformamide", "NC=S", "S=C-N-[H]", 0.0),
    ("methyl acetate", "CC(=O)OC", "O=C-O-[CH3]", 0.0),
]


def twisted_pair(smiles: str, torsion: str, planar: float) -> Tuple[np.ndarray, np.ndarray]:
    """(numbers, positions (2, N, 3)): an MMFF geometry with the torsion set planar, and turned by 90."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolTransforms

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=0) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol)
    match = mol.GetSubstructMatch(Chem.MolFromSmarts(torsion))
    if not match:
        raise ValueError(f"{smiles}: no match for the torsion {torsion}")
    conf = mol.GetConformer()
    pair = []
    for angle in (planar, planar + 90.0):
        rdMolTransforms.SetDihedralDeg(conf, *match, angle)
        pair.append(conf.GetPositions())
    return np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), np.array(pair)


def model_twists(path: str, heads: Sequence[str], numbers: np.ndarray, pair: np.ndarray) -> Dict[str, float]:
    """E(twisted) - E(planar) in kcal/mol per head of the model file (float64)."""
    import torch

    from mfcalc import export, keys
    from mfcalc.units import KCAL_MOL_EV

    model, meta = export.load(path)
    model = model.double()
    fidelities = list(meta[keys.META_FIDELITIES])
    unknown = [h for h in heads if h not in fidelities]
    if unknown:
        raise ValueError(f"{path} has no head {', '.join(unknown)}; it has {', '.join(fidelities)}")
    z = torch.as_tensor(np.concatenate([numbers, numbers]))
    pos = torch.as_tensor(pair.reshape(-1, 3), dtype=torch.float64)
    mol_index = torch.repeat_interleave(torch.arange(2), len(numbers))
    with torch.no_grad():
        energy = model(z, pos, mol_index, 2, None, None)[keys.ENERGY].numpy()  # (2, F) eV
    return {h: float(energy[1, fidelities.index(h)] - energy[0, fidelities.index(h)]) / KCAL_MOL_EV for h in heads}


def level_twist(level: str, numbers: np.ndarray, pair: np.ndarray) -> float:
    """E(twisted) - E(planar) in kcal/mol at a reference level of theory."""
    from ase.units import Hartree, kcal, mol

    from mfcalc.label.levels import get_level

    compute = get_level(level).compute
    energies = [compute(numbers, positions, 0, 1, False)[0] for positions in pair]  # Hartree
    return (energies[1] - energies[0]) * Hartree / (kcal / mol)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="*", default=[], help="model files to probe (default: none)")
    p.add_argument("--heads", nargs="+", default=["cc"], help="heads of each model to probe")
    p.add_argument("--levels", nargs="*", default=["gfn2_xtb"], help="reference levels (mfcalc-label's names)")
    p.add_argument("--cases", nargs="*", help="names of the cases to run (default: all)")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    known = {c[0]: c for c in CASES}
    chosen = args.cases or list(known)
    bad = [c for c in chosen if c not in known]
    if bad:
        p.error(f"unknown case(s) {bad}; known: {', '.join(known)}")
    columns = [f"{m} [{h}]" for m in args.model for h in args.heads] + list(args.levels)
    result: Dict[str, Dict[str, float]] = {}
    for name in chosen:
        _, smiles, torsion, planar = known[name]
        numbers, pair = twisted_pair(smiles, torsion, planar)
        row: Dict[str, float] = {}
        for path in args.model:
            for head, value in model_twists(path, args.heads, numbers, pair).items():
                row[f"{path} [{head}]"] = value
        for level in args.levels:
            row[level] = level_twist(level, numbers, pair)
        result[name] = row
        print(f"{name}: done", file=sys.stderr, flush=True)
    print("| molecule (bond turned 90 degrees, rigid) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in result.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    print("\nE(twisted) - E(planar), kcal/mol, on identical geometries (MMFF, then a rigid 90-degree turn).")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
