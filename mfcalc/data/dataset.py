"""From files to training batches: loading by format, splits, collation, reference energies."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mfcalc.data.ase_io import read_ase
from mfcalc.data.fidelity import FidelitySpec
from mfcalc.data.hdf5 import read_hdf5
from mfcalc.data.records import MFData, concatenate, unnamed

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def read_file(path: str, fidelities: Sequence[FidelitySpec], **kwargs) -> MFData:
    """Read one file, choosing the reader by extension (HDF5) or else ASE."""
    if str(path).lower().endswith(HDF5_SUFFIXES):
        return read_hdf5(str(path), fidelities, **kwargs)
    return read_ase(str(path), fidelities, **kwargs)


def load_data(paths: Sequence[str], fidelities: Sequence[FidelitySpec]) -> MFData:
    """Read and concatenate several files bound to the same fidelity keys."""
    if not paths:
        raise ValueError("no data files given")
    if not fidelities:
        raise ValueError("at least one fidelity binding is needed")
    data = concatenate([read_file(p, fidelities) for p in paths])
    if len(data) == 0:
        raise ValueError(f"no structures in {list(paths)}")
    return data


def read_structures(path: str) -> Tuple[MFData, np.ndarray, np.ndarray]:
    """Geometries of any file mfcalc reads, without labels, and each structure's charge and
    spin multiplicity where the file records them (``charge`` / ``multiplicity`` datasets in
    HDF5, ``atoms.info`` keys in ASE formats; else 0 and 1).

    Returns:
        ``(data, charge (S,) int, multiplicity (S,) int)``.
    """
    data = read_file(path, [])
    charge, multiplicity = np.zeros(len(data), dtype=np.int64), np.ones(len(data), dtype=np.int64)
    if str(path).lower().endswith(HDF5_SUFFIXES):
        from mfcalc.data.hdf5 import per_structure_values

        for key, out in (("charge", charge), ("multiplicity", multiplicity)):
            values = per_structure_values(str(path), key)
            if values is not None:
                out[:] = np.where(np.isfinite(values), values, out)
    else:
        import ase.io

        for i, atoms in enumerate(ase.io.read(str(path), index=":")):
            charge[i] = int(atoms.info.get("charge", 0))
            multiplicity[i] = int(atoms.info.get("multiplicity", 1))
    return data, charge, multiplicity


# ---- splits ------------------------------------------------------------------------------
def split_indices(
    data: MFData, valid_fraction: float = 0.1, test_fraction: float = 0.1, by: str = "random", seed: int = 0
) -> Dict[str, np.ndarray]:
    """Split structure indices into ``train``/``valid``/``test``.

    Args:
        by: ``"random"``, or a group column (``"smiles"``, ``"formula"``, ``"source"``): all
            structures of one group land in the same split, so test molecules are unseen.
        seed: the split depends only on this seed and the data.

    Raises:
        ValueError: fractions out of range, unknown group column, or a requested split
            that would be empty.
    """
    for name, frac in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid + test fractions ({valid_fraction} + {test_fraction}) leave no training data")
    n = len(data)
    rng = np.random.default_rng(seed)
    if by == "random":
        units = rng.permutation(n)[:, None]
        sizes = np.ones(n, dtype=np.int64)
        members = [np.array([i]) for i in units[:, 0]]
    else:
        if by not in data.groups:
            raise ValueError(f"no group column {by!r} in the data; available: {sorted(data.groups)}")
        codes = data.groups[by][0]
        order = rng.permutation(int(codes.max()) + 1)
        by_group = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[by_group], np.arange(int(codes.max()) + 2))
        members = [by_group[bounds[g] : bounds[g + 1]] for g in order]
        members = [m for m in members if len(m)]
        sizes = np.array([len(m) for m in members])
    targets = {"test": test_fraction * n, "valid": valid_fraction * n}
    out: Dict[str, List[np.ndarray]] = {"train": [], "valid": [], "test": []}
    filled = {"test": 0, "valid": 0}
    for m, size in zip(members, sizes):
        for name in ("test", "valid"):
            if filled[name] < targets[name] and (filled[name] == 0 or filled[name] + size / 2 <= targets[name]):
                out[name].append(m)
                filled[name] += int(size)
                break
        else:
            out["train"].append(m)
    result = {k: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for k, v in out.items()}
    wanted = {"train": True, "valid": valid_fraction > 0, "test": test_fraction > 0}
    for name, needed in wanted.items():
        if needed and len(result[name]) == 0:
            what = "groups" if by != "random" else "structures"
            raise ValueError(
                f"the {name} split is empty: {n} structures in {len(members)} {what} cannot be split "
                f"{1 - valid_fraction - test_fraction:.2f}/{valid_fraction:.2f}/{test_fraction:.2f}"
            )
    return result


# ---- batches -----------------------------------------------------------------------------
@dataclass
class Batch:
    """Flat tensors for B structures with A atoms in total (F fidelities).

    numbers (A,) int64; positions (A, 3) Angstrom; mol_index (A,) int64 sorted;
    cell (B, 3, 3); pbc (B, 3) bool; energy (B, F) eV (0 where absent);
    energy_mask (B, F) bool; forces (A, F, 3) eV/Angstrom (0 where absent);
    forces_mask (B, F) bool; index (B,) structure indices into the data set.
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    mol_index: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    index: torch.Tensor

    @property
    def n_mol(self) -> int:
        return int(self.cell.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})


