#!/usr/bin/env bash
# The data campaign recorded in data/README.md, stage by stage.  Every stage is resumable:
# run the same command again after a kill and it continues.  One worker process by default
# (the other core stays free); set WORKERS=N to use more.  Each level has its own file
# (campaign.h5: GFN2-xTB for every candidate; dft.h5, cc.h5: the committee's picks), so that
# a growing level never rewrites the large xTB file in git; training merges identical geometries.
#
#   tools/campaign.sh sample       # round-0 candidates: minima, torsion scans, normal modes, MD (GFN2-xTB)
#   tools/campaign.sh xtb          # GFN2-xTB energies+forces for every candidate -> data/campaign/campaign.h5
#   tools/campaign.sh large        # round 3: 9-16-heavy-atom drugs and fragments, sampled and labelled with GFN2-xTB -> large.h5
#   tools/campaign.sh twist        # round 7: torsion scans of bonds to a three-connected nitrogen, redone so the group turns -> twist.h5
#   tools/campaign.sh heldout      # held-out benchmark structures -> data/benchmark/heldout.h5 (xTB, DFT, CCSD(T))
#   tools/campaign.sh validation   # conformers of 8 training molecules at CCSD(T) -> data/benchmark/validation.h5 (never trained on)
#   tools/campaign.sh committee R  # train the round-R committee on everything labelled so far
#   tools/campaign.sh select-dft R N / select-cc R N   # pick N structures with the round-R committee
#   tools/campaign.sh select-dft-relaxed R N           # the same among minima and relaxed scan points only
#   tools/campaign.sh select-cc-relaxed R N            # CCSD(T) picks among relaxed 1-4-heavy-atom structures
#   tools/campaign.sh select-cc-fill R K               # coverage: CCSD(T) picks until every 1-3-heavy-atom molecule has K
#   tools/campaign.sh select-dft-relaxed-fill R K      # coverage: wB97X picks until every molecule has K relaxed structures labelled
#   tools/campaign.sh select-dft-hbond R N             # wB97X picks among relaxed structures with an intramolecular H-bond motif
#   tools/campaign.sh select-dft-twist R N / select-cc-twist R N   # wB97X / CCSD(T) picks among round 7's turned-group scans
#   (the wB97X picks are ranked by the committee's force spread, which ranks a structure's force
#   error best (tools/committee_spread.py --errors, data/README.md); rounds 1-3 were picked by
#   energy spread: BY=spread repeats them)
#   tools/campaign.sh dft R / cc R                      # label the picks of round R
set -euo pipefail
cd "$(dirname "$0")/.."
C=data/campaign
B=data/benchmark
W=${WORKERS:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
source tools/campaign_data.sh  # the training files, fidelity bindings and label targets, declared once
# skip=(--skip-labelled STORE:LEVEL ...) for a kind's label store (dft or cc) and any further files
# labelled at its level, those that exist
skip_labelled() {
    local kind=$1 f
    shift
    skip=()
    for f in "${LABEL_STORE[$kind]}" "$@"; do
        if [[ -f $f ]]; then skip+=(--skip-labelled "$f:${LABEL_LEVEL[$kind]}"); fi
    done
}
# pool=(campaign.h5 and those of the further candidate files that exist)
candidate_pool() {
    local f
    pool=("$C/campaign.h5")
    for f in "$@"; do
        if [[ -f $f ]]; then pool+=("$f"); fi
    done
}
stage=${1:?usage: tools/campaign.sh sample|xtb|large|twist|heldout|validation|committee|select-dft|select-dft-relaxed|select-dft-hbond|select-dft-twist|select-cc-twist|select-cc|select-cc-relaxed|select-cc-fill|select-dft-relaxed-fill|dft|cc [ROUND] [N]}
case $stage in
  sample)
    mfcalc-sample $C/small.smi $C/medium.smi --out $C/round0_candidates.extxyz --conformers --torsions \
        --normal-modes 300,600,1000 --md 500,1000 --md-minima 1 --per-temperature 12 --window 5 --seed 0 ;;
  xtb)
    mfcalc-label $C/round0_candidates.extxyz --levels gfn2_xtb --out $C/campaign.h5 --workers "$W" ;;
  large)
    # the size domain up to drug-sized molecules: the 8 lowest minima within 5 kcal/mol of each (a
    # floppy one has dozens), every torsion scanned, normal modes and MD as in round 0 with 8 per
    # temperature; its own file, so that campaign.h5 is not rewritten
    mfcalc-sample $C/large.smi --out $C/large_candidates.extxyz --conformers --torsions \
        --normal-modes 300,600,1000 --md 500,1000 --md-minima 1 --per-temperature 8 --window 5 --max-minima 8 --seed 0
    mfcalc-label $C/large_candidates.extxyz --levels gfn2_xtb --out $C/large.h5 --workers "$W" ;;
  twist)
    # round 7: the torsion scans of the molecules whose rotatable bonds end at a three-connected
    # nitrogen, redone with that nitrogen's other substituents held (mfcalc.sample.samplers.torsion_scan):
    # the first scans let it wag back, so the C-N barriers of amides were never crossed; its own file
    mfcalc-sample $C/twist.smi --out $C/twist_candidates.extxyz --torsions --window 5 --max-minima 8 --seed 0
    mfcalc-label $C/twist_candidates.extxyz --levels gfn2_xtb --out $C/twist.h5 --workers "$W" ;;
  heldout)
    mkdir -p $B
    # (a) every conformer within 5 kcal/mol (searched at GFN2-xTB with a 6 kcal/mol margin) of the
    #     4-6-heavy-atom molecules; (b) thermal snapshots of the unseen small molecules
    mfcalc-sample $C/heldout_conformers.smi --out $B/conformers.extxyz --conformers --window 6 --n-embed 50 --seed 0
    #     (from each molecule's lowest minimum only, so that every molecule weighs the same)
    mfcalc-sample $C/heldout_small.smi --out $B/small.extxyz --md 500 --md-minima 1 --per-temperature 8 --seed 0
    # the comparison levels first (minutes; drops rows of structures no longer sampled), then
    # CCSD(T) energies on the conformers and on the small-molecule snapshots (the benchmark
    # itself, an hour), then CCSD(T) forces on every small-molecule snapshot (hours: 96 with
    # forces, plus the 20 of mf_reference.h5, over the 100 the campaign needs to measure forces)
    mfcalc-label $B/conformers.extxyz $B/small.extxyz --levels gfn2_xtb,wb97x_dz --out $B/heldout.h5 \
        --workers "$W" --drop-unlabelled
    mfcalc-label $B/conformers.extxyz $B/small.extxyz --levels ccsd\(t\)_dz --out $B/heldout.h5 --workers "$W"
    mfcalc-label $B/small.extxyz --levels ccsd\(t\)_dz --forces ccsd\(t\)_dz --out $B/heldout.h5 --workers "$W" ;;
  validation)
    # the lowest 6 GFN2-xTB minima within 5 kcal/mol of 8 training molecules with 5-6 heavy atoms
    # (validation_conformers.smi says how they were chosen), at GFN2-xTB, wB97X and CCSD(T): the cc
    # head's conformer energies beyond its 1-4-heavy-atom labels, measured without the held-out set.
    # Its own file in data/benchmark, which no training run reads
    mkdir -p $B
    mfcalc-sample $C/validation_conformers.smi --out $B/validation_conformers.extxyz --conformers --window 5 \
        --max-minima 6 --n-embed 50 --seed 0
    mfcalc-label $B/validation_conformers.extxyz --levels gfn2_xtb,wb97x_dz --out $B/validation.h5 --workers "$W"
    mfcalc-label $B/validation_conformers.extxyz --levels ccsd\(t\)_dz --out $B/validation.h5 --workers "$W" ;;
  committee)
    r=${2:?round}
    [[ -f $C/committee$r.pt ]] && { echo "$C/committee$r.pt exists (remove it to train round $r's committee again)"; exit 0; }
    resume=(); [[ -f runs/committee$r/checkpoint.pt && ! -f runs/committee$r/model.pt ]] && resume=(--resume)
    [[ -f runs/committee$r/model.pt ]] && { echo "runs/committee$r/model.pt exists"; cp runs/committee$r/model.pt $C/committee$r.pt; exit 0; }
    mfcalc-train "${resume[@]}" --data "${LABELLED_FILES[@]}" "${FIDELITY_BINDINGS[@]}" \
        --out runs/committee$r --ensemble 4 --member-workers "$W" --n-features 24 \
        --max-structures "${STRUCTURES:-8000}" --epochs "${EPOCHS:-30}" --min-epochs 20 --batch-size 64 --lr 2e-3 \
        --device cpu --seed "$r" --split-by random
    cp runs/committee$r/model.pt $C/committee$r.pt ;;  # kept in git: the picks of round R come from it
  select-dft)
    # candidates: every GFN2-xTB structure, the drug-sized round 3 included once it exists (rounds
    # 1 and 2 picked from campaign.h5 alone; their pick files are in git, so they are not re-run)
    r=${2:?round}; n=${3:?how many}
    candidate_pool $C/large.h5; skip_labelled dft
    mfcalc-select "${pool[@]}" --model $C/committee$r.pt --n "$n" --by "${BY:-force-spread}" --fidelity dft \
        --per-molecule 40 "${skip[@]}" --out $C/round${r}_dft.extxyz --report $C/round${r}_dft_report.json ;;
  select-dft-relaxed)
    # the conformer stratum: only minima and relaxed scan points (GFN2-xTB forces below 0.05 eV/A),
    # picked by the same committee spread; the committee's picks elsewhere are mostly hot,
    # distorted structures, and the dft head then ranks conformers far worse than wB97X does
    r=${2:?round}; n=${3:?how many}
    candidate_pool $C/large.h5; skip_labelled dft
    mfcalc-select "${pool[@]}" --model $C/committee$r.pt --n "$n" --by "${BY:-force-spread}" --fidelity dft --relaxed gfn2_xtb:0.05 \
        --per-molecule 12 "${skip[@]}" --out $C/round${r}_dft.extxyz --report $C/round${r}_dft_report.json ;;
  select-dft-hbond)
    # the relaxed stratum of molecules with an intramolecular hydrogen-bond motif: an OH, SH or
    # amine N-H two or three bonds from an N, O, F, S or Cl (1,2-aminoalcohols, diols,
    # 2-fluoroethanols, amino acids).  The per-head diagnosis (data/README.md, default_v7) showed the
    # dft head ranks such conformers no better than GFN2-xTB does against wB97X, while only 16 of the
    # 254 wB97X-labelled molecules carry the motif; a committee's spread cannot see that shared bias,
    # so the stratum is chosen by chemistry and the committee orders the picks within it
    r=${2:?round}; n=${3:?how many}
    donor='[OX2H,SX2H,$([NX3;H1,H2;!$(N-[#6]=[#8])])]' acceptor='[#7,#8,#9,#16,#17]'
    motif="[\$($donor-[CX4]-[#6]~$acceptor),\$($donor-[CX4]-[#6]-[#6]~$acceptor)]"
    candidate_pool $C/large.h5; skip_labelled dft
    mfcalc-select "${pool[@]}" --model $C/committee$r.pt --n "$n" --by "${BY:-spread}" --fidelity dft --smarts "$motif" \
        --relaxed gfn2_xtb:0.05 --per-molecule 12 "${skip[@]}" --out $C/round${r}_dft.extxyz --report $C/round${r}_dft_report.json ;;
  select-dft-twist|select-cc-twist)
    # round 8: wB97X (molecules of up to 8 heavy atoms) and CCSD(T) (up to 4) for round 7's torsion
    # scans (twist.h5), at most 3 per molecule.  Every model's amide C-N twist lies 7-10 kcal/mol
    # where GFN2-xTB and wB97X put it at 18-28 (tools/bench_twist.py); twist.h5 teaches the trunk
    # the twist at GFN2-xTB level only, and the dft and cc heads, which the second stage tunes on
    # within-molecule energies, had no turned amide among their labels.  A shared bias that no
    # committee sees: the stratum is chosen by chemistry, the committee orders picks within it
    # (round 8), or BY=energy:gfn2_xtb takes each scan's tops first (round 9: round 8's committee
    # picks held few turned amides, e.g. formamide's highest wB97X pick lay 7 kcal/mol up)
    r=${2:?round}; n=${3:?how many}
    if [[ $stage == select-dft-twist ]]; then level=dft heavy=8 by=(--by "${BY:-force-spread}" --fidelity dft)
    else level=cc heavy=4 by=(--by "${BY:-spread}" --fidelity cc); fi
    skip_labelled $level
    mfcalc-select $C/twist.h5 --max-heavy-atoms "$heavy" --model $C/committee$r.pt --n "$n" "${by[@]}" \
        --per-molecule 3 "${skip[@]}" --out $C/round${r}_$level.extxyz --report $C/round${r}_${level}_report.json ;;
  select-cc)
    r=${2:?round}; n=${3:?how many}
    python tools/pick_frames.py $C/campaign.h5 --max-heavy-atoms 4 --out $C/cc_pool.extxyz
    skip_labelled cc
    mfcalc-select $C/cc_pool.extxyz --model $C/committee$r.pt --n "$n" --by heads:cc,dft \
        --per-molecule 25 "${skip[@]}" --out $C/round${r}_cc.extxyz --report $C/round${r}_cc_report.json ;;
  select-cc-relaxed)
    # CCSD(T) for minima and relaxed scan points of 1-4 heavy atoms, picked where the committee's cc
    # and dft heads disagree most: the cc head's correction, learned from hot structures, adds noise
    # to conformer energies (data/README.md, default_v4).  At most 12 per molecule, picked in passes
    # over the molecules, so that labelling in file order gives every molecule relative energies early
    r=${2:?round}; n=${3:?how many}
    skip_labelled cc
    mfcalc-select $C/campaign.h5 --max-heavy-atoms 4 --relaxed gfn2_xtb:0.05 --model $C/committee$r.pt --n "$n" \
        --by heads:cc,dft --per-molecule 12 "${skip[@]}" --out $C/round${r}_cc.extxyz --report $C/round${r}_cc_report.json ;;
  select-cc-fill)
    # a coverage round: CCSD(T) energies until every molecule of 1-3 heavy atoms (HEAVY) has K in
    # all, counting cc.h5 and mf_reference.h5; one that has K gets none.  The committees passed some
    # molecules over: the nitriles and alkynes (round 1's picks predate the SMILES fix), cumulenes,
    # hydrogen halides and acyl halides had 1-3 CCSD(T) labels each, one structure apiece, so the cc
    # head never saw their bonds stretch at CCSD(T) level, and a triple bond is where CCSD(T) and
    # wB97X differ most (data/README.md).  The committee orders the picks within each molecule
    r=${2:?round}; k=${3:?labels per molecule}
    skip_labelled cc data/mf_reference.h5
    mfcalc-select $C/campaign.h5 --max-heavy-atoms "${HEAVY:-3}" --model $C/committee$r.pt --n "${N:-100000}" \
        --by "${BY:-heads:cc,dft}" --fill-to "$k" "${skip[@]}" --out $C/round${r}_cc.extxyz --report $C/round${r}_cc_report.json ;;
  select-dft-relaxed-fill)
    # a coverage round of the conformer stratum: wB97X until every molecule of up to HEAVY (8) heavy
    # atoms has K of its minima and relaxed scan points labelled (campaign.h5, large.h5, twist.h5;
    # only relaxed labels count).  Rounds 3 and 6 picked relaxed structures by committee score, at
    # most 12 per molecule, and passed many molecules over: before this round 69 of the 157 molecules
    # with 4-6 heavy atoms and 49 of the 92 with 1-3 had no labelled minimum at all, so the dft head,
    # which the cc head starts from, knew their conformer energies at GFN2-xTB level only.
    # COMMITTEE names another round's committee file (a copy of the shipped model is one already)
    r=${2:?round}; k=${3:?relaxed labels per molecule}
    candidate_pool $C/large.h5 $C/twist.h5; skip_labelled dft
    mfcalc-select "${pool[@]}" --max-heavy-atoms "${HEAVY:-8}" --model "${COMMITTEE:-$C/committee$r.pt}" --n "${N:-100000}" \
        --by "${BY:-force-spread}" --fidelity dft --relaxed gfn2_xtb:0.05 --fill-to "$k" "${skip[@]}" \
        --out $C/round${r}_dft.extxyz --report $C/round${r}_dft_report.json ;;
  dft)
    r=${2:?round}
    mfcalc-label $C/round${r}_dft.extxyz --levels "${LABEL_LEVEL[dft]}" --out "${LABEL_STORE[dft]}" --workers "$W" ;;
  cc)
    r=${2:?round}
    mfcalc-label $C/round${r}_cc.extxyz --levels "${LABEL_LEVEL[cc]}" --out "${LABEL_STORE[cc]}" --workers "$W" ;;
  *)
    echo "unknown stage $stage" >&2; exit 2 ;;
esac
