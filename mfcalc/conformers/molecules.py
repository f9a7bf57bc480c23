"""RDKit side of the conformer search: embed or read conformers, bond graphs, symmetry-aware RMSD."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from mfcalc.chem import rdkit_chem


def read_smiles_list(path: str) -> List[str]:
    """The SMILES of a .smi list: the first word of each line; a word starting with '#' begins
    a comment.  '#' inside a word is a triple bond (``C#N``), so a line is never cut at it."""
    out: List[str] = []
    with open(path) as fh:
        for line in fh:
            words = line.split()
            if words and not words[0].startswith("#"):
                out.append(words[0])
    return out


def embed_smiles(smiles: str, n_conformers: int, seed: int = 0) -> Any:
    """RDKit molecule (explicit H) with up to ``n_conformers`` ETKDGv3 conformers."""
    Chem = rdkit_chem()
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES {smiles!r} (and no file of that name)")
    mol = Chem.AddHs(mol)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    params = AllChem.ETKDGv3()  # type: ignore[attr-defined]
    # RDKit gives every conformer the same coordinates when randomSeed is 0 (checked with
    # RDKit 2026.09 on ethanol), so the user's seed s maps to RDKit's seed s + 1
    params.randomSeed = int(seed) + 1
    params.numThreads = 1  # reproducible order
    embed = AllChem.EmbedMultipleConfs  # type: ignore[attr-defined]
    ids = embed(mol, numConfs=int(n_conformers), params=params)
    if len(ids) == 0:
        raise ValueError(f"RDKit could not embed any conformer of {smiles!r}")
    return mol


SDF_SUFFIXES = (".sdf", ".mol", ".sd")


def electronic_state(mol: Any, bonds_known: bool = True) -> Tuple[int, Optional[int]]:
    """``(charge, spin multiplicity)`` of an RDKit molecule: its formal charges and radical
    electrons, which a SMILES or an SDF states; a molecule built from bare geometry (XYZ) states
    neither, so ``bonds_known=False`` gives ``(0, None)``: neutral, spin left to the electron count."""
    if not bonds_known:
        return 0, None
    Chem = rdkit_chem()
    radicals = sum(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms())
    return int(Chem.GetFormalCharge(mol)), int(radicals) + 1


def read_conformers(path: str) -> Any:
    """Conformers of one molecule from an SDF or a multi-frame XYZ (any ASE format) file."""
    Chem = rdkit_chem()
    if path.lower().endswith(SDF_SUFFIXES):
        supplier = Chem.SDMolSupplier(path, removeHs=False)
        mols = list(supplier)
        if not mols or any(m is None for m in mols):
            raise ValueError(f"cannot read every record of {path} as a molecule")
        smiles = {Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols}
        if len(smiles) > 1 or len({m.GetNumAtoms() for m in mols}) > 1:
            raise ValueError(f"{path} mixes different molecules: {sorted(smiles)}")
        mol = Chem.Mol(mols[0])
        for m in mols[1:]:
            mol.AddConformer(Chem.Conformer(m.GetConformer()), assignId=True)
        return mol
    import ase.io
    from rdkit.Chem import rdDetermineBonds

    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not frames:
        raise ValueError(f"{path} holds no structures")
    symbols = {tuple(a.get_chemical_symbols()) for a in frames}
    if len(symbols) > 1:
        raise ValueError(f"{path} mixes different molecules: {sorted(''.join(s) for s in symbols)}")
    first = frames[0]
    block = f"{len(first)}\n\n" + "\n".join(
        f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(first.get_chemical_symbols(), first.positions)
    )
    mol = Chem.MolFromXYZBlock(block)
    if mol is None:
        raise ValueError(f"RDKit cannot build a molecule from {path}")
    rdDetermineBonds.DetermineConnectivity(mol)
    mol.RemoveAllConformers()
    for a in frames:
        conf = Chem.Conformer(len(a))
        for i, p in enumerate(a.positions):
            conf.SetAtomPosition(i, p.tolist())
        mol.AddConformer(conf, assignId=True)
    return mol


def conformer_coordinates(mol: Any) -> np.ndarray:
    """(C, N, 3) Angstrom coordinates of every conformer of an RDKit molecule."""
    return np.stack([c.GetPositions() for c in mol.GetConformers()])


def atomic_numbers(mol: Any) -> np.ndarray:
    return np.array([a.GetAtomicNum() for a in mol.GetAtoms()])


def bond_graph(mol: Any, positions: np.ndarray) -> np.ndarray:
    """Adjacency matrix from geometry (RDKit's connect-the-dots on covalent radii)."""
    Chem = rdkit_chem()
    from rdkit.Chem import rdDetermineBonds

    rw = Chem.RWMol(mol)
    for bond in list(rw.GetBonds()):
        rw.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    rw.RemoveAllConformers()
    conf = Chem.Conformer(rw.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, p.tolist())
    rw.AddConformer(conf, assignId=True)
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
    rdDetermineBonds.DetermineConnectivity(rw)
    return Chem.GetAdjacencyMatrix(rw)


def with_positions(mol: Any, positions: np.ndarray, heavy_only: bool = False) -> Any:
    """A copy of ``mol`` with one conformer at ``positions`` (hydrogens removed if asked)."""
    Chem = rdkit_chem()
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, p.tolist())
    m.AddConformer(conf, assignId=True)
    return Chem.RemoveHs(m, sanitize=False) if heavy_only else m


def best_rmsd(mol: Any, a: np.ndarray, b: np.ndarray, heavy_only: bool = True) -> float:
    """Symmetry-aware RMSD (Angstrom) between two geometries of ``mol`` after alignment."""
    from rdkit.Chem import rdMolAlign

    pa, pb = with_positions(mol, a, heavy_only), with_positions(mol, b, heavy_only)
    if pa.GetNumAtoms() < 2:  # one atom (methane's heavy atoms): nothing to misplace after alignment
        return 0.0
    return float(rdMolAlign.GetBestRMS(pa, pb, maxMatches=10000))


def distinct(
    mol: Any, positions: Sequence[np.ndarray], energies: Sequence[float], energy_tol: float, prune_rmsd: float
) -> List[Tuple[int, Optional[int]]]:
    """Deduplicate conformers of ``mol``, lowest energy first.

    Two conformers are the same when their energies (eV) differ by less than ``energy_tol``
    kcal/mol and both their heavy-atom and all-atom symmetry-aware RMSDs are below
    ``prune_rmsd`` Angstrom.

    Returns:
        ``(index, duplicate_of)`` for every conformer in order of energy; ``duplicate_of`` is
        ``None`` for a distinct one, else the index of the lower conformer it repeats.
    """
    from mfcalc.units import KCAL_MOL_EV

    out: List[Tuple[int, Optional[int]]] = []
    kept: List[int] = []
    for i in sorted(range(len(energies)), key=lambda k: energies[k]):
        same = next(
            (
                j
                for j in kept
                if abs(energies[i] - energies[j]) / KCAL_MOL_EV < energy_tol
                and best_rmsd(mol, positions[i], positions[j], True) < prune_rmsd
                and best_rmsd(mol, positions[i], positions[j], False) < prune_rmsd
            ),
            None,
        )
        if same is None:
            kept.append(i)
        out.append((i, same))
    return out
