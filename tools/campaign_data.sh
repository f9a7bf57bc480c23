# The campaign's labelled files and the fidelity bindings that train on them, declared once.
# Sourced (run from the repository root) by tools/campaign.sh (the committee of each round)
# and tools/build_default_model.sh (the shipped model), so both train on the same data; and
# where each kind of committee pick is labelled (data/label_targets.txt).
# shellcheck shell=bash
LABELLED_FILES=()  # those of data/training_files.txt that exist (a stage not yet run has no file)
while read -r _f; do
    [[ -z $_f || $_f == \#* ]] && continue
    [[ -f $_f ]] && LABELLED_FILES+=("$_f")
done < data/training_files.txt
unset _f
FIDELITY_BINDINGS=(--fidelity "xtb=gfn2_xtb.energy,gfn2_xtb.forces" --fidelity "dft=wb97x_dz.energy,wb97x_dz.forces"
                   --fidelity "cc=ccsd(t)_dz.energy")
declare -A LABEL_STORE=() LABEL_LEVEL=()  # kind (dft, cc) -> store file and level
while read -r _kind _store _level _rest; do  # _rest: a trailing comment
    [[ -z $_kind || $_kind == \#* ]] && continue
    LABEL_STORE[$_kind]=$_store LABEL_LEVEL[$_kind]=$_level
done < data/label_targets.txt
unset _kind _store _level _rest
