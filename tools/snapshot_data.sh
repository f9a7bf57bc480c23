#!/usr/bin/env bash
# The labelled files a run trains on, as committed when it first started: the campaign's
# labelling jobs keep writing to data/campaign/, and a resumed run must see the structures its
# split was drawn from (mfcalc-train refuses other data).  The first call records the commit
# and the files in OUT/data_source (line 1: the commit; then one repository path per line); every
# call makes sure OUT/data/ holds them, taken out of git (git show), written whole or not at all,
# so a run kept in git (its data_source, not the copies) resumes in a fresh clone.  Used by
# tools/build_default_model.sh and tools/tune_cc_head.sh.
#
#   tools/snapshot_data.sh OUT FILE [FILE ...]     # FILEs: repository paths, committed
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { echo "usage: $0 OUT FILE [FILE ...]" >&2; exit 2; }
out=$1
shift
mkdir -p "$out"
list=$out/data_source
if [[ ! -f $list ]]; then
    for f in "$@"; do
        if ! git ls-files --error-unmatch "$f" >/dev/null 2>&1 || ! git diff --quiet HEAD -- "$f"; then
            echo "$f has changes that are not committed: commit the labelled files first (the run trains on them as committed)" >&2
            exit 2
        fi
    done
    { git rev-parse HEAD; printf '%s\n' "$@"; } > "$list.partial"
    mv "$list.partial" "$list"
fi
mapfile -t recorded < "$list"
if [[ ! -d $out/data ]]; then
    rm -rf "$out/data.partial" && mkdir "$out/data.partial"
    for f in "${recorded[@]:1}"; do git show "${recorded[0]}:$f" > "$out/data.partial/$(basename "$f")"; done
    mv "$out/data.partial" "$out/data"
fi
