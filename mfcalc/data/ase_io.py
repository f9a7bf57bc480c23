"""Reader for any structure file ASE understands (extxyz, traj, db, ...).

Per fidelity, the energy is looked up in ``atoms.info[energy_key]`` and the forces in
``atoms.arrays[forces_key]``; keys that ASE moved into a SinglePointCalculator (plain
``energy`` / ``forces`` in extxyz) are found in ``atoms.calc.results``.  ASE files are in
eV and eV/Angstrom by convention, which is the default unit here; declare another unit on
the :class:`FidelitySpec` when a file uses one.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from mfcalc.data.fidelity import FidelitySpec, check_unique
from mfcalc.data.records import MFData, encode_groups

DEFAULT_ENERGY_UNIT = "ev"


def _lookup(atoms, key: str, per_atom: bool):
    source = atoms.arrays if per_atom else atoms.info
    if key in source:
        return source[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def _info_text(value) -> str:
    """An ``atoms.info`` value as the text that was written: extxyz reads the SMILES of HF,
    ``smiles=F``, as the boolean False (and a bare number as a number)."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    return str(value)


def read_ase(
    path: str,
    fidelities: Sequence[FidelitySpec],
    index: str = ":",
    format: Optional[str] = None,
    group_keys: Sequence[str] = ("smiles",),
) -> MFData:
    """Read labelled structures from a file ASE can read.

    Args:
        path: structure file (extxyz, traj, ...).
        fidelities: key bindings and units (default eV, eV/Angstrom).
        index: ASE index string selecting frames.
        format: ASE format name when the extension does not tell.
        group_keys: ``atoms.info`` string keys to keep as group columns (for grouped splits),
            in addition to ``formula`` and ``source``.

    Raises:
        FileNotFoundError, ValueError: missing/unreadable file, a bound key found in no
            frame, wrong force shapes, or no frames.
    """
    import ase.io

    check_unique(list(fidelities), allow_none=True)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # ASE raises many types for malformed files
        raise ValueError(f"cannot read {path} with ASE: {type(exc).__name__}: {exc}") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"{path}: the file holds no structures")

    n_struct = len(frames)
    counts = np.array([len(a) for a in frames], dtype=np.int64)
    offsets = np.zeros(n_struct + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    energy = np.full((n_struct, len(fidelities)), np.nan)
    forces = {s.name: np.full((int(offsets[-1]), 3), np.nan) for s in fidelities if s.forces_key}
    seen = {key: False for s in fidelities for key in filter(None, (s.energy_key, s.forces_key))}
    for i, atoms in enumerate(frames):
        for k, spec in enumerate(fidelities):
            e = _lookup(atoms, spec.energy_key, per_atom=False)
            if e is not None:
                seen[spec.energy_key] = True
                energy[i, k] = float(np.asarray(e).reshape(-1)[0]) * spec.energy_to_ev(DEFAULT_ENERGY_UNIT)
            if spec.forces_key:
                f = _lookup(atoms, spec.forces_key, per_atom=True)
                if f is not None:
                    seen[spec.forces_key] = True
                    f = np.asarray(f, dtype=np.float64)
                    if f.shape != (len(atoms), 3):
                        raise ValueError(
                            f"{path} frame {i}: {spec.forces_key!r} has shape {f.shape}, expected ({len(atoms)}, 3)"
                        )
                    forces[spec.name][offsets[i] : offsets[i + 1]] = f * spec.forces_to_ev_per_angstrom(
                        DEFAULT_ENERGY_UNIT
                    )
    missing = [k for k, ok in seen.items() if not ok]
    if missing:
        info_keys = sorted({k for a in frames for k in a.info})
        array_keys = sorted({k for a in frames for k in a.arrays})
        calc_keys = sorted({k for a in frames for k in (getattr(a.calc, "results", None) or {})})
        raise ValueError(
            f"{path}: key(s) {missing} are in no frame; info keys: {info_keys}, "
            f"array keys: {array_keys}, calculator results: {calc_keys}"
        )

    positions = np.concatenate([a.positions for a in frames]).astype(np.float64)
    if not np.isfinite(positions).all():
        raise ValueError(f"{path}: positions contain NaN or infinite values")
    groups = {
        "formula": encode_groups(np.array([a.get_chemical_formula() for a in frames], dtype=object)),
        "source": encode_groups(np.full(n_struct, os.path.abspath(path))),
    }
    for key in group_keys:
        if any(key in a.info for a in frames):
            groups[key] = encode_groups(np.array([_info_text(a.info.get(key)) for a in frames], dtype=object))
    return MFData(
        fidelities=tuple(s.name for s in fidelities),
        numbers=np.concatenate([a.numbers for a in frames]).astype(np.uint8),
        positions=positions,
        offsets=offsets,
        cell=np.stack([np.asarray(a.cell[:], dtype=np.float64) for a in frames]),
        pbc=np.stack([np.asarray(a.pbc, dtype=bool) for a in frames]),
        energy=energy,
        forces=forces,
        groups=groups,
    )
