"""Write a subset of the structures of any file mfcalc reads as extxyz (campaign helper).

    python tools/pick_frames.py IN [--every K] [--max-heavy-atoms N] [--level-missing L] --out OUT.extxyz

``--every K`` keeps every K-th structure of each molecule; ``--max-heavy-atoms`` drops larger
molecules; ``--level-missing L`` keeps only structures without an ``L.energy`` label (HDF5).
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np

from mfcalc.data.dataset import read_file, read_structures
from mfcalc.data.fidelity import FidelitySpec
from mfcalc.files import atomic_write_text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("--out", required=True)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--max-heavy-atoms", type=int)
    p.add_argument("--level-missing", metavar="LEVEL")
    args = p.parse_args(argv)
    import ase.io
    from ase import Atoms

    data, charge, mult = read_structures(args.source)
    keep = np.ones(len(data), dtype=bool)
    molecule = data.group_labels("smiles") if "smiles" in data.groups else data.group_labels("formula")
    if args.every > 1:
        seen: dict = {}
        for i, m in enumerate(molecule):
            seen[m] = seen.get(m, -1) + 1
            keep[i] &= seen[m] % args.every == 0
    if args.max_heavy_atoms is not None:
        keep &= data.heavy_atoms <= args.max_heavy_atoms
    if args.level_missing:
        labelled = read_file(args.source, [FidelitySpec("x", f"{args.level_missing}.energy")])
        keep &= ~np.isfinite(labelled.energy[:, 0])
    frames = []
    for i in np.nonzero(keep)[0]:
        atoms = data.atom_index(np.array([i]))
        a = Atoms(numbers=np.asarray(data.numbers[atoms]), positions=np.asarray(data.positions[atoms]))
        a.info.update({"smiles": str(molecule[i]), "charge": int(charge[i]), "multiplicity": int(mult[i])})
        frames.append(a)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    atomic_write_text(args.out, buf.getvalue())
    print(f"{len(frames)} of {len(data)} structures -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
