"""The committed campaign data keep their promises: every listed molecule was sampled and
labelled, and no held-out molecule is in any training file (the benchmark's "never trained on").

A SMILES-list reader once cut every SMILES at '#': the 28 nitriles and alkynes were sampled as
methane, ethane, ammonia..., and two held-out molecules became training molecules."""

import h5py
import numpy as np
import pytest

from conftest import REPO
from mfcalc.conformers.molecules import read_smiles_list

Chem = pytest.importorskip("rdkit.Chem")
CAMPAIGN = REPO / "data" / "campaign"
TRAINING_FILES = [  # data/training_files.txt: what the builds train on
    REPO / line.strip()
    for line in (REPO / "data" / "training_files.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
LISTS = {"small": "campaign.h5", "medium": "campaign.h5", "large": "large.h5"}  # list -> its xTB file


def canonical(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None, smiles
    return Chem.MolToSmiles(mol)


def smiles_in(path, labelled_only: bool = False) -> set:
    """Canonical SMILES of a file's structures (with ``labelled_only``, of those with any energy)."""
    with h5py.File(path, "r") as f:
        raw = [
            g["smiles"][()][np.any([np.isfinite(g[k][()]) for k in g if k.endswith(".energy")], axis=0)]
            if labelled_only
            else g["smiles"][()]
            for g in f.values()
        ]
    return {canonical(s.decode()) for s in np.unique(np.concatenate(raw))}


@pytest.fixture(scope="module")
def trained_on() -> set:
    return set().union(*(smiles_in(p, labelled_only=True) for p in TRAINING_FILES if p.exists()))


def test_every_listed_training_molecule_has_gfn2_xtb_labels():
    assert {p.name for p in TRAINING_FILES} >= set(LISTS.values()) | {"mf_reference.h5", "dft.h5", "cc.h5"}
    for name, file in LISTS.items():
        if name == "large" and not (CAMPAIGN / file).exists():
            continue  # the size round (tools/campaign.sh large) writes it when its sampling is done
        listed = {canonical(s) for s in read_smiles_list(str(CAMPAIGN / f"{name}.smi"))}
        missing = listed - smiles_in(CAMPAIGN / file)
        assert not missing, f"{name}.smi: listed but never sampled/labelled: {sorted(missing)}"


def test_no_held_out_molecule_is_in_a_training_file_or_list(trained_on):
    held = {
        canonical(s)
        for name in ("heldout_conformers", "heldout_small")
        for s in read_smiles_list(str(CAMPAIGN / f"{name}.smi"))
    }
    listed = {canonical(s) for name in LISTS for s in read_smiles_list(str(CAMPAIGN / f"{name}.smi"))}
    assert len(held) == 22
    assert not held & trained_on and not held & listed
    # labelled rows only: the file still holds unlabelled rows of the two molecules the bug put in
    assert smiles_in(REPO / "data" / "benchmark" / "heldout.h5", labelled_only=True) <= held


def test_the_conformer_validation_set_is_of_training_molecules_and_no_training_file(trained_on):
    """data/benchmark/validation.h5 validates: its molecules are training molecules (medium.smi),
    none held out, chosen by the rule its list states, and no build trains on the file."""
    from rdkit.Chem import rdMolDescriptors

    chosen = read_smiles_list(str(CAMPAIGN / "validation_conformers.smi"))
    medium = sorted(read_smiles_list(str(CAMPAIGN / "medium.smi")))
    rule = [
        s
        for s in medium
        if Chem.MolFromSmiles(s).GetNumHeavyAtoms() in (5, 6)
        and rdMolDescriptors.CalcNumRotatableBonds(Chem.MolFromSmiles(s)) >= 2
    ][::3]
    assert chosen == rule
    held = {
        canonical(s)
        for n in ("heldout_conformers", "heldout_small")
        for s in read_smiles_list(str(CAMPAIGN / f"{n}.smi"))
    }
    assert not {canonical(s) for s in chosen} & held and {canonical(s) for s in chosen} <= trained_on
    path = REPO / "data" / "benchmark" / "validation.h5"
    assert path not in TRAINING_FILES
    if path.exists():
        assert smiles_in(path) <= {canonical(s) for s in chosen}
