"""Freeze one split of a training run into its own HDF5 file, so that the numbers measured on
it can be reproduced after the data files have grown.

A run's ``split.npz`` holds rows of its data *as read* (several files, identical geometries
merged).  Once a campaign file gains labels, the same rows name other structures.  The frozen
file holds the split's structures and labels themselves, in the label store's ANI layout and
the files' own units (Hartree, Hartree/Angstrom), under the keys the run bound.

    python tools/freeze_split.py RUN_DIR --split test --out models/default_test.h5

A fine-tuning run with a replay (``tools/tune_cc_head.sh``) split two data sets: its new data
and the replayed original data (``replay_<split>`` rows, read with the bindings its source
model records).  Both parts are frozen together; a geometry in both is one structure with the
labels of both.
"""

import argparse
import os
from typing import Dict, List

import numpy as np

from mfcalc import units
from mfcalc.config import FidelityConfig, RunConfig, load_run_data
from mfcalc.data.identity import sort_atoms
from mfcalc.data.records import MFData
from mfcalc.label.store import LabelStore
from mfcalc.progress import ProgressLines
from mfcalc.train import finetune

SUFFIX_ENERGY, SUFFIX_FORCES = ".energy", ".forces"


def level_names(bindings: List[FidelityConfig]) -> dict:
    """fidelity -> the label-store level its keys name (``gfn2_xtb`` for ``gfn2_xtb.energy``)."""
    levels = {}
    for b in bindings:
        name = b.name
        level = b.energy[: -len(SUFFIX_ENERGY)] if b.energy.endswith(SUFFIX_ENERGY) else None
        if level is None or (b.forces is not None and b.forces != level + SUFFIX_FORCES):
            raise SystemExit(
                f"fidelity {name!r} is bound to {b.energy!r}, {b.forces!r}: only LEVEL.energy[, LEVEL.forces] "
                "bindings can be written in the label store's layout"
            )
        if b.energy_unit not in (None, "hartree") or b.forces_unit not in (None, "hartree/angstrom"):
            raise SystemExit(f"fidelity {name!r} is read in {b.energy_unit}, {b.forces_unit}: expected the defaults")
        levels[name] = level
    return levels


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the training run's directory (config.toml and split.npz)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="a new .h5 file (an existing one is an error)")
    args = p.parse_args(argv)
    if os.path.exists(args.out) or os.path.exists(args.out + ".journal"):
        raise SystemExit(f"{args.out} exists: remove it first (a frozen split is written once)")
    cfg = RunConfig.from_toml(os.path.join(args.run, "config.toml"))
    split = np.load(os.path.join(args.run, "split.npz"))
    parts = [(load_run_data(cfg, say=print), split[args.split], level_names(cfg.fidelities))]
    if cfg.train.replay:
        source = finetune.load_source(cfg.train.init_from)
        bindings = finetune.replay_bindings(source, cfg.train.replay)
        replay = finetune.read_replay(source, cfg.train.replay, [b.name for b in bindings])
        parts.append((replay, split[f"replay_{args.split}"], level_names(bindings)))
    store = LabelStore(args.out)
    progress = ProgressLines(print, interval=10.0)
    n_rows = sum(len(rows) for _, rows, _ in parts)
    done = 0
    for data, rows, levels in parts:
        write_rows(store, data, rows, levels)
        done += len(rows)
        progress(f"{done}/{n_rows} rows of split {args.split!r} written")
    store.close()
    print(f"{args.out}: {len(store)} structures of split {args.split!r} ({n_rows} rows) of {args.run}")


def write_rows(store: LabelStore, data: MFData, rows: np.ndarray, levels: Dict[str, str]) -> None:
    """The rows' structures and every label they carry, in the files' own units."""
    ev_per_hartree = units.energy_factor("hartree")  # back to the files' own units, once
    ev_a_per_hartree_a = units.forces_factor("hartree/angstrom")
    smiles = data.group_labels("smiles") if "smiles" in data.groups else None
    for i in rows:
        a0, a1 = data.offsets[i], data.offsets[i + 1]
        numbers, positions = data.numbers[a0:a1], data.positions[a0:a1]
        _, _, order = sort_atoms(numbers, positions)  # the store's atom order, for the forces
        key = store.add(numbers, positions, smiles="" if smiles is None else str(smiles[i]))
        for k, name in enumerate(data.fidelities):
            energy = data.energy[i, k]
            if not np.isfinite(energy):
                continue
            forces = data.forces.get(name)
            f = None
            if forces is not None and np.isfinite(forces[a0:a1]).all():
                f = forces[a0:a1][order] / ev_a_per_hartree_a
            store.record(key, levels[name], energy / ev_per_hartree, f, float("nan"))


if __name__ == "__main__":
    main()
