"""Which elements a model knows: one check, one message, for every entry point."""

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
