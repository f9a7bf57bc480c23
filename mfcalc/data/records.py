"""Flat, columnar storage of multi-fidelity labelled structures.

One array per field for the whole data set, never one Python object per structure, so
that millions of structures (ANI-1x is ~5 M) fit and can be memory-mapped from ``.npy``
files.  Structure ``s`` owns atoms ``offsets[s]:offsets[s + 1]``.

Fields (S structures, A atoms in total, F fidelities):

============  ==============  =======  ==============================================
name          shape           dtype    meaning
============  ==============  =======  ==============================================
numbers       (A,)            uint8    atomic numbers
positions     (A, 3)          float64  Angstrom
offsets       (S + 1,)        int64    first atom of each structure
cell          (S, 3, 3)       float64  Angstrom, rows are lattice vectors (0 if none)
pbc           (S, 3)          bool     periodic directions
energy        (S, F)          float64  eV, NaN where the label is absent
forces[name]  (A, 3)          float64  eV/Angstrom, NaN where absent; only fidelities
                                       that were bound to a forces key
groups[key]   (S,) + names    int32    integer codes into a list of labels (formula,
                                       SMILES, source file) used for grouped splits
============  ==============  =======  ==============================================
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from mfcalc.files import atomic_write_text

GroupColumn = Tuple[np.ndarray, List[str]]


def unnamed(label: str) -> bool:
    """Whether a group label names nothing (an empty SMILES, or one written as ``None``)."""
    return str(label).strip() in ("", "None")


@dataclass
class MFData:
    """Columnar multi-fidelity data set (see module docstring for the fields)."""

    fidelities: Tuple[str, ...]
    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: np.ndarray
    forces: Dict[str, np.ndarray] = field(default_factory=dict)
    groups: Dict[str, GroupColumn] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fidelities = tuple(self.fidelities)
        n_struct = len(self.offsets) - 1
        n_atoms = int(self.offsets[-1]) if n_struct >= 0 else 0
        problems = []
        if self.numbers.shape != (n_atoms,):
            problems.append(f"numbers {self.numbers.shape} != ({n_atoms},)")
        if self.positions.shape != (n_atoms, 3):
            problems.append(f"positions {self.positions.shape} != ({n_atoms}, 3)")
        if self.energy.shape != (n_struct, len(self.fidelities)):
            problems.append(f"energy {self.energy.shape} != ({n_struct}, {len(self.fidelities)})")
        if self.cell.shape != (n_struct, 3, 3) or self.pbc.shape != (n_struct, 3):
            problems.append("cell/pbc shapes do not match the number of structures")
        for name, f in self.forces.items():
            if name not in self.fidelities:
                problems.append(f"forces given for unknown fidelity {name!r}")
            elif f.shape != (n_atoms, 3):
                problems.append(f"forces[{name!r}] {f.shape} != ({n_atoms}, 3)")
        for key, (codes, _names) in self.groups.items():
            if codes.shape != (n_struct,):
                problems.append(f"group column {key!r} has {codes.shape} codes for {n_struct} structures")
        if problems:
            raise ValueError("inconsistent MFData: " + "; ".join(problems))

    # ---- sizes and masks -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """(S,) number of atoms of each structure."""
        return np.diff(self.offsets)

    @property
    def heavy_atoms(self) -> np.ndarray:
        """(S,) number of non-hydrogen atoms of each structure (QM cost grows with it)."""
        owner = np.repeat(np.arange(len(self)), self.n_atoms)
        return np.bincount(owner, weights=np.asarray(self.numbers) > 1, minlength=len(self)).astype(np.int64)

    @property
    def energy_mask(self) -> np.ndarray:
        """(S, F) bool: structure carries this fidelity's energy."""
        return np.isfinite(self.energy)

    def forces_mask(self) -> np.ndarray:
        """(S, F) bool: structure carries finite forces on every atom for this fidelity."""
        mask = np.zeros((len(self), len(self.fidelities)), dtype=bool)
        owner = np.repeat(np.arange(len(self)), self.n_atoms)
        for k, name in enumerate(self.fidelities):
            f = self.forces.get(name)
            if f is None:
                continue
            bad_atoms = np.bincount(owner, weights=~np.isfinite(f).all(axis=1), minlength=len(self))
            mask[:, k] = (bad_atoms == 0) & (self.n_atoms > 0)
        return mask

    def fingerprint(self) -> str:
        """A hash of the structures and their labels: a resumed run checks that its split's
        row numbers still name the same structures (data files that grew or were relabelled
        reorder them)."""
        h = hashlib.sha256()
        for a in (
            self.offsets,
            self.numbers,
            self.positions,
            self.energy,
            *(self.forces[k] for k in sorted(self.forces)),
        ):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((self.fidelities, sorted(self.forces))).encode())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        em, fm = self.energy_mask, self.forces_mask()
        parts = [f"{len(self)} structures, {int(self.offsets[-1])} atoms"]
        for k, name in enumerate(self.fidelities):
            parts.append(f"{name}: {int(em[:, k].sum())} energies, {int(fm[:, k].sum())} with forces")
        return "; ".join(parts)

    # ---- selection and merging --------------------------------------------------------
    def atom_index(self, structures: np.ndarray) -> np.ndarray:
        """Atom rows of the given structures, in order, built without a Python loop."""
        structures = np.asarray(structures, dtype=np.int64)
        counts = self.n_atoms[structures]
        starts = self.offsets[:-1][structures]
        total = int(counts.sum())
        first_out = np.cumsum(counts) - counts
        return np.repeat(starts - first_out, counts) + np.arange(total, dtype=np.int64)

    def subset(self, structures: np.ndarray) -> MFData:
        """A new MFData holding the given structures (copied into memory)."""
        structures = np.asarray(structures, dtype=np.int64)
        atoms = self.atom_index(structures)
        offsets = np.zeros(len(structures) + 1, dtype=np.int64)
        np.cumsum(self.n_atoms[structures], out=offsets[1:])
        return MFData(
            fidelities=self.fidelities,
            numbers=np.asarray(self.numbers[atoms]),
            positions=np.asarray(self.positions[atoms]),
            offsets=offsets,
            cell=np.asarray(self.cell[structures]),
            pbc=np.asarray(self.pbc[structures]),
            energy=np.asarray(self.energy[structures]),
            forces={k: np.asarray(v[atoms]) for k, v in self.forces.items()},
            groups={k: (codes[structures], names) for k, (codes, names) in self.groups.items()},
        )

    def with_fidelities(self, names: Sequence[str]) -> MFData:
        """The same structures with fidelity columns in the order ``names`` (absent ones NaN)."""
        names = tuple(names)
        energy = np.full((len(self), len(names)), np.nan)
        for k, name in enumerate(names):
            if name in self.fidelities:
                energy[:, k] = self.energy[:, self.fidelities.index(name)]
        return MFData(
            fidelities=names,
            numbers=self.numbers,
            positions=self.positions,
            offsets=self.offsets,
            cell=self.cell,
            pbc=self.pbc,
            energy=energy,
            forces={k: v for k, v in self.forces.items() if k in names},
            groups=self.groups,
        )

    def group_labels(self, key: str) -> np.ndarray:
        """(S,) string labels of a group column, e.g. ``"smiles"`` or ``"formula"``."""
        if key not in self.groups:
            raise ValueError(f"no group column {key!r} in the data; available: {sorted(self.groups)}")
        codes, names = self.groups[key]
        return np.asarray(names, dtype=object)[codes]

    # ---- persistence (memory-mappable) ------------------------------------------------
    def save(self, directory: str) -> None:
        """Write every field as ``.npy`` (loadable with ``mmap_mode='r'``) plus a JSON index."""
        os.makedirs(directory, exist_ok=True)
        arrays = {
            "numbers": self.numbers,
            "positions": self.positions,
            "offsets": self.offsets,
            "cell": self.cell,
            "pbc": self.pbc,
            "energy": self.energy,
        }
        for name, f in self.forces.items():
            arrays[f"forces.{name}"] = f
        for key, (codes, _names) in self.groups.items():
            arrays[f"group.{key}"] = codes
        for name, arr in arrays.items():
            target = os.path.join(directory, name + ".npy")
            if (
                isinstance(arr, np.memmap)
                and arr.filename is not None
                and os.path.abspath(arr.filename) == os.path.abspath(target)
            ):
                arr.flush()  # already written in place (HDF5 reader with a cache directory)
                continue
            np.save(target, np.ascontiguousarray(arr))
        index = {
            "fidelities": list(self.fidelities),
            "forces": list(self.forces),
            "groups": {k: names for k, (_c, names) in self.groups.items()},
        }
        atomic_write_text(os.path.join(directory, "index.json"), json.dumps(index))

    @classmethod
    def load(cls, directory: str, mmap: bool = True) -> MFData:
        """Open a directory written by :meth:`save`; arrays are memory-mapped by default."""
        path = os.path.join(directory, "index.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory!r} is not an mfcalc data directory (no index.json)")
        with open(path) as fh:
            index = json.load(fh)
        mode: Optional[Literal["r"]] = "r" if mmap else None

        def arr(name: str) -> np.ndarray:
            return np.load(os.path.join(directory, name + ".npy"), mmap_mode=mode)

        return cls(
            fidelities=tuple(index["fidelities"]),
            numbers=arr("numbers"),
            positions=arr("positions"),
            offsets=np.asarray(arr("offsets")),
            cell=arr("cell"),
            pbc=arr("pbc"),
            energy=np.asarray(arr("energy")),
            forces={name: arr(f"forces.{name}") for name in index["forces"]},
            groups={k: (np.asarray(arr(f"group.{k}")), list(names)) for k, names in index["groups"].items()},
        )


