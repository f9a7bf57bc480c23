#!/usr/bin/env bash
# Second stage of the default model: fine-tune a finished build (tools/build_default_model.sh)
# on the CCSD(T) labels, with the within-molecule relative-energy term for the cc head and a
# replay of everything the build trained on, as ANI-1ccx transfers a DFT-trained model to
# CCSD(T).  In the full build the ~2,000 CCSD(T) energies are a few per cent of each epoch and
# the cc head ranks held-out conformers worse than the dft head; measured with
# tools/label_effect.py (data/README.md, row `relative loss`), this stage brings its conformer
# error from 0.95 to 0.81-0.86 kcal/mol; with CC_FROM=dft DFT_RELATIVE=4 on default_v4 it gave
# default_v9 (0.62), and on default_v11base the shipped default_v11.  Then the base build's measurements are repeated.
#
#   tools/tune_cc_head.sh BASE OUT      # e.g. data/campaign/default_v4 data/campaign/default_v5
#
# Settings by environment: RELATIVE (4: --loss-weight cc:relative=W), EPOCHS (40, cosine, no
# early stop), MEMBERS (4, the first K of the base), MEMBER_WORKERS (1), INSTALL (0: a candidate;
# 1: install it as the shipped model with tools/install_default_model.sh), CC_FROM (empty: the cc
# head continues from the base's cc head; dft: it restarts from the base's dft head, --restart-head,
# and learns its correction from there, as ANI-1ccx starts its coupled-cluster model from the DFT
# one), DFT_RELATIVE (empty: off; W: the committed wB97X store trains too, with its own
# within-molecule term --loss-weight dft:relative=W, so that the dft head, which the cc head starts
# from, ranks conformers better; EPOCHS then defaults to 16, about the optimiser steps of 40 epochs
# over the CCSD(T) energies alone), SEED (0: the members' shuffling and the new structures'
# split; another seed repeats the stage on the same data, which measures how far two runs of one
# recipe differ), HEAD_ANCHOR (empty: off; W: --head-anchor W, L2-SP on the heads, so that the
# cc head restarted from the dft head stays a correction to it).  Resumable: run it again after a kill.  The stores are taken as committed at the
# first start (tools/snapshot_data.sh, as the build does); the replay is the base build's own snapshot
# (BASE/data, restored from git by running the build script on BASE again), split as the base
# build split it, so the base's test structures stay unseen here too; the CCSD(T) structures
# the base already had (most of cc.h5) take the part they had there, and only new ones are
# split anew.
set -euo pipefail
cd "$(dirname "$0")/.."
# one thread per process unless told otherwise: this project labels beside its builds, and a
# 2-thread torch process sharing a busy core waits in OpenMP spin loops (tools/BENCHMARKS.md,
# "Threads on a busy machine"): default_v8's export took over 20 minutes beside a labeller on 2 threads, under 1 on 1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
[[ $# == 2 ]] || { echo "usage: $0 BASE OUT" >&2; exit 2; }
base=$1 out=$2
stores=(data/campaign/cc.h5)
bindings=(--fidelity "cc=ccsd(t)_dz.energy")
weights=(--loss-weight "cc:relative=${RELATIVE:-4}")
epochs=${EPOCHS:-40}
if [[ -n ${DFT_RELATIVE:-} ]]; then
    stores+=(data/campaign/dft.h5)
    bindings+=(--fidelity "dft=wb97x_dz.energy,wb97x_dz.forces")
    weights+=(--loss-weight "dft:relative=$DFT_RELATIVE")
    epochs=${EPOCHS:-16}
fi
for f in "$base/model.pt" "$base/split.npz" "$base/data_source"; do
    [[ -f $f ]] || { echo "BASE: no $f (run tools/build_default_model.sh $base to finish it)" >&2; exit 2; }
done
mapfile -t recorded < "$base/data_source"
replay=()
for f in "${recorded[@]:1}"; do
    [[ -f $base/data/$(basename "$f") ]] || { echo "BASE: no $base/data/$(basename "$f") (run tools/build_default_model.sh $base to restore it)" >&2; exit 2; }
    replay+=("$base/data/$(basename "$f")")
done
tools/snapshot_data.sh "$out" "${stores[@]}"
snapshots=()
for f in "${stores[@]}"; do snapshots+=("$out/data/$(basename "$f")"); done
opt=()
if [[ ! -f $out/model.pt ]]; then
    [[ -f $out/checkpoint.pt ]] && opt+=(--resume)
    [[ -n ${CC_FROM:-} ]] && opt+=(--restart-head "cc=$CC_FROM")
    [[ -n ${HEAD_ANCHOR:-} ]] && opt+=(--head-anchor "$HEAD_ANCHOR")
    mfcalc-train --init-from "$base/model.pt" --data "${snapshots[@]}" "${bindings[@]}" \
        --out "$out" --replay "${replay[@]}" --replay-split "$base/split.npz" --replay-fraction 0.25 \
        --ensemble "${MEMBERS:-4}" --member-workers "${MEMBER_WORKERS:-1}" \
        --epochs "$epochs" --early-stopping "$epochs" --lr-schedule cosine --lr 3e-4 --trunk-lr 1e-4 \
        "${weights[@]}" --seed "${SEED:-0}" --device cpu "${opt[@]}"
fi
# the files it trained on, as committed: the base build's snapshot and this stage's stores
python tools/record_sources.py "$out/model.pt" "$base/data_source" "$out/data_source"
# the warning threshold from the base build's validation structures, as the base read them (this
# run's config holds only the stage's stores; the replay keeps the base's split except that its
# validation part is capped, so some of those structures trained here at a low rate)
python tools/spread_threshold.py "$out/model.pt" "$base" --split-name valid
if [[ -f data/benchmark/heldout.h5 ]]; then
    python tools/bench_accuracy.py --model "$out/model.pt" --json "$out/bench_accuracy.json" | tee "$out/bench_accuracy.md"
fi
if [[ ${INSTALL:-0} == 1 ]]; then
    tools/install_default_model.sh "$out"
fi
