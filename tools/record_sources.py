"""Record in a model file the labelled files it was trained on, as committed.

A build (``tools/build_default_model.sh``) trains on a snapshot of files taken out of git at
one commit; its ``data_source`` file holds that commit (line 1) and the repository paths.  A
second stage (``tools/tune_cc_head.sh``) replays its base build's snapshot and adds a newer
snapshot of some files: pass both ``data_source`` files, base first; a path named again later
replaces the earlier entry.  ``tools/bench_finetune.py`` takes exactly these files out of git
to replay the model's own data.

    python tools/record_sources.py MODEL.pt BUILD/data_source [STAGE/data_source ...]
"""

import argparse
from typing import Any, Dict, List, Union

from mfcalc import export, keys


def read_data_source(path: str) -> Dict[str, Any]:
    lines = open(path).read().split()
    if len(lines) < 2 or len(lines[0]) != 40:
        raise SystemExit(f"{path}: expected a commit on line 1 and one repository path per line after it")
    return {"commit": lines[0], "files": lines[1:]}


def combine(entries: List[Dict[str, Any]]) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    """Later entries' paths replace earlier ones'; one entry stays a plain dict (the format a
    single build has always recorded)."""
    out: List[Dict[str, Any]] = []
    for i, entry in enumerate(entries):
        later = {f for e in entries[i + 1 :] for f in e["files"]}
        kept = [f for f in entry["files"] if f not in later]
        if kept:
            out.append({"commit": entry["commit"], "files": kept})
    return out[0] if len(out) == 1 else out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data_source", nargs="+", help="data_source files, the base build's first")
    args = p.parse_args(argv)
    sources = combine([read_data_source(path) for path in args.data_source])
    export.update_metadata(args.model, **{keys.META_TRAINING_SOURCES: sources})
    print(f"{args.model}: training_sources {sources}")


if __name__ == "__main__":
    main()