def concatenate(parts: Sequence[MFData]) -> MFData:
    """Stack data sets; fidelities are the union in first-seen order, absent labels are NaN."""
    parts = [p for p in parts]
    if not parts:
        raise ValueError("nothing to concatenate: no data sets given")
    if len(parts) == 1:
        return parts[0]
    fidelities: List[str] = []
    for p in parts:
        fidelities += [f for f in p.fidelities if f not in fidelities]
    n_atoms = [int(p.offsets[-1]) for p in parts]
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p, na in zip(parts, n_atoms):
        offsets.append(p.offsets[1:] + base)
        base += na
    energy = np.full((sum(len(p) for p in parts), len(fidelities)), np.nan)
    row = 0
    for p in parts:
        for k, name in enumerate(p.fidelities):
            energy[row : row + len(p), fidelities.index(name)] = p.energy[:, k]
        row += len(p)
    force_names = [f for f in fidelities if any(f in p.forces for p in parts)]
    forces = {}
    for name in force_names:
        forces[name] = np.concatenate(
            [p.forces[name] if name in p.forces else np.full((na, 3), np.nan) for p, na in zip(parts, n_atoms)]
        )
    groups: Dict[str, GroupColumn] = {}
    shared_keys = set.intersection(*(set(p.groups) for p in parts))
    for key in sorted(shared_keys):
        labels = np.concatenate([np.asarray(p.groups[key][1], dtype=object)[p.groups[key][0]] for p in parts])
        groups[key] = encode_groups(labels)
    return MFData(
        fidelities=tuple(fidelities),
        numbers=np.concatenate([p.numbers for p in parts]),
        positions=np.concatenate([p.positions for p in parts]),
        offsets=np.concatenate(offsets),
        cell=np.concatenate([p.cell for p in parts]),
        pbc=np.concatenate([p.pbc for p in parts]),
        energy=energy,
        forces=forces,
        groups=groups,
    )


