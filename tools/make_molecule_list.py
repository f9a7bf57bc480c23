"""The molecule lists of the data campaign (data/campaign/), written from rules, not by hand-picking.

* ``small.smi``: every neutral closed-shell molecule with 1-3 heavy atoms from C, N, O, F, S, Cl
  that RDKit sanitises with standard valences and that passes the stability rules below;
* ``medium.smi``: 4-8 heavy atoms covering the functional groups of small drug fragments (a
  curated list: alcohols, ethers, amines, amides, esters, acids, aldehydes, ketones, nitriles,
  halides, thiols, sulfides, sulfoxides, aromatics and heteroaromatics);
* ``large.smi``: 9-16 heavy atoms, small drugs and drug fragments (curated), so that the
  model's domain reaches the molecules users rank (ibuprofen has 15 heavy atoms); sampled
  with a cap on minima per molecule (data/README.md, round 3).  The conformer-ranking test
  molecules themselves (ibuprofen, paracetamol) and paracetamol's ethyl ether (phenacetin)
  are left out, so that ranking them stays a test of generalisation;
* ``heldout_conformers.smi`` and ``heldout_small.smi``: molecules kept out of training for the
  accuracy benchmark (tools/bench_accuracy.py): removed from both lists above.

Stability rules for the enumeration (what "common and stable" means here):

1. no formal charges, no radicals (RDKit's default valences fill hydrogens; C 4, N 3, O 2, S 2);
2. F and Cl bond only to carbon (or to H alone: HF, HCl): no X-X, X-O, X-N, X-S;
3. O-O only in H2O2; no S-O or S-N single bonds; S=O only in SO2; no S=S;
4. triple bonds only C#C, C#N and N#N; N=O only on carbon (nitroso);
5. cumulated double bonds only around carbon (allene, ketene, CO2, CS2, COS, HNCO), not N=C=N;
6. three-membered rings: single bonds, at most one heteroatom; no chain of three N/O atoms
   (triazane, HO-NH-OH and the like decompose);
7. no unstable isomers that rearrange at room temperature: enols and ynols (OH on a C=C or
   C#C carbon), and sp3 carbons bearing OH or NH together with another O, N or halogen
   (hydrates, hemiaminals, aminals, alpha-halo alcohols).

    python tools/make_molecule_list.py     # rewrites data/campaign/*.smi and prints the counts
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Iterator, List, Optional

from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "campaign")
ELEMENTS = ["C", "N", "O", "F", "S", "Cl"]
HALOGENS = {"F", "Cl"}
BONDS = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}

# Held out of training: 4-6 heavy atoms with several conformers (benchmark a), and unseen small
# molecules (benchmark b).  Chosen before any training, to cover the elements and groups.
HELDOUT_CONFORMERS = ["CCCCO", "OCCN", "COCCO", "CCC(=O)O", "CC(=O)OC", "OCCF", "ClCCCl", "CCSC", "CCCC=O", "NCC(=O)O"]
HELDOUT_SMALL = [
    "CSC",
    "ClC=C",
    "FCF",
    "CCS",
    "CNC",
    "COC=O",
    "CC(N)=O",
    "C=CC#N",
    "OCC=C",
    "O=CC=O",
    "NC#N",
    "CC(C)Cl",
]

MEDIUM = """
# alcohols, diols, ethers
CCCCCO CC(C)(C)O CC(O)CC OCC(O)CO OCCCO C1CCOC1 C1CCOCC1 C1COCCO1 CCOCC COCOC CC(C)OC(C)C OC1CCCC1
# amines, amino alcohols, heterocycles (saturated)
CCCCN CC(C)N CN(C)C CCN(CC)CC C1CCNC1 C1CCNCC1 C1CNCCN1 C1COCCN1 NCCCO NCCN CC(N)CO
# aldehydes, ketones
CCCCC=O CC(C)C=O CCC(C)=O CC(=O)CC(C)=O O=C1CCCC1 O=C1CCCCC1 CC(=O)C=C CC=CC=O O=CC=CC
# acids, esters, anhydride-free acyls
CCCC(=O)O CC(C)C(=O)O OC(=O)CC(=O)O CC(O)C(=O)O OC(=O)C=C CCOC(C)=O COC(=O)CC CC(=O)OC=C COC(=O)C(C)=O
# amides, ureas, carbamates, lactams, imides
CCC(N)=O CNC(C)=O CN(C)C=O CC(=O)NC(C)=O NC(N)=O CNC(=O)OC O=C1CCCN1 CC(=O)N1CCCC1 NC(=O)CC(N)=O
# nitriles, isocyanates, nitro-free N functions
CCCC#N N#CCC#N N#CC(=O)O CC(C)C#N N#CCO CN=C=O C=CCC#N N#Cc1ccccc1 CC(=NO)C
# halides
CCCCl ClCC(Cl)Cl FC(F)(F)C(O)=O FC(F)(F)CO CC(F)(F)F ClC(Cl)=C(Cl)Cl FCC(F)F CCCCF ClCc1ccccc1 Fc1ccccc1 Clc1ccccc1
# thiols, sulfides, disulfides, sulfoxides, sulfones, thiophene
CCCS CCSCC CSSC CS(C)=O CS(C)(=O)=O C1CCSC1 SCCO CSCC(=O)O c1ccsc1 Cc1cccs1 CC(=O)S CSc1ccccc1
# aromatics and heteroaromatics
c1ccccc1 Cc1ccccc1 Oc1ccccc1 Nc1ccccc1 c1ccncc1 Cc1ccncc1 c1cncnc1 c1ccoc1 c1cc[nH]c1 c1cnc[nH]1 c1cocn1
c1ccc(cc1)O c1ccc(cc1)C=O COc1ccccc1 Cc1ccc(O)cc1 Oc1ccncc1
Cc1ccccc1C CCc1ccccc1 C=Cc1ccccc1 Oc1ccc(F)cc1 Nc1ccc(Cl)cc1 c1csc(n1)N
# unsaturated, small rings, misc
C=CC=C CC=CC C=C(C)C C1=CCCC1 C1CC1C=O C1CCC1 CC1CC1 C1CC1N C#CCO CC#CC C=CCO C=CCN C=CC(=O)O CC(=C)C(=O)OC
# second helping: more of each group, and F, S, Cl in more environments
CCCCCCO OCC(C)C CC(C)CCO OCCOCCO CCOCCO CC(C)(C)OC OC1CCCCC1 CC1CCCO1 OCC1CC1 OC1CCC1
CCCN(C)C CN1CCCC1 NC1CCCCC1 CC(C)(C)N NCC(F)(F)F NCc1ccccc1 CNc1ccccc1 N#CCN
CCCC(C)=O CC(C)C(C)=O CC(=O)C(C)=O CCC(Cl)=O CC(Cl)=O CC(F)=O ClC(Cl)(Cl)C=O
CCCC(=O)OC CC(=O)OCC=C CC(C)OC(C)=O OC(=O)CCl OC(=O)CS OC(=O)CCC(=O)O COC(=O)OC CCOC=O
CC(=O)N(C)C NC(=O)CCl CNC=O NC(=O)C=C CC(=O)NCCO O=C1CCN1 O=C1CCCCN1 CNC(N)=O
CC(C)(C)C#N N#CCCCl N#CC(C)O
CC(Cl)Cl CCC(C)Cl ClCCO ClCC(C)=O C=CCCl ClC=CCl FC=C(F)F CC(F)CO FCCCF ClC(Cl)Cl FC(F)(F)Cl ClCCCCl
CSC=C CCSSCC CSCCO CSCCN CC(C)S C1CSCCS1 CS(N)(=O)=O CS(=O)(=O)Cl CCS(=O)CC CSc1ccncc1 Cc1ccsc1 c1cscn1 Sc1ccccc1
Fc1ccccc1F Cc1ccco1 c1ccnnc1 c1cnccn1 c1cn[nH]c1 c1nc[nH]n1 Nc1ccccn1 Fc1ccncc1 Clc1ccncc1 Oc1ccccc1O Cc1ccccn1
C=CCC=C C#CC#C C=CC#C CC(C)=CC C1=CCC=C1 C1=CCCCC1 CC1=CCCC1
"""


# 9-16 heavy atoms: small drugs and their fragments, rigid and floppy, every element of the set
LARGE = """
# benzoic acids, esters, anilides, sulfonamides (aspirin- and ibuprofen-like fragments)
CC(=O)Oc1ccccc1C(=O)O CC(=O)Nc1ccccc1 COC(=O)c1ccccc1O OC(=O)c1ccccc1 CC(C)Cc1ccccc1 CC(C(=O)O)c1ccccc1
CCOC(=O)c1ccc(N)cc1 Nc1ccc(cc1)S(N)(=O)=O Cc1ccc(cc1)S(N)(=O)=O OC(=O)c1ccc(Cl)cc1 NC(=O)c1ccc(Cl)cc1
OC(=O)c1ccccc1Cl FC(F)(F)c1ccccc1 Oc1ccc(cc1)C(F)(F)F N#Cc1ccc(O)cc1 CCN(CC)C(=O)c1cccc(C)c1
# phenols and aryl ethers
COc1cc(C=O)ccc1O COc1ccccc1O C=CCc1ccc(O)c(OC)c1 CC(N)COc1c(C)cccc1C Clc1ccc(OCC(O)CO)cc1
# amines: phenethylamines, tryptamine, nicotine
NCCc1ccccc1 CC(N)Cc1ccccc1 CNC(C)C(O)c1ccccc1 NCCc1ccc(O)c(O)c1 NCCc1ccc(O)cc1 NCCc1c[nH]c2ccccc12
CN1CCCC1c1cccnc1
# fused and drug-like heteroaromatics
c1ccc2[nH]ccc2c1 c1ccc2ccccc2c1 c1ccc2ncccc2c1 c1ccc2[nH]cnc2c1 c1ccc2occc2c1 c1ccc2sccc2c1 c1ccc2scnc2c1
Cn1cnc2c1c(=O)n(C)c(=O)n2C Cc1c[nH]c(=O)[nH]c1=O O=c1[nH]cc(F)c(=O)[nH]1 NC(=O)c1cccnc1 NNC(=O)c1ccncc1
NC(=O)c1cnccn1 CC1=CC(=O)N(N1C)c1ccccc1 Clc1ccc2oc(=O)[nH]c2c1
# floppy aliphatics: long chains, glymes, acids, amino acids, peptides (conformer-rich)
CCCCCCCCO CCCCCCCCCC CCCC(CCC)C(=O)O CC(C)CC(CN)CC(=O)O NCC1(CC(=O)O)CCCCC1 CC(C)C1CCC(C)CC1O
CC1(C)C2CCC1(C)C(=O)C2 COCCOCCOC CCCCOCCOCCO CC(=O)NC(C)C(=O)NC CSCCC(N)C(=O)O CC(C)(S)C(N)C(=O)O
CC(=O)NC(CS)C(=O)O CC(CS)C(=O)N1CCCC1C(=O)O CCC1(C)CC(=O)NC1=O CCC1(CC)C(=O)NC(=O)NC1=O CN(C)C(=N)NC(N)=N
CCOC(=O)CC(=O)OCC CC(=O)OCC(COC(C)=O)OC(C)=O CCCCSCCCC CS(=O)c1ccccc1 CC(S)C(=O)NCC(=O)O O=C(CCCCl)c1ccc(F)cc1
"""
# the conformer-ranking test molecules (README, issue #14) and a near copy: never in training
RANKING_TESTS = ["CC(C)Cc1ccc(cc1)C(C)C(=O)O", "CC(=O)Nc1ccc(O)cc1", "CCOc1ccc(NC(C)=O)cc1"]


def _bond_ok(a: Chem.Atom, b: Chem.Atom, order: int) -> bool:
    x, y = sorted((a.GetSymbol(), b.GetSymbol()))
    if HALOGENS & {x, y}:
        return order == 1 and (x == "C" or y == "C") and not (HALOGENS >= {x, y})
    if order == 3:
        return (x, y) in {("C", "C"), ("C", "N"), ("N", "N")}
    if (x, y) == ("O", "O") or (x, y) == ("S", "S"):
        return order == 1
    if (x, y) in {("O", "S"), ("N", "S")}:
        return (x, y) == ("O", "S") and order == 2
    if (x, y) == ("N", "O") and order == 2:
        return True  # checked for a carbon on N below
    return True


def _molecule_ok(mol: Chem.Mol, order_of: dict) -> bool:
    smiles = Chem.MolToSmiles(mol)
    if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return False
    for bond in mol.GetBonds():
        if not _bond_ok(bond.GetBeginAtom(), bond.GetEndAtom(), order_of[bond.GetIdx()]):
            return False
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol()
        heavy = [n for n in atom.GetNeighbors()]
        if sym in HALOGENS and heavy and any(n.GetSymbol() != "C" for n in heavy):
            return False
        if sym == "O" and any(n.GetSymbol() == "O" for n in heavy) and smiles != "OO":
            return False
        if sym == "S":
            s_o = [b for b in atom.GetBonds() if b.GetOtherAtom(atom).GetSymbol() == "O"]
            if s_o and smiles != "O=S=O":
                return False
            if atom.GetTotalValence() not in (2,) and smiles != "O=S=O":
                return False
        if sym == "N":
            if any(
                b.GetBondType() == Chem.BondType.DOUBLE and b.GetOtherAtom(atom).GetSymbol() == "O"
                for b in atom.GetBonds()
            ) and not any(n.GetSymbol() == "C" for n in heavy):
                return False
        if sym in ("N", "O") and sum(n.GetSymbol() in ("N", "O") for n in heavy) >= 2:
            return False
        doubles = [b for b in atom.GetBonds() if b.GetBondType() == Chem.BondType.DOUBLE]
        if len(doubles) >= 2 and sym != "C":
            return False
        if len(doubles) >= 2 and sym == "C" and all(b.GetOtherAtom(atom).GetSymbol() == "N" for b in doubles):
            return False  # carbodiimide
        # enols / ynols: OH on a carbon with a double or triple bond to carbon
        if (
            sym == "O"
            and atom.GetTotalNumHs() == 1
            and any(
                n.GetSymbol() == "C"
                and any(
                    b.GetBondType() in (Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)
                    and b.GetOtherAtom(n).GetSymbol() == "C"
                    for b in n.GetBonds()
                )
                for n in heavy
            )
        ):
            return False
        # hydrates, hemiaminals, aminals, alpha-halo alcohols on an sp3 carbon
        if sym == "C" and atom.GetHybridization() == Chem.HybridizationType.SP3:
            hetero = [n for n in heavy if n.GetSymbol() in ("O", "N", "F", "Cl")]
            protic = [n for n in hetero if n.GetSymbol() in ("O", "N") and n.GetTotalNumHs() > 0]
            if len(hetero) >= 2 and protic:
                return False
    ring_info = mol.GetRingInfo()
    for ring in ring_info.AtomRings():
        if any(
            mol.GetBondBetweenAtoms(ring[i], ring[(i + 1) % 3]).GetBondType() != Chem.BondType.SINGLE for i in range(3)
        ):
            return False
        if sum(mol.GetAtomWithIdx(i).GetSymbol() != "C" for i in ring) > 1:
            return False
    return True


def _build(symbols: List[str], bonds: List[tuple]) -> Optional[Chem.Mol]:
    rw = Chem.RWMol()
    for s in symbols:
        rw.AddAtom(Chem.Atom(s))
    for i, j, order in bonds:
        rw.AddBond(i, j, BONDS[order])
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return None
    order_of = {b.GetIdx(): order for b, (_, _, order) in zip(mol.GetBonds(), bonds)}
    return mol if _molecule_ok(mol, order_of) else None


def enumerate_small() -> Iterator[str]:
    for s in ELEMENTS:
        mol = _build([s], [])
        if mol is not None:
            yield Chem.MolToSmiles(mol)
    for a, b in itertools.combinations_with_replacement(ELEMENTS, 2):
        for o in (1, 2, 3):
            mol = _build([a, b], [(0, 1, o)])
            if mol is not None:
                yield Chem.MolToSmiles(mol)
    for a, b, c in itertools.product(ELEMENTS, repeat=3):
        for o1, o2 in itertools.product((1, 2, 3), repeat=2):
            mol = _build([a, b, c], [(0, 1, o1), (1, 2, o2)])
            if mol is not None:
                yield Chem.MolToSmiles(mol)
        for o1, o2, o3 in itertools.product((1, 2), repeat=3):
            mol = _build([a, b, c], [(0, 1, o1), (1, 2, o2), (0, 2, o3)])
            if mol is not None:
                yield Chem.MolToSmiles(mol)


def canonical(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES in the curated list: {smiles}")
    return Chem.MolToSmiles(mol)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    heldout = [canonical(s) for s in HELDOUT_CONFORMERS + HELDOUT_SMALL]
    small = sorted(set(enumerate_small()) - set(heldout), key=lambda s: (Chem.MolFromSmiles(s).GetNumAtoms(), s))
    medium_raw = [canonical(s) for line in MEDIUM.splitlines() if not line.startswith("#") for s in line.split()]
    medium = [s for s in dict.fromkeys(medium_raw) if s not in heldout and s not in small]
    bad = [s for s in medium if not 4 <= Chem.MolFromSmiles(s).GetNumAtoms() <= 8]
    if bad:
        raise ValueError(f"medium molecules outside 4-8 heavy atoms: {bad}")
    large = [
        s
        for s in dict.fromkeys(
            canonical(x) for line in LARGE.splitlines() if not line.startswith("#") for x in line.split()
        )
    ]
    tests = {canonical(s) for s in RANKING_TESTS}
    bad = [s for s in large if not 9 <= Chem.MolFromSmiles(s).GetNumAtoms() <= 16 or s in tests or s in heldout]
    if bad:
        raise ValueError(f"large molecules outside 9-16 heavy atoms, or held out: {bad}")
    header = {
        "small": "1-3 heavy atoms, enumerated under the rules of tools/make_molecule_list.py",
        "medium": "4-8 heavy atoms, functional groups of small drug fragments (curated)",
        "large": "9-16 heavy atoms, small drugs and drug fragments (curated; the ranking test molecules left out)",
        "heldout_conformers": "never trained on: every conformer benchmarked (4-6 heavy atoms)",
        "heldout_small": "never trained on: unseen small molecules, thermal snapshots",
    }
    n_conf = len(HELDOUT_CONFORMERS)
    lists = (
        ("small", small),
        ("medium", medium),
        ("large", large),
        ("heldout_conformers", heldout[:n_conf]),
        ("heldout_small", heldout[n_conf:]),
    )
    for name, items in lists:
        with open(os.path.join(OUT, f"{name}.smi"), "w") as fh:
            fh.write(f"# {header[name]}\n" + "\n".join(items) + "\n")
        print(f"{name}: {len(items)} molecules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
