"""mfcalc-select: candidates + ensemble model -> the structures worth labelling (query by committee)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

from mfcalc.cli.common import run_cli

PROG = "mfcalc-select"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Pick the candidates an ensemble disagrees on most "
        "(query by committee), diverse, at most M per molecule.",
    )
    p.add_argument(
        "candidates", nargs="+", metavar="CANDIDATES", help="structure files (extxyz from mfcalc-sample, HDF5)"
    )
    p.add_argument("--model", required=True, metavar="MODEL.pt", help="an ensemble model file (--ensemble K >= 2)")
    p.add_argument("--n", type=int, required=True, help="how many to pick (0: only report the spreads)")
    p.add_argument("--out", metavar="FILE.extxyz", help="the picked structures, with their scores")
    p.add_argument(
        "--by",
        default="spread",
        metavar="spread|force-spread|heads:A,B|energy:LEVEL",
        help="member energy spread / sqrt(N) (default), member force spread, the disagreement "
        "of two heads after removing an element-wise offset, or the LEVEL energy stored in the candidate "
        "HDF5 files above the lowest of the molecule (torsion-scan tops first: a barrier every member misses alike)",
    )
    p.add_argument("--fidelity", help="head whose spread is used (default: the model's default)")
    p.add_argument("--per-molecule", type=int, metavar="M", help="at most M structures of one molecule")
    p.add_argument(
        "--fill-to",
        type=int,
        metavar="K",
        help="a coverage round: at most K structures of one molecule in all, counting those the "
        "--skip-labelled files already hold at their levels (with --relaxed, the relaxed ones only), so "
        "every molecule ends with K labels and one that has K gets none",
    )
    p.add_argument(
        "--min-distance-change",
        type=float,
        default=0.1,
        metavar="A",
        help="a candidate whose interatomic distances all lie within this of a picked one is a duplicate",
    )
    p.add_argument(
        "--skip-labelled",
        action="append",
        default=[],
        metavar="FILE.h5:LEVEL",
        help="leave out candidates whose geometry already has a LEVEL energy in FILE.h5 (repeatable)",
    )
    p.add_argument(
        "--relaxed",
        metavar="LEVEL:FMAX",
        help="only candidates whose LEVEL forces in the candidate HDF5 files are all below FMAX eV/A per "
        "component (e.g. gfn2_xtb:0.05): minima and relaxed scan points, the structures conformer ranking rests on",
    )
    p.add_argument(
        "--max-heavy-atoms",
        type=int,
        metavar="N",
        help="only candidates with at most N non-hydrogen atoms (CCSD(T) cost grows steeply with size)",
    )
    p.add_argument(
        "--smarts",
        metavar="PATTERN",
        help="only candidates whose molecule (SMILES) contains this substructure, e.g. "
        "'[OX2H]-[CX4]-[CX4]-[N,O,F]' for 1,2-donor/acceptor pairs that form intramolecular hydrogen bonds (RDKit)",
    )
    p.add_argument("--compare-model", metavar="OLD.pt", help="also report the spreads of an earlier committee")
    p.add_argument("--report", metavar="FILE.json", help="write the spread distributions as JSON")
    p.add_argument("--seed", type=int, default=0, help="breaks ties reproducibly")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        import numpy as np

        from mfcalc import export, keys
        from mfcalc.data.identity import geometry_keys
        from mfcalc.files import atomic_write_text
        from mfcalc.select import (
            choose,
            committee_scores,
            energy_above_lowest,
            format_report,
            labelled_geometries,
            labelled_per_molecule,
            matching_substructure,
            molecule_labels,
            read_candidates,
            relaxed_geometries,
            report,
            unscorable_message,
            write_selected,
        )

        if args.n > 0 and not args.out:
            raise ValueError("--out FILE is needed to write the picked structures")
        if args.fill_to is not None and not args.skip_labelled:
            raise ValueError("--fill-to counts the labels of the --skip-labelled files: name at least one")
        if args.max_heavy_atoms is not None and args.max_heavy_atoms < 1:
            raise ValueError(f"--max-heavy-atoms wants N >= 1, got {args.max_heavy_atoms}")
        data = read_candidates(args.candidates)
        numbers = np.arange(len(data))  # each kept candidate's position in the candidate files
        if args.max_heavy_atoms is not None:
            numbers = np.nonzero(data.heavy_atoms <= args.max_heavy_atoms)[0]
            print(f"{len(numbers)} of {len(data)} candidate(s) with at most {args.max_heavy_atoms} heavy atoms")
            data = data.subset(numbers)
        if args.smarts:
            keep = np.nonzero(matching_substructure(data, args.smarts))[0]
            n_mol = len(set(data.group_labels("smiles")[keep]))
            print(f"{len(keep)} of {len(data)} candidate(s), {n_mol} molecule(s), match {args.smarts}")
            if len(keep) == 0:
                raise ValueError(f"--smarts: no candidate molecule contains {args.smarts}")
            numbers, data = numbers[keep], data.subset(keep)
        by_energy = args.by.startswith("energy:")
        if by_energy and not args.by[len("energy:") :]:
            raise ValueError("--by energy:LEVEL names a level, e.g. energy:gfn2_xtb")
        spread_by = "spread" if by_energy else args.by  # the committee reports its spreads either way
        scores = committee_scores(args.model, data, spread_by, args.fidelity, device=args.device)
        if by_energy:
            above = energy_above_lowest(data, args.candidates, args.by[len("energy:") :])
            scores.score = np.where(scores.usable, above, np.nan)
        note = unscorable_message(data, scores, export.load(args.model)[1][keys.META_SPECIES])
        if note:
            print(f"{PROG}: {note}", file=sys.stderr)
        geometries: Dict[str, str] = {}  # every labelled geometry of the --skip-labelled files: its molecule
        candidate_keys = geometry_keys(data) if args.skip_labelled or args.relaxed else []
        for spec in args.skip_labelled:
            store, sep, level = spec.rpartition(":")
            if not sep or not store or not level:
                raise ValueError(f"--skip-labelled wants FILE.h5:LEVEL, got {spec!r}")
            stored = labelled_geometries(store, level)
            done = np.array([k in stored for k in candidate_keys], dtype=bool)
            geometries.update(stored)
            scores.score[done] = np.nan  # never picked
            print(f"{int(done.sum())} candidate(s) already have {level} in {store}: left out")
        if args.relaxed:
            level, sep, fmax = args.relaxed.rpartition(":")
            try:
                limit = float(fmax)
            except ValueError:
                limit = float("nan")
            if not sep or not level or not limit > 0:
                raise ValueError(f"--relaxed wants LEVEL:FMAX with FMAX > 0 in eV/A, got {args.relaxed!r}")
            at_rest = relaxed_geometries(args.candidates, level, limit)
            keep = np.array([k in at_rest for k in candidate_keys], dtype=bool)
            scores.score[~keep] = np.nan  # never picked
            geometries = {k: m for k, m in geometries.items() if k in at_rest}  # --fill-to counts this stratum
            print(f"{int(keep.sum())} candidate(s) relaxed at {level} (forces below {limit:g} eV/A); others left out")
        labelled = labelled_per_molecule(geometries) if args.fill_to is not None else None
        picked = choose(
            scores.score,
            data,
            args.n,
            args.per_molecule,
            args.min_distance_change,
            seed=args.seed,
            fill_to=args.fill_to,
            labelled=labelled,
        )
        if labelled is not None:
            open_ = np.unique(molecule_labels(data)[np.isfinite(scores.score)])  # molecules with a candidate left
            short = [m for m in open_ if labelled.get(str(m), 0) < args.fill_to]
            print(
                f"{len(short)} molecule(s) with candidates left have fewer than {args.fill_to} labels: "
                f"picked up to {args.fill_to} in all"
            )
        baseline = (
            committee_scores(args.compare_model, data, spread_by, args.fidelity, device=args.device)
            if args.compare_model
            else None
        )
        doc = report(scores, picked, baseline)
        print(f"{len(data)} candidates, {int(scores.usable.sum())} scored by {args.by}; picked {len(picked)}")
        print(format_report(doc))
        if args.out and len(picked):
            write_selected(data, picked, scores, args.out, numbers)
        if args.report:
            atomic_write_text(
                args.report, json.dumps({"by": args.by, "picked": numbers[picked].tolist(), **doc}, indent=1)
            )
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
