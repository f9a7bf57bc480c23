"""Set a model file's ensemble-spread warning threshold from its own held-out structures.

threshold = 3 x the 99th percentile of the ensemble energy spread (eV) over the given
split of the reference data: structures like the training data stay below it, strongly
out-of-domain ones (squeezed, unknown chemistry) go above.

    python tools/spread_threshold.py MODEL.pt DATA.h5 SPLIT.npz [--split test]
"""

import argparse

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.data import iterate_batches, load_data, parse_fidelity


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("--split-name", default="test")
    args = p.parse_args()
    model, meta = export.load(args.model)
    model = model.double()
    data = load_data([args.data], [parse_fidelity("any=wb97x_dz.energy")])
    idx = np.load(args.split)[args.split_name]
    fid = meta[keys.META_FIDELITIES].index(meta[keys.META_DEFAULT_FIDELITY])
    spreads = []
    for batch in iterate_batches(data, idx, 64, dtype=torch.float64):
        with torch.no_grad():
            spreads.append(model(batch.numbers, batch.positions, batch.mol_index, batch.n_mol)["energy_std"][:, fid])
    spreads = torch.cat(spreads).numpy()
    threshold = float(3.0 * np.percentile(spreads, 99))
    export.update_metadata(args.model, **{keys.META_SPREAD_WARNING: round(threshold, 4)})
    print(
        f"spread on {len(spreads)} {args.split_name} structures: median {np.median(spreads):.4f} eV, "
        f"99th percentile {np.percentile(spreads, 99):.4f} eV -> warning threshold {threshold:.4f} eV"
    )


if __name__ == "__main__":
    main()
