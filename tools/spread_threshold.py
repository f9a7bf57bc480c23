"""Set a model file's ensemble-spread warning threshold from its own held-out structures.

threshold = 3 x the 99th percentile of the ensemble energy spread (eV) of one head over one
split of its training run: structures like the training data stay below it, strongly
out-of-domain ones (squeezed, unknown chemistry) go above.  The head is the one with energy
labels on the most structures of the run (the one that saw the whole domain; ``--fidelity``
to choose), written to the file as ``spread_warning_fidelity`` next to the threshold: the
spread of a head trained on few small structures grows with molecular size even inside the
domain (``mfcalc.export.spread_check``).  The data are read exactly as the run read them
(its ``config.toml``), so the split's indices are the run's.

    python tools/spread_threshold.py MODEL.pt RUN_DIR [--split-name valid] [--fidelity NAME]
"""

import argparse
import os

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.config import RunConfig, load_run_data
from mfcalc.data import iterate_batches
from mfcalc.data.fidelity import head_index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("run", help="the training run's directory (config.toml and split.npz)")
    p.add_argument("--split-name", default="valid")
    p.add_argument("--fidelity", help="the head whose spread is measured (default: the most labelled one)")
    args = p.parse_args()
    model, meta = export.load(args.model)
    model = model.double()
    data = load_run_data(RunConfig.from_toml(os.path.join(args.run, "config.toml")), say=lambda m: None)
    idx = np.load(os.path.join(args.run, "split.npz"))[args.split_name]
    fidelities = list(meta[keys.META_FIDELITIES])
    labelled = {name: int(np.isfinite(data.energy[:, i]).sum()) for i, name in enumerate(data.fidelities)}
    head = args.fidelity or max((f for f in fidelities if f in labelled), key=lambda f: labelled[f])
    fid = head_index(fidelities, head)
    spreads = []
    for batch in iterate_batches(data, idx, 64, dtype=torch.float64):
        with torch.no_grad():
            spreads.append(model(batch.numbers, batch.positions, batch.mol_index, batch.n_mol)["energy_std"][:, fid])
    values = torch.cat(spreads).numpy()
    threshold = float(3.0 * np.percentile(values, 99))
    export.update_metadata(
        args.model, **{keys.META_SPREAD_WARNING: round(threshold, 4), keys.META_SPREAD_FIDELITY: head}
    )
    print(
        f"'{head}' head spread on {len(values)} {args.split_name} structures: median {np.median(values):.4f} eV, "
        f"99th percentile {np.percentile(values, 99):.4f} eV -> warning threshold {threshold:.4f} eV"
    )


if __name__ == "__main__":
    main()
