"""Bring your own level of theory: CASPT2 for ethane, from scratch or fine-tuned from the shipped model.

The Goodpaster ethane data (``../shared/data/external``: 10,080 wB97X/6-31G(d) energies and
forces from Gaussian, 480 CASPT2 energies of the same geometries) are split once, with a fifth
of the CASPT2 structures held out for testing; four runs then get the same wall-clock budget:

All four use the shipped model's network and ensemble size (4 members of 40 features), so
only the starting weights differ; the budget is shared by the members.

1. from scratch, CASPT2 energies only;
2. from scratch, multi-fidelity (DFT energies and forces + CASPT2 energies);
3. fine-tuned from the shipped model: a new ``caspt2`` head copied from its ``cc`` head;
4. the same with the DFT data as a further new head (``dft_g16`` from ``dft``: Gaussian's
   wB97X differs from PySCF's by a constant, so it is a level of its own).

With ``--trunk-anchor W`` and ``--branch-blocks N`` the fine-tuned runs are repeated with an
L2-SP pull of the trunk towards the shipped model, and with the new heads on N private top
blocks (``--train-params branch``: the old heads cannot change at all).

Fine-tuning replays the shipped model's own training data (the files it was trained on, less
its frozen test split ``models/default_test.h5``, copied into the work directory) so that its
old heads are not forgotten.  Printed: CASPT2 relative-energy RMSE on the held-out structures,
the C-C bond-stretch curve of each model, and the old ``cc`` head on that test split before and
after.

    python tools/bench_finetune.py --minutes 6 [--json tools/results/finetune.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.config import TRAIN_PARAMS, FidelityConfig, RunConfig, load_run_data
from mfcalc.data import parse_fidelity
from mfcalc.data.records import MFData
from mfcalc.evaluate import evaluate_file
from mfcalc.files import atomic_write
from mfcalc.models import default_model_path
from mfcalc.train import train
from mfcalc.train.finetune import load_source
from mfcalc.units import KCAL_MOL_EV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTERNAL = os.path.join(REPO, "..", "shared", "data", "external")
TEST_SPLIT = os.path.join(REPO, "models", "default_test.h5")
HEAD_LR = 1e-3  # learning rate of the heads in the fine-tuned runs
STRETCH = np.array([1.3, 1.45, 1.55, 1.7, 1.9, 2.2, 2.6, 3.0])  # C-C distances, Angstrom


def fidelities(external: str, with_dft: bool) -> List[FidelityConfig]:
    cas = FidelityConfig("caspt2", "energies", files=[os.path.join(external, "C2H6_CAS_NMS.h5")], energy_unit="hartree")
    dft = FidelityConfig(
        "dft_g16",
        "energies",
        "forces",
        files=[os.path.join(external, "C2H6_DFT+Force_NMS.h5")],
        energy_unit="hartree",
        forces_unit="hartree/bohr",
    )  # Gaussian forces: Hartree/Bohr
    return [dft, cas] if with_dft else [cas]


def fixed_split(data: MFData, seed: int, max_dft: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A fifth of the CASPT2 structures for testing, a tenth for validation (with a twentieth of
    the DFT-only ones); everything else trains (at most ``max_dft`` DFT-only structures)."""
    rng = np.random.default_rng(seed)
    cas = np.nonzero(np.isfinite(data.energy[:, data.fidelities.index("caspt2")]))[0]
    other = np.setdiff1d(np.arange(len(data)), cas)
    cas, other = rng.permutation(cas), rng.permutation(other)[:max_dft]
    n_test, n_valid = len(cas) // 5, len(cas) // 10
    test, valid = cas[:n_test], np.concatenate([cas[n_test : n_test + n_valid], other[: len(other) // 20]])
    train_rows = np.concatenate([cas[n_test + n_valid :], other[len(other) // 20 :]])
    return {"train": np.sort(train_rows), "valid": np.sort(valid), "test": np.sort(test)}


def restrict(data: MFData, split: Dict[str, np.ndarray], names: List[str]):
    """The data and split of a run that binds only ``names`` (rows without any of them dropped)."""
    cols = data.with_fidelities(names)
    keep = np.nonzero(np.isfinite(cols.energy).any(axis=1))[0]
    where = -np.ones(len(data), dtype=np.int64)
    where[keep] = np.arange(len(keep))
    return cols.subset(keep), {k: where[v][where[v] >= 0] for k, v in split.items()}


def caspt2_rmse(model_path: str, data: MFData, rows: np.ndarray, head_name: str = "caspt2") -> float:
    """Relative-energy RMSE (kcal/mol) of a head against CASPT2: one molecule, its mean error removed."""
    model, meta = export.load(model_path)
    model = model.double()
    head = meta[keys.META_FIDELITIES].index(head_name)
    atoms = data.atom_index(rows)
    z = torch.as_tensor(np.asarray(data.numbers[atoms]), dtype=torch.long)
    x = torch.as_tensor(np.asarray(data.positions[atoms]), dtype=torch.float64)
    sizes = torch.as_tensor(data.offsets[rows + 1] - data.offsets[rows])
    mol = torch.repeat_interleave(torch.arange(len(rows)), sizes)
    with torch.no_grad():
        pred = model(z, x, mol, len(rows))[keys.ENERGY][:, head].numpy()
    err = pred - data.energy[rows, data.fidelities.index("caspt2")]
    return float(np.sqrt(np.mean((err - err.mean()) ** 2)) / KCAL_MOL_EV)


def stretch_curve(model_path: str, data: MFData) -> List[float]:
    """kcal/mol along a rigid C-C stretch of the lowest-CASPT2 structure, relative to its minimum."""
    col = data.fidelities.index("caspt2")
    best = int(np.nanargmin(data.energy[:, col]))
    atoms = data.atom_index(np.array([best]))
    z = np.asarray(data.numbers[atoms])
    x = np.asarray(data.positions[atoms]).copy()
    c = np.nonzero(z == 6)[0]
    axis = (x[c[1]] - x[c[0]]) / np.linalg.norm(x[c[1]] - x[c[0]])
    side = np.dot(x - x[c[0]], axis) > 0.5 * np.linalg.norm(x[c[1]] - x[c[0]])  # the second methyl group
    model, meta = export.load(model_path)
    model = model.double()
    head = meta[keys.META_FIDELITIES].index("caspt2")
    out = []
    for r in STRETCH:
        y = x.copy()
        y[side] += (r - np.linalg.norm(x[c[1]] - x[c[0]])) * axis
        with torch.no_grad():
            e = model(
                torch.as_tensor(z, dtype=torch.long), torch.as_tensor(y), torch.zeros(len(z), dtype=torch.long), 1
            )
        out.append(float(e[keys.ENERGY][0, head]))
    out = np.array(out)
    return list((out - out.min()) / KCAL_MOL_EV)


def training_sources(model_path: str, workdir: str) -> List[str]:
    """The files the model was trained on, as committed when its build started: the model file
    records the commit and the paths (``training_sources``), and ``git show`` brings them back,
    so the replay is the model's own data even after the campaign files have grown."""
    meta = export.load(model_path)[1]
    sources = meta.get(keys.META_TRAINING_SOURCES)
    if not sources:
        raise SystemExit(
            f"{model_path} does not record the files it was trained on ({keys.META_TRAINING_SOURCES}); "
            "a model built by tools/build_default_model.sh does"
        )
    out = []
    for entry in sources if isinstance(sources, list) else [sources]:  # a second stage: one per commit
        for rel in entry["files"]:
            path = os.path.join(workdir, "source_" + os.path.basename(rel))
            if path in out:
                raise SystemExit(f"{model_path}: two training files named {os.path.basename(rel)} in {sources}")
            if not os.path.exists(path):
                blob = subprocess.run(
                    ["git", "-C", REPO, "show", f"{entry['commit']}:{rel}"], check=True, capture_output=True
                ).stdout
                atomic_write(path, lambda tmp, blob=blob: open(tmp, "wb").write(blob))
            out.append(path)
    return out


def replay_files(model_path: str, workdir: str, max_per_file: Optional[int] = None, seed: int = 0) -> List[str]:
    """Copies of the model's training files without the structures of its frozen test split: a
    replay that trained on them would flatter the old head's test error.  ``max_per_file`` keeps
    a random subset of each file (quick runs)."""
    from mfcalc.label.store import LabelStore

    test = set(LabelStore(TEST_SPLIT).structures)
    sources = training_sources(model_path, workdir)
    rng = np.random.default_rng(seed)
    out, dropped, reused = [], 0, 0
    for path in sources:
        copy = os.path.join(workdir, "replay_" + os.path.basename(path)[len("source_") :])
        if os.path.exists(copy):
            reused += 1
        else:
            source = LabelStore(path)
            kept = [k for k in source.structures if k not in test]
            dropped += len(source) - len(kept)
            left_out = set(test)
            if max_per_file is not None and len(kept) > max_per_file:
                chosen = set(rng.choice(len(kept), max_per_file, replace=False).tolist())
                left_out.update(k for i, k in enumerate(kept) if i not in chosen)
            source.write_copy(copy, drop=left_out)
        out.append(copy)
    done = f"{dropped} entries of its {len(test)} test structures left out (a geometry may be in several files)"
    if max_per_file is not None:
        done += f"; at most {max_per_file} structures of each file kept (--max-replay)"
    if reused:
        done += f"; {reused} copies reused from an earlier run in this directory"
    print(f"replay: the {len(sources)} training files of the shipped model; {done}", file=sys.stderr, flush=True)
    return out


def old_cc_error(model_path: str) -> float:
    """The cc head on the shipped model's test structures (kcal/mol)."""
    m = evaluate_file(model_path, [TEST_SPLIT], [parse_fidelity("cc=ccsd(t)_dz.energy")])
    return float(m["cc"]["energy_rmse_kcal_mol"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--external", default=EXTERNAL)
    p.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget of every run")
    p.add_argument("--epochs", type=int, default=10000, help="epoch cap (the budget normally ends a run first)")
    p.add_argument("--max-dft", type=int, help="use at most this many DFT-only structures (quick runs)")
    p.add_argument(
        "--max-replay", type=int, help="replay at most this many structures of each training file (quick runs)"
    )
    p.add_argument("--trunk-lr", type=float, default=1e-4, help="fine-tuned runs: learning rate of the shared trunk")
    p.add_argument("--train-params", default="all", choices=TRAIN_PARAMS, help="fine-tuned runs: what trains")
    p.add_argument(
        "--trunk-anchor",
        type=float,
        default=0.0,
        help="also fine-tune with this L2-SP pull of the trunk towards the shipped model (two more runs)",
    )
    p.add_argument(
        "--branch-blocks",
        type=int,
        default=0,
        help="also fine-tune with --train-params branch on this many private top blocks (two more runs; no "
        "replay, which cannot matter there, and the head rate for the private blocks too)",
    )
    p.add_argument(
        "--lr-schedule",
        default="plateau",
        choices=["plateau", "cosine"],
        help="every run: plateau (halve on a stall, stop after 20 epochs without progress) or cosine (decay to "
        "1e-5 over the epochs that fit the budget, no early stop: a few hundred energies make short epochs "
        "and a noisy validation loss)",
    )
    p.add_argument("--only", nargs="*", help="run only these rows (names as in the table, e.g. 'scratch, CASPT2 only')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.external, "C2H6_CAS_NMS.h5")):
        print(f"the Goodpaster ethane files are not in {args.external}", file=sys.stderr)
        return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="finetune-")
    shipped = load_source("default")
    full = RunConfig(fidelities=fidelities(args.external, True))
    data = load_run_data(full, say=lambda _m: None)
    split = fixed_split(data, args.seed, args.max_dft)
    runs = {
        "scratch, CASPT2 only": dict(with_dft=False, init=False),
        "scratch, DFT + CASPT2": dict(with_dft=True, init=False),
        "fine-tuned, CASPT2 only": dict(with_dft=False, init=True),
        "fine-tuned, DFT + CASPT2": dict(with_dft=True, init=True),
    }
    if args.trunk_anchor > 0:
        runs["fine-tuned, CASPT2 only, anchored"] = dict(with_dft=False, init=True, anchor=True)
        runs["fine-tuned, DFT + CASPT2, anchored"] = dict(with_dft=True, init=True, anchor=True)
    if args.branch_blocks > 0:
        runs["fine-tuned, CASPT2 only, branch"] = dict(with_dft=False, init=True, branch=True)
        runs["fine-tuned, DFT + CASPT2, branch"] = dict(with_dft=True, init=True, branch=True)
    if args.only:
        unknown = set(args.only) - set(runs)
        if unknown:
            p.error(f"--only: no run named {sorted(unknown)}; the runs are {list(runs)}")
        runs = {k: v for k, v in runs.items() if k in args.only}
    rows: Dict[str, Dict[str, object]] = {}
    replaying = any(how["init"] and not how.get("branch") for how in runs.values())
    replay = replay_files(default_model_path(), workdir, args.max_replay, args.seed) if replaying else []
    for name, how in runs.items():
        cfg = RunConfig(
            out=os.path.join(workdir, name.replace(", ", "_").replace(" ", "_")),
            fidelities=fidelities(args.external, bool(how["with_dft"])),
        )
        t = cfg.train
        t.epochs, t.max_minutes, t.min_epochs, t.seed, t.device = args.epochs, args.minutes, 20, args.seed, "cpu"
        t.lr_schedule = args.lr_schedule
        if args.lr_schedule == "cosine":  # the plan fills the budget; the best validation epoch is kept
            t.min_epochs = t.early_stopping = args.epochs
        # the same network and ensemble size everywhere: only the starting weights differ
        cfg.model = dataclasses.replace(shipped.settings, species=None)
        t.ensemble = shipped.ensemble.n_members
        if how["init"]:
            t.init_from, t.replay, t.trunk_lr, t.lr = default_model_path(), replay, args.trunk_lr, HEAD_LR
            t.train_params = args.train_params
            t.new_head = ["caspt2=cc"] + (["dft_g16=dft"] if how["with_dft"] else [])
            t.trunk_anchor = args.trunk_anchor if how.get("anchor") else 0.0
            if how.get("branch"):  # the other heads cannot change: nothing to replay, no slower trunk rate
                t.train_params, t.replay, t.trunk_lr = "branch", None, None
                cfg.model.branch_blocks = args.branch_blocks
                cfg.explicit_model.add("branch_blocks")
        run_data, run_split = restrict(data, split, [f.name for f in cfg.fidelities])
        print(f"{name}: training for {args.minutes} min", file=sys.stderr, flush=True)
        train(cfg, log=lambda _m: None, data=run_data, split=run_split)
        model = os.path.join(cfg.out, "model.pt")
        rows[name] = {
            "caspt2 relE RMSE": caspt2_rmse(model, run_data, run_split["test"]),
            "stretch": stretch_curve(model, run_data),
            "old cc RMSE": old_cc_error(model) if how["init"] else None,
        }
    before = old_cc_error(default_model_path())
    # no training at all: how far the shipped model's own heads are from CASPT2 on these geometries
    zero_shot = {h: caspt2_rmse(default_model_path(), data, split["test"], h) for h in shipped.fidelities}
    print(
        f"fine-tuned runs: head lr {HEAD_LR:g}, trunk lr {args.trunk_lr:g}, training {args.train_params}, replay of "
        f"the shipped model's training data less its test split; anchored runs: trunk anchor {args.trunk_anchor:g}; "
        f"branch runs: {args.branch_blocks} private top block(s) at the head rate, no replay; "
        f"{args.lr_schedule} learning-rate schedule\n"
    )
    print(
        f"| run ({args.minutes} min each) | CASPT2 relE RMSE, held-out (kcal/mol) | old cc head, shipped test "
        f"split (before {before:.2f}) |"
    )
    print("|---|---|---|")
    for h, v in zero_shot.items():
        print(f"| shipped model, no training: its `{h}` head | {v:.2f} | - |")
    for name, r in rows.items():
        old = f"{r['old cc RMSE']:.2f}" if r["old cc RMSE"] is not None else "-"
        print(f"| {name} | {r['caspt2 relE RMSE']:.2f} | {old} |")
    print("\n| C-C stretch, kcal/mol above the lowest point | " + " | ".join(f"{r:.2f} A" for r in STRETCH) + " |")
    print("|---|" + "---|" * len(STRETCH))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in r["stretch"]) + " |")  # type: ignore[union-attr]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "minutes": args.minutes,
                    "trunk_lr": args.trunk_lr,
                    "trunk_anchor": args.trunk_anchor,
                    "lr_schedule": args.lr_schedule,
                    "old_cc_before": before,
                    "zero_shot": zero_shot,
                    "runs": rows,
                },
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
