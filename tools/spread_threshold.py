"""Set a model file's ensemble-spread warning threshold from its own held-out structures.

threshold = 3 x the 99th percentile of the ensemble energy spread (eV) of the model's default
head over one split of its training run: structures like the training data stay below it,
strongly out-of-domain ones (squeezed, unknown chemistry) go above.  The data are read
exactly as the run read them (its ``config.toml``), so the split's indices are the run's.

    python tools/spread_threshold.py MODEL.pt RUN_DIR [--split-name valid]
"""

import argparse
import os

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.config import RunConfig, load_run_data
from mfcalc.data import iterate_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("run", help="the training run's directory (config.toml and split.npz)")
    p.add_argument("--split-name", default="valid")
    args = p.parse_args()
    model, meta = export.load(args.model)
    model = model.double()
    data = load_run_data(RunConfig.from_toml(os.path.join(args.run, "config.toml")), say=lambda m: None)
    idx = np.load(os.path.join(args.run, "split.npz"))[args.split_name]
    fid = meta[keys.META_FIDELITIES].index(meta[keys.META_DEFAULT_FIDELITY])
    spreads = []
    for batch in iterate_batches(data, idx, 64, dtype=torch.float64):
        with torch.no_grad():
            spreads.append(model(batch.numbers, batch.positions, batch.mol_index, batch.n_mol)["energy_std"][:, fid])
    values = torch.cat(spreads).numpy()
    threshold = float(3.0 * np.percentile(values, 99))
    export.update_metadata(args.model, **{keys.META_SPREAD_WARNING: round(threshold, 4)})
    print(
        f"spread on {len(values)} {args.split_name} structures: median {np.median(values):.4f} eV, "
        f"99th percentile {np.percentile(values, 99):.4f} eV -> warning threshold {threshold:.4f} eV"
    )


if __name__ == "__main__":
    main()
