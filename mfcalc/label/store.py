"""A labelled data set being built: an ANI-1x-layout HDF5 file plus a journal that makes it resumable.

The HDF5 file (``OUT.h5``) is the data set, in the conventions of ``data/mf_reference.h5``:
one group per formula (every count written out, atoms sorted by atomic number),
``coordinates`` (Nc, Na, 3) Angstrom, ``atomic_numbers``, ``smiles``, ``charge``,
``multiplicity``, and per level ``<level>.energy`` (Hartree), ``<level>.forces``
(Hartree/Angstrom) and ``<level>.seconds`` (wall time of that calculation), NaN where a
label is absent.  Calculations that failed are listed in the group ``failures`` (structure
key, level, message) so they are not repeated; mfcalc's readers ignore that group.

Crash safety.  Every finished calculation is first appended to ``OUT.h5.journal`` (one JSON
line, flushed; a line cut short by a kill is ignored on reading).  Now and then, and at the
end, the whole data set is written to a temporary file and renamed over ``OUT.h5``
(:mod:`mfcalc.files`), then the journal is emptied.  So ``OUT.h5`` is always a complete file,
and a run killed at any moment and started again recomputes nothing that was finished.

Structures are identified by their geometry key (:mod:`mfcalc.data.identity`: a hash of
the atomic numbers and the coordinates rounded to 1e-6 Angstrom, atoms sorted by atomic
number), so the same geometry is recognised whichever input file it comes from, and a
later run at another level adds its labels to the rows already there.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, TextIO, Tuple

import numpy as np

from mfcalc.data.identity import sort_atoms, structure_key
from mfcalc.elements import symbols
from mfcalc.files import atomic_write

FAILURES = "failures"


def formula(numbers: np.ndarray) -> str:
    """``C2H6O1``: element symbols in alphabetical order, every count written out."""
    syms = symbols(numbers)
    return "".join(f"{s}{syms.count(s)}" for s in sorted(set(syms)))


@dataclass
class Label:
    energy: float  # Hartree (NaN for a failure)
    forces: Optional[np.ndarray]  # (N, 3) Hartree/Angstrom
    seconds: float


@dataclass
class Structure:
    numbers: np.ndarray  # sorted by atomic number
    positions: np.ndarray
    smiles: str = ""
    charge: int = 0
    multiplicity: int = 1
    labels: Dict[str, Label] = field(default_factory=dict)


class LabelStore:
    """The structures and labels of one HDF5 file, in memory, with a write-ahead journal.

    Args:
        path: the HDF5 file (created if absent; an existing one is read and extended).
        merge_seconds: how often finished results are written into the HDF5 file.
    """

    def __init__(self, path: str, merge_seconds: float = 300.0):
        self.path = os.fspath(path)
        self.journal_path = self.path + ".journal"
        self.merge_seconds = merge_seconds
        self.structures: Dict[str, Structure] = {}
        self.failures: Dict[Tuple[str, str], str] = {}
        self._journal: Optional[TextIO] = None
        self._dirty = False
        self._last_merge = time.monotonic()
        if os.path.exists(self.path):
            self._read_hdf5()
        if os.path.exists(self.journal_path):
            self._replay_journal()

    # ---- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.structures)

    def has(self, key: str, level: str, forces: bool = False) -> bool:
        """Whether ``level`` is done for the structure (a label, with forces if asked, or a
        recorded failure: failures are not repeated)."""
        if (key, level) in self.failures:
            return True
        s = self.structures.get(key)
        lab = s.labels.get(level) if s is not None else None
        return lab is not None and np.isfinite(lab.energy) and (not forces or lab.forces is not None)

    def levels(self) -> List[str]:
        found: List[str] = []
        for s in self.structures.values():
            found += [lv for lv in s.labels if lv not in found]
        return found

    def unlabelled(self) -> Set[str]:
        """Keys of the structures with no label at any level (listed, not computed yet: a
        labelling run adds every input structure before its first calculation)."""
        return {
            key for key, s in self.structures.items() if not any(np.isfinite(lab.energy) for lab in s.labels.values())
        }

    def drop_unlabelled(self, keep: Iterable[str]) -> int:
        """Forget structures that have no label at any level, no recorded failure and are not in
        ``keep`` (structures taken out of the input lists before any calculation); returns how
        many.  Nothing computed is ever dropped.  Written at the next merge."""
        failed = {key for key, _ in self.failures}
        gone = self.unlabelled() - set(keep) - failed
        for key in gone:
            del self.structures[key]
        self._dirty = self._dirty or bool(gone)
        return len(gone)

    # ---- updates (journal first) ---------------------------------------------------------------
    def add(
        self, numbers: np.ndarray, positions: np.ndarray, smiles: str = "", charge: int = 0, multiplicity: int = 1
    ) -> str:
        """Add a structure (atoms are sorted by atomic number here); returns its key."""
        z, x, _ = sort_atoms(numbers, positions)
        key = structure_key(z, x)
        if key not in self.structures:
            self.structures[key] = Structure(z, x, smiles, int(charge), int(multiplicity))
            self._write(
                {
                    "kind": "structure",
                    "key": key,
                    "numbers": z.tolist(),
                    "positions": x.tolist(),
                    "smiles": smiles,
                    "charge": int(charge),
                    "multiplicity": int(multiplicity),
                }
            )
        elif smiles and not self.structures[key].smiles:  # a SMILES learnt later is kept
            self.structures[key].smiles = smiles
            self._write({"kind": "smiles", "key": key, "smiles": smiles})
        return key

    def record(self, key: str, level: str, energy: float, forces: Optional[np.ndarray], seconds: float) -> None:
        """A finished calculation: energy Hartree, forces (N, 3) Hartree/Angstrom in the
        structure's sorted atom order."""
        self._apply_label(key, level, float(energy), None if forces is None else np.asarray(forces), float(seconds))
        self._write(
            {
                "kind": "label",
                "key": key,
                "level": level,
                "energy": float(energy),
                "forces": None if forces is None else np.asarray(forces).tolist(),
                "seconds": float(seconds),
            }
        )

    def record_failure(self, key: str, level: str, message: str) -> None:
        self.failures[(key, level)] = message
        self._write({"kind": "failure", "key": key, "level": level, "message": message})

    def _apply_label(self, key: str, level: str, energy: float, forces: Optional[np.ndarray], seconds: float) -> None:
        s = self.structures[key]
        old = s.labels.get(level)
        if forces is None and old is not None and old.forces is not None:
            forces = old.forces  # an energy-only rerun keeps forces already computed
        s.labels[level] = Label(energy, forces, seconds)
        self.failures.pop((key, level), None)

    def _write(self, entry: dict) -> None:
        self._dirty = True
        if self._journal is None:
            self._journal = open(self.journal_path, "a")
        self._journal.write(json.dumps(entry) + "\n")
        self._journal.flush()
        if time.monotonic() - self._last_merge > self.merge_seconds:
            self.merge()

    # ---- persistence -------------------------------------------------------------------------------
    def merge(self) -> None:
        """Write everything into the HDF5 file (atomic replace), then empty the journal."""
        if not self._dirty and not os.path.exists(self.journal_path):
            return
        if self._journal is not None:
            os.fsync(self._journal.fileno())
        atomic_write(self.path, self._write_hdf5)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if os.path.exists(self.journal_path):
            os.remove(self.journal_path)
        self._dirty = False
        self._last_merge = time.monotonic()

    def close(self) -> None:
        self.merge()

    def write_copy(self, path: str, drop: Iterable[str] = ()) -> int:
        """Write this store's structures, labels and failures to a new HDF5 file, leaving out the
        structures keyed in ``drop`` (e.g. a frozen test split, so that what trains on the copy
        never sees it); returns how many structures were written.  This store is unchanged."""
        if os.path.exists(path) or os.path.exists(path + ".journal"):
            raise ValueError(f"{path} exists: a copy is written to a new file")
        drop = set(drop)
        copy = LabelStore(path)
        copy.structures = {k: s for k, s in self.structures.items() if k not in drop}
        copy.failures = {k: m for k, m in self.failures.items() if k[0] not in drop}
        copy._dirty = True
        copy.merge()
        return len(copy)

    def _groups(self) -> Dict[str, List[Tuple[str, Structure]]]:
        by_formula: Dict[str, List[Tuple[str, Structure]]] = {}
        for key, s in self.structures.items():  # insertion order: the order structures were added
            by_formula.setdefault(formula(s.numbers), []).append((key, s))
        return by_formula

    def _write_hdf5(self, tmp: str) -> None:
        import h5py

        levels = self.levels()
        gz = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        with h5py.File(tmp, "w") as h5:
            for name, rows in sorted(self._groups().items()):  # atoms sorted by Z: one atom order per formula
                self._write_group(h5.create_group(name), rows, levels, gz)
            if self.failures:
                f = h5.create_group(FAILURES)
                items = sorted(self.failures.items())
                f.create_dataset("key", data=np.array([k.encode() for (k, _), _ in items]))
                f.create_dataset("level", data=np.array([lv.encode() for (_, lv), _ in items]))
                f.create_dataset("message", data=np.array([m.encode() for _, m in items]))

    @staticmethod
    def _write_group(g, members: List[Tuple[str, Structure]], levels: List[str], gz: dict) -> None:
        first = members[0][1]
        n, na = len(members), len(first.numbers)
        g.create_dataset("atomic_numbers", data=first.numbers.astype(np.uint8))
        g.create_dataset("coordinates", data=np.stack([s.positions for _, s in members]), **gz)
        g.create_dataset("smiles", data=np.array([s.smiles.encode() for _, s in members]))
        g.create_dataset("charge", data=np.array([s.charge for _, s in members], dtype=np.int8))
        g.create_dataset("multiplicity", data=np.array([s.multiplicity for _, s in members], dtype=np.int8))
        for level in levels:
            energy, seconds = np.full(n, np.nan), np.full(n, np.nan)
            forces = np.full((n, na, 3), np.nan)
            any_forces = False
            for i, (_, s) in enumerate(members):
                lab = s.labels.get(level)
                if lab is None:
                    continue
                energy[i], seconds[i] = lab.energy, lab.seconds
                if lab.forces is not None:
                    forces[i], any_forces = lab.forces, True
            g.create_dataset(f"{level}.energy", data=energy)
            g.create_dataset(f"{level}.seconds", data=seconds)
            if any_forces:
                g.create_dataset(f"{level}.forces", data=forces, **gz)

    def _read_hdf5(self) -> None:
        import h5py

        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"cannot read {self.path} as HDF5 (truncated or not an HDF5 file?): {exc}") from None
        with h5:
            for name, g in h5.items():
                if name == FAILURES or not isinstance(g, h5py.Group) or "coordinates" not in g:
                    continue
                z = np.asarray(g["atomic_numbers"][()] if "atomic_numbers" in g else g["species"][()], dtype=np.int64)
                coords = np.asarray(g["coordinates"][()], dtype=np.float64)
                n = len(coords)
                smiles = (
                    [s.decode() if isinstance(s, bytes) else str(s) for s in g["smiles"][()]]
                    if "smiles" in g
                    else [""] * n
                )
                charge = np.asarray(g["charge"][()]) if "charge" in g else np.zeros(n, dtype=int)
                mult = np.asarray(g["multiplicity"][()]) if "multiplicity" in g else np.ones(n, dtype=int)
                levels = sorted({k.rsplit(".", 1)[0] for k in g.keys() if k.endswith(".energy")})
                data = {
                    lv: (
                        np.asarray(g[f"{lv}.energy"][()]),
                        np.asarray(g[f"{lv}.forces"][()]) if f"{lv}.forces" in g else None,
                        np.asarray(g[f"{lv}.seconds"][()]) if f"{lv}.seconds" in g else np.full(n, np.nan),
                    )
                    for lv in levels
                }
                for i in range(n):
                    zi, xi, order = sort_atoms(z, coords[i])
                    key = structure_key(zi, xi)
                    s = self.structures.setdefault(key, Structure(zi, xi, smiles[i], int(charge[i]), int(mult[i])))
                    for lv, (e, f, sec) in data.items():
                        if np.isfinite(e[i]):
                            fi = f[i][order] if f is not None and np.isfinite(f[i]).all() else None
                            s.labels[lv] = Label(float(e[i]), fi, float(sec[i]))
            if FAILURES in h5:
                f = h5[FAILURES]
                for k, lv, m in zip(f["key"][()], f["level"][()], f["message"][()]):
                    self.failures[(k.decode(), lv.decode())] = m.decode()

    def _replay_journal(self) -> None:
        with open(self.journal_path) as fh:
            lines = fh.read().split("\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed run, cut short
                continue
            self._apply(entry)

    def _apply(self, entry: dict) -> None:
        kind, key = entry.get("kind"), str(entry.get("key"))
        if kind == "structure" and key not in self.structures:
            self.structures[key] = Structure(
                np.asarray(entry["numbers"]),
                np.asarray(entry["positions"]),
                entry.get("smiles", ""),
                int(entry.get("charge", 0)),
                int(entry.get("multiplicity", 1)),
            )
        elif kind == "smiles" and key in self.structures:
            self.structures[key].smiles = str(entry["smiles"])
        elif kind == "label" and key in self.structures:
            f = entry.get("forces")
            self._apply_label(
                key,
                entry["level"],
                entry["energy"],
                None if f is None else np.asarray(f),
                entry.get("seconds", float("nan")),
            )
        elif kind == "failure":
            self.failures[(key, entry["level"])] = entry["message"]

    def summary(self, levels: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, float]]:
        """Per level: structures labelled, with forces, failed, and CPU hours spent."""
        out: Dict[str, Dict[str, float]] = {}
        for level in levels or self.levels():
            labs = [s.labels[level] for s in self.structures.values() if level in s.labels]
            out[level] = {
                "energies": len(labs),
                "forces": sum(lab.forces is not None for lab in labs),
                "failed": sum(1 for (_, lv) in self.failures if lv == level),
                "hours": float(np.nansum([lab.seconds for lab in labs])) / 3600.0,
            }
        return out
