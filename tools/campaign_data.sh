# The campaign's labelled files and the fidelity bindings that train on them, declared once.
# Sourced (run from the repository root) by tools/campaign.sh (the committee of each round)
# and tools/build_default_model.sh (the shipped model), so both train on the same data.
# shellcheck shell=bash
LABELLED_FILES=()  # those of data/training_files.txt that exist (a stage not yet run has no file)
while read -r _f; do
    [[ -z $_f || $_f == \#* ]] && continue
    [[ -f $_f ]] && LABELLED_FILES+=("$_f")
done < data/training_files.txt
unset _f
FIDELITY_BINDINGS=(--fidelity "xtb=gfn2_xtb.energy,gfn2_xtb.forces" --fidelity "dft=wb97x_dz.energy,wb97x_dz.forces"
                   --fidelity "cc=ccsd(t)_dz.energy")
