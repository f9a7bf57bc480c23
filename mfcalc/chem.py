"""RDKit, the optional cheminformatics library (SMILES, substructures, conformer embedding),
imported in one place so that every user of it fails with the same clear message."""

from __future__ import annotations

from typing import Any


def rdkit_chem() -> Any:
    """``rdkit.Chem`` with RDKit's log silenced, or a clear error naming the extra to install."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:  # pragma: no cover - rdkit is an extra
        raise ValueError("this needs RDKit: pip install 'mfcalc[conformers]'") from None
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]  # RDKit's stubs lag its API
    return Chem
