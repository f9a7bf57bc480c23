"""What a model knows: its elements and its electronic states; one check, one message each, for
every entry point."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
from ase.data import chemical_symbols


def symbols(numbers: Iterable[int]) -> List[str]:
    """Element symbols of atomic numbers (the number itself where it is out of range)."""
    return [chemical_symbols[int(z)] if 0 < int(z) < len(chemical_symbols) else str(int(z)) for z in numbers]


def unknown_elements(numbers: Sequence[int] | np.ndarray, known: Sequence[int]) -> List[int]:
    """Sorted distinct atomic numbers of ``numbers`` that are not in ``known``."""
    z = np.unique(np.asarray(numbers, dtype=np.int64))
    return [int(x) for x in z[~np.isin(z, np.asarray(list(known), dtype=np.int64))]]


def check_elements(numbers: Sequence[int] | np.ndarray, known: Sequence[int], owner: str = "this model") -> None:
    """Raise if any atomic number is outside ``known``.

    Raises:
        ValueError: ``element(s) Cl not known to this model; it knows H, C, N, O``.
    """
    bad = unknown_elements(numbers, known)
    if bad:
        raise ValueError(
            f"element(s) {', '.join(symbols(bad))} not known to {owner}; it knows {', '.join(symbols(sorted(known)))}"
        )


def unlabelled_elements_warning(
    numbers: Sequence[int] | np.ndarray, domain: Dict[str, Any], fidelity: str
) -> Optional[str]:
    """A warning when the ``fidelity`` head was trained on no energy of a structure with one of
    these elements (``domain`` is the model file's training-domain metadata): the trunk knows
    the element from other levels, but this head's energies for it are a transfer, untested."""
    known = (domain.get("elements_by_fidelity") or {}).get(fidelity)
    if known is None:
        return None
    missing = unknown_elements(numbers, known)
    if not missing:
        return None
    return (
        f"the {fidelity!r} head was trained on no energy of a structure containing {', '.join(symbols(missing))} "
        f"(its labels cover {', '.join(symbols(known))}): its energies here are extrapolated from the other levels"
    )


def electronic_state_problem(
    numbers: Sequence[int] | np.ndarray,
    charge: int = 0,
    multiplicity: Optional[int] = None,
    domain: Optional[Dict[str, Any]] = None,
) -> Optional[str]:
    """Why a structure's electronic state lies outside the model's, or ``None``.

    mfcalc networks see nuclei only, no charge or spin, so a model describes the one electronic
    state of its training data: neutral closed-shell for mfcalc's data sources (``mfcalc-label``
    and the reference files), unless the file's ``domain`` metadata lists others
    (``charges``, ``multiplicities``).  A charged or open-shell input would be computed as if it
    were that state: a number, but not this molecule's.  ``multiplicity`` ``None`` (an XYZ file,
    an ASE structure) takes the lowest the electron count allows, so an odd count is a radical.
    """
    domain = domain or {}
    charges = [int(q) for q in domain.get("charges", [0])]
    multiplicities = [int(m) for m in domain.get("multiplicities", [1])]
    electrons = int(np.sum(np.asarray(numbers, dtype=np.int64))) - int(charge)
    if multiplicity is None:
        multiplicity = 1 + electrons % 2
    if int(charge) not in charges:
        return (
            f"a charge of {int(charge):+d}, while the model was trained on structures of charge "
            f"{', '.join(f'{q:+d}' if q else '0' for q in charges)} only: its network has no charge input, "
            "so it would describe these nuclei as if they carried that charge"
        )
    if (electrons - (int(multiplicity) - 1)) % 2 or int(multiplicity) < 1:
        return f"spin multiplicity {multiplicity} is impossible with {electrons} electrons"
    if int(multiplicity) not in multiplicities:
        kind = (
            "an open-shell species" + (" (a radical)" if multiplicity == 2 else "")
            if multiplicity > 1
            else "closed-shell"
        )
        return (
            f"{electrons} electrons, spin multiplicity {multiplicity}: {kind}, while the model was trained on "
            f"multiplicity {', '.join(map(str, multiplicities))} only (no spin input)"
        )
    return None
