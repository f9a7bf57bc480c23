#!/usr/bin/env bash
# Install a finished build (tools/build_default_model.sh) or second stage (tools/tune_cc_head.sh)
# as the shipped default model: the model, its test split frozen into a file of its own (the
# campaign files grow, and the split's row numbers would then name other structures), and the
# card's metrics measured on that file (tests/integration/test_default_model.py reproduces them).
#
#   tools/install_default_model.sh RUN
#
# A build's test rows were also measured through its split (RUN/eval_test.json): both must agree,
# or the frozen file does not hold the structures and labels the run was tested on.  A second
# stage's test part spans its new data and the replayed base data (freeze_split.py writes both,
# each geometry once; tested), so it has no such second measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# == 1 ]] || { echo "usage: $0 RUN" >&2; exit 2; }
run=$1
for f in "$run/model.pt" "$run/config.toml" "$run/split.npz"; do
    [[ -f $f ]] || { echo "$run: no $f (the run has not finished)" >&2; exit 2; }
done
source tools/campaign_data.sh  # FIDELITY_BINDINGS
cp "$run/model.pt" models/default.pt
rm -f models/default_test.h5 models/default_test.h5.journal
python tools/freeze_split.py "$run" --split test --out models/default_test.h5
mfcalc-eval --model models/default.pt --data models/default_test.h5 "${FIDELITY_BINDINGS[@]}" --json models/default_metrics.json
if [[ -f $run/eval_test.json ]]; then
    python tools/same_metrics.py "$run/eval_test.json" models/default_metrics.json
fi
