"""Identity of a geometry across files: the key that says "this structure is already labelled".

A key hashes the atomic numbers and the coordinates rounded to 1e-6 Angstrom, after sorting
the atoms by atomic number (stable), so the same geometry is recognised whichever file or
format it comes from.  The label store files its rows under these keys, and the selection
uses them to skip what is already labelled.
"""

from __future__ import annotations

import hashlib
from typing import List, Tuple

import numpy as np

from mfcalc.data.records import MFData

KEY_DECIMALS = 6


def structure_key(numbers: np.ndarray, positions: np.ndarray) -> str:
    """16 hex digits of a hash of numbers and rounded coordinates (atoms as given)."""
    digest = hashlib.sha1(np.asarray(numbers, dtype=np.int16).tobytes())
    rounded = np.round(np.asarray(positions, dtype=np.float64), KEY_DECIMALS) + 0.0  # + 0.0: no negative zeros
    digest.update(rounded.tobytes())
    return digest.hexdigest()[:16]


def sort_atoms(numbers: np.ndarray, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atoms in the order of increasing atomic number (stable), and the permutation used."""
    order = np.argsort(np.asarray(numbers), kind="stable")
    return np.asarray(numbers)[order], np.asarray(positions, dtype=np.float64)[order], order


def geometry_key(numbers: np.ndarray, positions: np.ndarray) -> str:
    """The key of a geometry as the label store files it (atoms sorted by atomic number first)."""
    z, x, _ = sort_atoms(numbers, positions)
    return structure_key(z, x)


def geometry_keys(data: MFData) -> List[str]:
    """The key of every structure of ``data``."""
    out = []
    for i in range(len(data)):
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        out.append(geometry_key(np.asarray(data.numbers[a:b]), np.asarray(data.positions[a:b])))
    return out
