"""Readers for ANI-style HDF5 files (both the ANI-1x release and the older ANI-1 layout).

Any group that holds a ``coordinates`` dataset is a *conformer group*: its atoms are given
by ``atomic_numbers`` (integers) or ``species`` (integers or element-symbol bytes), and each
bound key holds ``(Nc,)`` energies or ``(Nc, Na, 3)`` forces.  This covers

* the ANI-1x release: one group per formula at the top level, keys such as
  ``wb97x_dz.energy``; and
* the ANI-1 layout: nested groups (``gdb11_s02/gdb11_s02-10``) with ``species``,
  ``energies``, ``forces``.

Files are read one conformer group at a time into preallocated columns (no per-structure
Python objects).  Units are declared per key by :class:`FidelitySpec`; the HDF5 default is
the ANI convention, Hartree and Hartree/Angstrom, and coordinates in Angstrom.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from mfcalc.data.fidelity import FidelitySpec, check_unique
from mfcalc.data.records import MFData, encode_groups
from mfcalc.units import length_factor

DEFAULT_ENERGY_UNIT = "hartree"
_SYMBOLS: Optional[Dict[str, int]] = None


def _symbol_to_number(symbol: str) -> int:
    global _SYMBOLS
    if _SYMBOLS is None:
        from ase.data import atomic_numbers

        _SYMBOLS = dict(atomic_numbers)
    if symbol not in _SYMBOLS:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return _SYMBOLS[symbol]


def _open(path: str):
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # truncated, not HDF5, permissions
        raise ValueError(f"cannot read {path} as HDF5 (truncated or not an HDF5 file?): {exc}") from None


def _conformer_groups(handle) -> List[str]:
    """Paths of all groups holding a ``coordinates`` dataset, in file order."""
    import h5py

    found: List[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and isinstance(obj.get("coordinates"), h5py.Dataset):
            found.append(name)

    if isinstance(handle.get("coordinates"), h5py.Dataset):
        found.append("/")
    handle.visititems(visit)
    return found


def _atomic_numbers(group, path: str, n_atoms: int) -> np.ndarray:
    if "atomic_numbers" in group:
        z = np.asarray(group["atomic_numbers"][()])
    elif "species" in group:
        z = np.asarray(group["species"][()])
        if z.dtype.kind in "SUO":
            z = np.array([_symbol_to_number(s.decode() if isinstance(s, bytes) else str(s)) for s in z])
    else:
        raise ValueError(f"group {path!r} has coordinates but neither 'atomic_numbers' nor 'species'")
    z = z.astype(np.int64).reshape(-1)
    if z.shape != (n_atoms,):
        raise ValueError(f"group {path!r}: {z.shape[0]} atomic numbers for {n_atoms} atoms in coordinates")
    if (z < 1).any() or (z > 118).any():
        raise ValueError(f"group {path!r}: atomic numbers out of range 1..118: {sorted(set(z.tolist()))}")
    return z


def _per_structure_strings(group, key: str, n_conf: int) -> Optional[np.ndarray]:
    """(Nc,) labels from a string dataset; ANI-1 stores one SMILES as an array of characters."""
    if key not in group:
        return None
    raw = np.asarray(group[key][()])
    if raw.dtype.kind not in "SUO":
        return None
    text = [s.decode() if isinstance(s, bytes) else str(s) for s in raw.reshape(-1)]
    if len(text) == n_conf:
        return np.asarray(text, dtype=object)
    return np.full(n_conf, "".join(text), dtype=object)


def _allocate(cache_dir: Optional[str], name: str, shape, dtype, fill=None) -> np.ndarray:
    """An in-memory array, or a ``.npy`` memory map in ``cache_dir`` for data larger than RAM."""
    if cache_dir is None:
        arr = np.empty(shape, dtype=dtype)
    else:
        arr = np.lib.format.open_memmap(os.path.join(cache_dir, name + ".npy"), mode="w+", dtype=dtype, shape=shape)
    if fill is not None:
        arr[...] = fill
    return arr


def read_hdf5(
    path: str, fidelities: Sequence[FidelitySpec], length_unit: str = "angstrom", cache_dir: Optional[str] = None
) -> MFData:
    """Read labelled structures from an ANI-style HDF5 file.

    Args:
        path: the ``.h5`` file.
        fidelities: which keys hold which fidelity, and their units (default Hartree,
            Hartree/Angstrom).
        length_unit: unit of ``coordinates`` in the file (default Angstrom).
        cache_dir: write the columns as ``.npy`` files there while reading (one conformer
            group in memory at a time) and return them memory-mapped: for files larger than
            RAM (ANI-1x).  ``MFData.load(cache_dir)`` reopens them later without the HDF5.

    Returns:
        MFData in eV / Angstrom with group columns ``formula`` (the conformer group's path),
        ``smiles`` (when the file has per-structure SMILES) and ``source``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, a bound key that no group has, inconsistent shapes,
            unknown elements, or no structures at all.
    """
    check_unique(list(fidelities), allow_none=True)
    pos_factor = length_factor(length_unit)
    with _open(path) as h5:
        groups = _conformer_groups(h5)
        if not groups:
            raise ValueError(f"{path}: no group with a 'coordinates' dataset (empty or not ANI-style HDF5)")
        # pass 1: shapes only, and which keys exist at all
        shapes = []
        for g in groups:
            shape = h5[g]["coordinates"].shape
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"{path}:{g}/coordinates has shape {shape}, expected (Nc, Na, 3)")
            shapes.append(shape)
        for spec in fidelities:
            for key in filter(None, (spec.energy_key, spec.forces_key)):
                if not any(key in h5[g] for g in groups):
                    available = sorted({k for g in groups for k in h5[g].keys()})
                    raise ValueError(
                        f"{path}: key {key!r} (fidelity {spec.name!r}) is in no group; keys in the file: {available}"
                    )
        n_struct = sum(s[0] for s in shapes)
        n_atoms = sum(s[0] * s[1] for s in shapes)
        if n_struct == 0:
            raise ValueError(f"{path}: the file holds no structures")

        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
        numbers = _allocate(cache_dir, "numbers", (n_atoms,), np.uint8)
        positions = _allocate(cache_dir, "positions", (n_atoms, 3), np.float64)
        offsets = np.empty(n_struct + 1, dtype=np.int64)
        offsets[0] = 0
        energy = np.full((n_struct, len(fidelities)), np.nan)
        forces = {
            s.name: _allocate(cache_dir, f"forces.{s.name}", (n_atoms, 3), np.float64, np.nan)
            for s in fidelities
            if s.forces_key
        }
        formula = np.empty(n_struct, dtype=object)
        smiles = np.empty(n_struct, dtype=object)
        have_smiles = True

        s0 = a0 = 0
        for g, (nc, na, _) in zip(groups, shapes):
            grp = h5[g]
            s1, a1 = s0 + nc, a0 + nc * na
            z = _atomic_numbers(grp, g, na)
            numbers[a0:a1] = np.tile(z, nc)
            positions[a0:a1] = np.asarray(grp["coordinates"][()], dtype=np.float64).reshape(-1, 3) * pos_factor
            if not np.isfinite(positions[a0:a1]).all():
                raise ValueError(f"{path}:{g}/coordinates contain NaN or infinite values")
            offsets[s0 + 1 : s1 + 1] = a0 + na * np.arange(1, nc + 1)
            for k, spec in enumerate(fidelities):
                if spec.energy_key in grp:
                    e = np.asarray(grp[spec.energy_key][()], dtype=np.float64).reshape(-1)
                    if e.shape != (nc,):
                        raise ValueError(f"{path}:{g}/{spec.energy_key} has {e.shape[0]} values for {nc} structures")
                    energy[s0:s1, k] = e * spec.energy_to_ev(DEFAULT_ENERGY_UNIT)
                if spec.forces_key and spec.forces_key in grp:
                    f = np.asarray(grp[spec.forces_key][()], dtype=np.float64)
                    if f.shape != (nc, na, 3):
                        raise ValueError(f"{path}:{g}/{spec.forces_key} has shape {f.shape}, expected {(nc, na, 3)}")
                    forces[spec.name][a0:a1] = f.reshape(-1, 3) * spec.forces_to_ev_per_angstrom(DEFAULT_ENERGY_UNIT)
            formula[s0:s1] = g.strip("/")
            labels = _per_structure_strings(grp, "smiles", nc)
            if labels is None:
                have_smiles = False
            else:
                smiles[s0:s1] = labels
            s0, a0 = s1, a1

    group_cols = {"formula": encode_groups(formula), "source": encode_groups(np.full(n_struct, os.path.abspath(path)))}
    if have_smiles:
        group_cols["smiles"] = encode_groups(smiles)
    data = MFData(
        fidelities=tuple(s.name for s in fidelities),
        numbers=numbers,
        positions=positions,
        offsets=offsets,
        cell=np.zeros((n_struct, 3, 3)),
        pbc=np.zeros((n_struct, 3), dtype=bool),
        energy=energy,
        forces=forces,
        groups=group_cols,
    )
    if cache_dir is None:
        return data
    data.save(cache_dir)  # the memory-mapped columns are already in place; this adds the rest
    return MFData.load(cache_dir)


def list_keys(path: str) -> List[str]:
    """Every dataset name found in the file's conformer groups (for error messages and CLIs)."""
    with _open(path) as h5:
        return sorted({k for g in _conformer_groups(h5) for k in h5[g].keys()})


def per_structure_values(path: str, key: str) -> Optional[np.ndarray]:
    """(S,) values of a per-structure dataset ``key`` over all conformer groups, in reader
    order, or ``None`` when no group has it (groups without it count as missing: NaN)."""
    with _open(path) as h5:
        groups = _conformer_groups(h5)
        if not any(key in h5[g] for g in groups):
            return None
        parts = []
        for g in groups:
            n = h5[g]["coordinates"].shape[0]
            parts.append(
                np.asarray(h5[g][key][()], dtype=np.float64).reshape(-1) if key in h5[g] else np.full(n, np.nan)
            )
        return np.concatenate(parts)
