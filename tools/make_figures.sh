#!/usr/bin/env bash
# The README's pictures, from the shipped model and data (needs the plot extra; ~5 min on 2 cores):
#   tools/make_figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
F=docs/figures
mkdir -p "$F"
tmp=$(mktemp -d)
# 1. parity plots: the shipped model on its own test split (CCSD(T) forces it never trained on)
mfcalc-eval --model models/default.pt --data models/default_test.h5 \
    --fidelity "dft=wb97x_dz.energy,wb97x_dz.forces" --fidelity "cc=ccsd(t)_dz.energy,ccsd(t)_dz.forces" \
    --plot "$tmp/eval"
cp "$tmp/eval/parity_cc.png" "$F/parity_cc.png"
# 2. a learning curve: a short three-fidelity run on the reference data
mfcalc-train --data data/mf_reference.h5 --fidelity "xtb=gfn2_xtb.energy,gfn2_xtb.forces" \
    --fidelity "dft=wb97x_dz.energy,wb97x_dz.forces" --fidelity "cc=ccsd(t)_dz.energy" \
    --out "$tmp/run" --epochs 40 --max-structures 3000 --n-features 24 --seed 0 --device cpu
cp "$tmp/run/learning_curve.png" "$F/learning_curve.png"
# 3. conformer energies: 1-butanol with the shipped model's cc head
mfcalc-rank-conformers CCCCO --n-conformers 30 --out "$tmp/butanol.sdf" --plot "$F/conformers_butanol.png" --device cpu
rm -rf "$tmp"
ls -la "$F"
