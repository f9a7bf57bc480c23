#!/usr/bin/env bash
# Build the shipped default model (models/default.pt) from everything labelled: the reference
# data and the campaign's files (data/README.md), with the three-fidelity recipe that the
# validation-split study in README.md selected (40 features, cusp_reg 1e-2), then measure it
# and install it.  Resumable: run it again after a kill and training continues from the
# checkpoint; finished steps are not repeated.
#
#   tools/build_default_model.sh [OUT]            # OUT defaults to runs/default
#
# Settings by environment: DATA (all: the reference data and every campaign file; reference:
# data/mf_reference.h5 only, as the model shipped before the campaign was built), SCHEDULE
# (cosine: the rate decays from 1e-3 to 1e-5 over EPOCHS; plateau: halved on a stall, as the
# model shipped before the campaign was built with EPOCHS=400), EPOCHS (40 per member), MINUTES
# (wall-clock budget of each start of the run, shared by the members still to train; 0: none;
# leave it 0 for a build that spans several starts, so that every member follows the same
# plan), MEMBERS (4), MEMBER_WORKERS (members trained at once, one process and core each; 1),
# FEATURES (40), STRUCTURES (0: all), INSTALL (1: copy into models/; 0 for a trial build),
# CONTINUE_FROM (an earlier build's directory, e.g. data/campaign/default_v4: start every member
# from that build's model.pt on its split, so that labels added since to the same structures
# train a few epochs (EPOCHS, e.g. 10) instead of a whole rebuild; its test rows stay unseen), SPLIT_FROM
# (an earlier build's split.npz for a fresh build on grown data: its structures keep their part,
# found by geometry, and only new ones are split, so the new model is compared with the earlier
# ones on the same validation structures; CONTINUE_FROM implies its build's split), RELATIVE (weight of
# the cc head's within-molecule relative-energy term, --loss-weight cc:relative=W; 0: off).
# Planning figure: about 150 s per epoch and member on one core for 47k structures (measured
# for default_v3, with or without a labelling job on the other core); 324-340 s for 59k
# structures with MEMBER_WORKERS=2 on 2 cores (default_v4: 858k atoms, a third of them
# in the 12,040 drug-sized structures of large.h5).  MEMBER_WORKERS may change between starts: the ensemble is the same.
#
# The run trains on a snapshot of the labelled files as committed when it first started
# (tools/snapshot_data.sh: OUT/data_source records the commit and the files, OUT/data/ holds
# them), so a build kept in git (data/campaign/default_vN: its checkpoint, split and
# data_source, not the copies) resumes in a fresh clone.  The labelled files must be committed
# before the first start.
set -euo pipefail
cd "$(dirname "$0")/.."
# one thread per process unless told otherwise: this project labels beside its builds, and a
# 2-thread torch process sharing a busy core waits in OpenMP spin loops (tools/BENCHMARKS.md,
# "Threads on a busy machine"): default_v8's export took over 20 minutes beside a labeller on 2 threads, under 1 on 1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
out=${1:-runs/default}
source tools/campaign_data.sh  # LABELLED_FILES, FIDELITY_BINDINGS
case ${DATA:-all} in
  all) sources=("${LABELLED_FILES[@]}") ;;
  reference) sources=(data/mf_reference.h5) ;;
  *) echo "DATA must be 'all' or 'reference', got '$DATA'" >&2; exit 2 ;;
esac
tools/snapshot_data.sh "$out" "${sources[@]}"
source_list=$out/data_source  # line 1: the commit; then one labelled file per line
mapfile -t recorded < "$source_list"
sources=("${recorded[@]:1}")
data=()
for f in "${sources[@]}"; do data+=("$out/data/$(basename "$f")"); done
fid=("${FIDELITY_BINDINGS[@]}")
opt=()
[[ ${MINUTES:-0} != 0 ]] && opt+=(--max-minutes "$MINUTES")
[[ ${STRUCTURES:-0} != 0 ]] && opt+=(--max-structures "$STRUCTURES")
[[ ${RELATIVE:-0} != 0 ]] && opt+=(--loss-weight "cc:relative=$RELATIVE")
lr=1e-3
if [[ -n ${CONTINUE_FROM:-} ]]; then
    for f in "$CONTINUE_FROM/model.pt" "$CONTINUE_FROM/split.npz"; do
        [[ -f $f ]] || { echo "CONTINUE_FROM: no $f (that build has not finished)" >&2; exit 2; }
    done
    opt+=(--init-from "$CONTINUE_FROM/model.pt" --split-from "$CONTINUE_FROM/split.npz")
    lr=${LR:-3e-4}  # a warm restart: the members are trained already
    [[ -z ${SPLIT_FROM:-} ]] || { echo "CONTINUE_FROM takes its build's split: leave SPLIT_FROM out" >&2; exit 2; }
fi
[[ -n ${SPLIT_FROM:-} ]] && opt+=(--split-from "$SPLIT_FROM")
if [[ ! -f $out/model.pt ]]; then
    [[ -f $out/checkpoint.pt ]] && opt+=(--resume)
    mfcalc-train --data "${data[@]}" "${fid[@]}" --out "$out" --split-by random \
        --ensemble "${MEMBERS:-4}" --member-workers "${MEMBER_WORKERS:-1}" --epochs "${EPOCHS:-40}" --lr-schedule "${SCHEDULE:-cosine}" \
        --batch-size 32 --lr "$lr" --min-lr 1e-5 --seed 0 \
        --n-features "${FEATURES:-40}" --cusp-reg 1e-2 --device cpu "${opt[@]}"
fi
# the files as committed, in the model file (its "training" paths are the run's copies): what a
# benchmark that replays its training data (tools/bench_finetune.py) takes out of git
python tools/record_sources.py "$out/model.pt" "$source_list"
# test split of the run, as it bound the data (CCSD(T) energies only: the CCSD(T) forces are
# measured on the held-out benchmark below)
mfcalc-eval --model "$out/model.pt" --config "$out/config.toml" --split "$out/split.npz:test" \
    --json "$out/eval_test.json"
python tools/spread_threshold.py "$out/model.pt" "$out" --split-name valid
# molecules it never saw, against GFN2-xTB, wB97X and ANI-1ccx on the same structures
if [[ -f data/benchmark/heldout.h5 ]]; then
    python tools/bench_accuracy.py --model "$out/model.pt" --json "$out/bench_accuracy.json" | tee "$out/bench_accuracy.md"
fi
if [[ ${INSTALL:-1} == 1 ]]; then
    tools/install_default_model.sh "$out"
fi
