"""How far the data campaign is against the minimums of data/README.md, from the files themselves.

Reads every labelled file (its HDF5 and any journal lines not yet merged, so a running
labelling job is counted up to its last finished calculation) and prints, per file and
level: structures with an energy, with forces, failed calculations, molecules, elements and
CPU hours; then each committee round's picks (``data/campaign/round*_dft.extxyz``,
``round*_cc.extxyz``) with how many are labelled; then the campaign's minimums with what is
there.

    python tools/campaign_status.py [--root .]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from mfcalc.data.identity import geometry_key
from mfcalc.label.store import LabelStore

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING_FILES = "data/training_files.txt"  # the labelled files the builds train on, declared there
HELDOUT = "data/benchmark/heldout.h5"
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 16: "S", 17: "Cl"}
LABEL_TARGETS = "data/label_targets.txt"  # where each kind of committee pick is labelled, declared there


def training_files(root: str) -> List[str]:
    """The repository-relative paths listed in data/training_files.txt (existing or not)."""
    path = os.path.join(root, TRAINING_FILES)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: it lists the training files; is --root a mfcalc checkout?")
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]


def label_targets(root: str) -> Dict[str, Tuple[str, str]]:
    """Pick kind (``dft``, ``cc``) -> (store, level), as data/label_targets.txt declares them."""
    path = os.path.join(root, LABEL_TARGETS)
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: it says where committee picks are labelled; is --root a mfcalc checkout?")
    targets = {}
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 3:
                raise SystemExit(f"{path}:{number}: expected 'kind store level', got {line.strip()!r}")
            targets[fields[0]] = (fields[1], fields[2])
    return targets


def level_rows(store: LabelStore) -> Dict[str, Dict[str, Any]]:
    """Per level: energies, forces, failed, molecules (SMILES), elements and CPU hours."""
    rows: Dict[str, Dict[str, Any]] = {}
    for level, counts in store.summary().items():
        done = [s for s in store.structures.values() if level in s.labels and np.isfinite(s.labels[level].energy)]
        elements: Set[int] = set()
        for s in done:
            elements.update(int(z) for z in s.numbers)
        rows[level] = dict(
            counts,
            energies=len(done),
            molecules=len({s.smiles for s in done if s.smiles}),
            elements=" ".join(SYMBOLS.get(z, str(z)) for z in sorted(elements)),
        )
    return rows


def pick_kind(path: str) -> Optional[str]:
    """The kind of a committee pick file, ``round<R>_<kind>...extxyz`` -> kind (None otherwise)."""
    found = re.match(r"round\d+_([a-z]+)", os.path.basename(path))
    return found.group(1) if found else None


def round_rows(root: str, targets: Dict[str, Tuple[str, str]]) -> List[Dict[str, Any]]:
    """Per committee round's pick file: picks, how many carry a label of the round's level in
    its store (matched by geometry key, as the labeller files them), and failed ones."""
    from ase.io import read

    rows, stores = [], {}
    for path in sorted(glob.glob(os.path.join(root, "data", "campaign", "round*_*.extxyz"))):
        kind = pick_kind(path)
        if kind not in targets:
            continue
        store_rel, level = targets[kind]
        store_path = os.path.join(root, store_rel)
        if store_path not in stores:
            stores[store_path] = LabelStore(store_path) if os.path.exists(store_path) else None
        store = stores[store_path]
        keys = [geometry_key(a.numbers, a.positions) for a in read(path, ":")]
        labelled = failed = 0
        for key in keys if store is not None else []:
            # the store's own test of "done" (as the labeller skips), less the recorded failures
            failure = (key, level) in store.failures
            labelled += store.has(key, level) and not failure
            failed += failure
        rel = os.path.relpath(path, root)
        rows.append(dict(picks=rel, store=store_rel, level=level, n=len(keys), labelled=labelled, failed=failed))
    return rows


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.path.dirname(HERE), help="the repository (default: this one)")
    args = p.parse_args(argv)
    totals: Dict[str, Dict[str, Any]] = {}
    print("| file | level | energies | with forces | failed | molecules | elements | CPU hours |")
    print("|---|---|---|---|---|---|---|---|")
    for rel in training_files(args.root) + [HELDOUT]:
        path = os.path.join(args.root, rel)
        if not os.path.exists(path):
            continue
        for level, row in level_rows(LabelStore(path)).items():
            print(
                f"| {rel} | {level} | {row['energies']} | {row['forces']} | {row['failed']} | "
                f"{row['molecules']} | {row['elements']} | {float(row['hours']):.1f} |"
            )
            totals[f"{rel}:{level}"] = row

    targets = label_targets(args.root)
    rounds = round_rows(args.root, targets)
    if rounds:
        print("\n| committee picks | labelled into | level | picks | labelled | failed | |")
        print("|---|---|---|---|---|---|---|")
        for r in rounds:
            print(
                f"| {r['picks']} | {r['store']} | {r['level']} | {r['n']} | {r['labelled']} | {r['failed']} | "
                f"{100 * r['labelled'] / max(r['n'], 1):.0f} % |"
            )

    def count(rel: str, level: str, what: str = "energies") -> int:
        return int(totals.get(f"{rel}:{level}", {}).get(what, 0))

    campaign, large, reference = "data/campaign/campaign.h5", "data/campaign/large.h5", "data/mf_reference.h5"
    minimums = [
        ("GFN2-xTB energies and forces (campaign)", count(campaign, "gfn2_xtb") + count(large, "gfn2_xtb"), 30000),
        (
            "molecules with GFN2-xTB labels (campaign)",
            count(campaign, "gfn2_xtb", "molecules") + count(large, "gfn2_xtb", "molecules"),
            250,
        ),
        ("wB97X energies and forces chosen by committee", count(*targets["dft"]), 4000),
        ("CCSD(T) energies chosen by committee", count(*targets["cc"]), 2000),
        (
            "CCSD(T) forces (reference data and held-out set)",
            count(reference, "ccsd(t)_dz", "forces") + count(HELDOUT, "ccsd(t)_dz", "forces"),
            100,
        ),
        ("held-out structures with CCSD(T) energies", count(HELDOUT, "ccsd(t)_dz"), None),
    ]
    print("\n| campaign minimum | now | needed | |")
    print("|---|---|---|---|")
    for name, now, need in minimums:
        mark = "" if need is None else ("met" if now >= need else f"{100 * now / need:.0f} %")
        print(f"| {name} | {now} | {need if need is not None else '-'} | {mark} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