def molecule_codes(data: MFData, key: str) -> np.ndarray:
    """(S,) one code per molecule, from the group column ``key`` and the atom count (two
    structures of one name but different sizes are never compared); a structure without a
    name is a molecule of its own."""
    if key not in data.groups:
        raise ValueError(
            f"relative energies compare structures of one molecule, named by the group column {key!r}, "
            f"which the data lack (they have {sorted(data.groups) or 'none'}); set molecule_key"
        )
    codes, names = data.groups[key]
    codes = np.asarray(codes, dtype=np.int64)
    nameless = np.isin(codes, [k for k, n in enumerate(names) if unnamed(n)])
    key_rows = np.stack([codes, np.asarray(data.n_atoms, dtype=np.int64)], axis=1)
    key_rows[nameless, 0] = -1 - np.nonzero(nameless)[0]  # unique per unnamed structure
    return np.unique(key_rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def collate(
    data: MFData, structures: np.ndarray, dtype: torch.dtype = torch.float32, forces_mask: Optional[np.ndarray] = None
) -> Batch:
    """Build a :class:`Batch` for the given structures with array ops only."""
    structures = np.asarray(structures, dtype=np.int64)
    atoms = data.atom_index(structures)
    counts = data.n_atoms[structures]
    energy = np.asarray(data.energy[structures])
    emask = np.isfinite(energy)
    fmask_all = forces_mask if forces_mask is not None else data.forces_mask()
    fmask = fmask_all[structures]
    forces = np.zeros((len(atoms), len(data.fidelities), 3))
    for k, name in enumerate(data.fidelities):
        if name in data.forces:
            f = np.asarray(data.forces[name][atoms])
            forces[:, k] = np.where(np.isfinite(f), f, 0.0)
    return Batch(
        numbers=torch.from_numpy(np.asarray(data.numbers[atoms], dtype=np.int64)),
        positions=torch.from_numpy(np.asarray(data.positions[atoms])).to(dtype),
        mol_index=torch.from_numpy(np.repeat(np.arange(len(structures)), counts)),
        cell=torch.from_numpy(np.asarray(data.cell[structures])).to(dtype),
        pbc=torch.from_numpy(np.asarray(data.pbc[structures], dtype=bool)),
        energy=torch.from_numpy(np.where(emask, energy, 0.0)).to(dtype),
        energy_mask=torch.from_numpy(emask),
        forces=torch.from_numpy(forces).to(dtype),
        forces_mask=torch.from_numpy(fmask),
        index=torch.from_numpy(structures),
    )


def iterate_batches(
    data: MFData,
    structures: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    rng: Optional[np.random.Generator] = None,
    dtype: torch.dtype = torch.float32,
    forces_mask: Optional[np.ndarray] = None,
) -> Iterator[Batch]:
    """Yield batches over ``structures`` (shuffled with ``rng`` when asked); ``forces_mask``
    is ``data.forces_mask()`` when the caller has it already."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    structures = np.asarray(structures, dtype=np.int64)
    if shuffle:
        structures = (rng or np.random.default_rng()).permutation(structures)
    fmask = data.forces_mask() if forces_mask is None else forces_mask
    for start in range(0, len(structures), batch_size):
        yield collate(data, structures[start : start + batch_size], dtype=dtype, forces_mask=fmask)


# ---- reference energies --------------------------------------------------------------------
def species_counts(data: MFData, species: Sequence[int], structures: Optional[np.ndarray] = None) -> np.ndarray:
    """(S, n_species) how many atoms of each species every structure holds.

    Raises:
        ValueError: naming elements that are not in ``species``.
    """
    structures = np.arange(len(data)) if structures is None else np.asarray(structures, dtype=np.int64)
    table = np.full(119, -1, dtype=np.int64)
    table[np.asarray(species)] = np.arange(len(species))
    atoms = data.atom_index(structures)
    column = table[np.asarray(data.numbers[atoms], dtype=np.int64)]
    if (column < 0).any():
        unknown = sorted(set(np.asarray(data.numbers[atoms])[column < 0].tolist()))
        raise ValueError(f"elements {unknown} are not among the model species {list(species)}")
    owner = np.repeat(np.arange(len(structures)), data.n_atoms[structures])
    counts = np.zeros((len(structures), len(species)))
    np.add.at(counts, (owner, column), 1.0)
    return counts


def _nearest_scale(refs: np.ndarray, present: np.ndarray, k: int, donors: np.ndarray) -> int:
    """The donor level whose atom references differ least (mean |difference|) from level
    ``k``'s on the elements both have; the first donor when none shares an element."""
    gaps = [
        np.abs(refs[k, both] - refs[d, both]).mean() if (both := present[k] & present[d]).any() else np.inf
        for d in donors
    ]
    return int(donors[int(np.argmin(gaps))]) if np.isfinite(min(gaps, default=np.inf)) else int(donors[0])


def fit_reference_energies(
    data: MFData,
    species: Sequence[int],
    structures: Optional[np.ndarray] = None,
    fallback: Optional[Dict[str, Tuple[str, Dict[int, float]]]] = None,
) -> np.ndarray:
    """(F, n_species) per-fidelity atom reference energies (eV) by least squares on counts.

    Each fidelity uses only the structures that carry its energy.  A species that none of
    them contains (an expensive level that never saw fluorine, say) borrows the reference of
    the level whose references agree best with its own on the elements both have, with a
    warning, rather than 0 eV, which would be off by thousands of eV.  Levels live on different
    scales (GFN2-xTB's valence-only atoms are hundreds of eV above all-electron DFT or CCSD(T)
    ones), so the nearest scale, not the first level, is the donor.  ``fallback`` names a
    better donor per fidelity, ``{name: (what, {Z: eV})}`` (a fine-tuned head starts from its
    source head's references).  Computed in float64: the subtraction it feeds is large.
    """
    structures = np.arange(len(data)) if structures is None else np.asarray(structures, dtype=np.int64)
    counts = species_counts(data, species, structures)
    energy = np.asarray(data.energy[structures])
    out = np.zeros((len(data.fidelities), len(species)))
    present = np.zeros_like(out, dtype=bool)
    for k, name in enumerate(data.fidelities):
        rows = np.isfinite(energy[:, k])
        if not rows.any():
            raise ValueError(f"no structure carries an energy for fidelity {name!r}")
        c = counts[rows]
        present[k] = c.sum(axis=0) > 0
        sol, *_ = np.linalg.lstsq(c[:, present[k]], energy[rows, k], rcond=None)
        out[k, present[k]] = sol
    for k, name in enumerate(data.fidelities):
        borrowed: Dict[str, List[int]] = {}  # donor -> elements: one warning per donor, not per element
        for s in np.nonzero(~present[k])[0]:
            donors = np.nonzero(present[:, s])[0]
            what, given = (fallback or {}).get(name, ("", {}))
            z = int(species[int(s)])
            if z in given or len(donors):
                if z in given:
                    out[k, s], donor = given[z], what
                else:
                    d = _nearest_scale(out, present, k, donors)
                    out[k, s], donor = out[d, s], repr(data.fidelities[d])
                borrowed.setdefault(donor, []).append(z)
            else:
                warnings.warn(
                    f"element Z={species[int(s)]} occurs in no labelled structure; reference energy 0 eV", stacklevel=2
                )
        for donor, zs in borrowed.items():
            if len(zs) == 1:
                what = f"element Z={zs[0]} has no {name!r} energy label; its reference energy is"
            else:
                what = (
                    f"elements Z={', '.join(map(str, zs))} have no {name!r} energy label; their reference energies are"
                )
            warnings.warn(f"{what} taken from {donor}", stacklevel=2)
    return out