def encode_groups(labels: np.ndarray) -> GroupColumn:
    """Turn (S,) labels into integer codes plus the list of distinct labels."""
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return codes.astype(np.int32), [str(n) for n in names]


def merge_identical(data: MFData, decimals: int = 6) -> Tuple[MFData, int]:
    """Merge structures with the same atoms and coordinates (to ``decimals`` Angstrom).

    Real multi-fidelity data often come as one file per level of theory over the same
    geometries (e.g. DFT energies+forces in one file, CASPT2 energies for a subset in
    another).  Merging gives one structure carrying every label, which is what lets the
    shared trunk relate the levels.  Where two copies carry the same label, the first wins.
    Vectorised per atom count (no Python loop over structures).

    Returns:
        the merged data and the number of structures merged away.
    """
    n_atoms = data.n_atoms
    keep_rows: List[np.ndarray] = []
    target = np.arange(len(data))
    for n in np.unique(n_atoms):
        rows = np.nonzero(n_atoms == n)[0]
        atoms = data.atom_index(rows).reshape(len(rows), n)
        key = np.concatenate(
            [
                np.asarray(data.numbers[atoms], dtype=np.float64),
                np.round(np.asarray(data.positions[atoms]), decimals).reshape(len(rows), -1),
            ],
            axis=1,
        )
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        target[rows] = rows[first[inverse.reshape(-1)]]
        keep_rows.append(rows[first])
    merged_away = int((target != np.arange(len(data))).sum())
    if merged_away == 0:
        return data, 0
    energy = np.array(data.energy, dtype=np.float64, copy=True)
    forces = {k: np.array(v, dtype=np.float64, copy=True) for k, v in data.forces.items()}
    for s in np.nonzero(target != np.arange(len(data)))[0][::-1]:  # reversed: the first copy wins
        t = target[s]
        fill = np.isnan(energy[t]) & ~np.isnan(energy[s])
        energy[t, fill] = energy[s, fill]
    dup = np.nonzero(target != np.arange(len(data)))[0]
    for f in forces.values():
        src = data.atom_index(dup)
        dst = data.atom_index(target[dup])
        empty_dst = np.isnan(f[dst]).all(axis=1) & np.isfinite(f[src]).all(axis=1)
        f[dst[empty_dst]] = f[src[empty_dst]]
    merged = MFData(
        fidelities=data.fidelities,
        numbers=data.numbers,
        positions=data.positions,
        offsets=data.offsets,
        cell=data.cell,
        pbc=data.pbc,
        energy=energy,
        forces=forces,
        groups=data.groups,
    )
    return merged.subset(np.sort(np.concatenate(keep_rows))), merged_away
