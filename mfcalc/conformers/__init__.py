"""Conformer search at a chosen fidelity: embed (RDKit), optimise (batched L-BFGS or FIRE),
check minima, prune, rank.

* :mod:`~mfcalc.conformers.molecules`: RDKit embedding and reading, bond graphs, RMSD;
* :mod:`~mfcalc.conformers.optimize`: evaluators and batched optimisers with one ``step``;
* :mod:`~mfcalc.conformers.hessian`: finite-difference Hessians, minimum or saddle;
* :mod:`~mfcalc.conformers.rank`: the search as a sequence of named steps;
* :mod:`~mfcalc.conformers.output`: table, SDF and JSON.
"""

from mfcalc.conformers.hessian import SADDLE_CURVATURE, hessians, internal_curvatures, lowest_curvature
from mfcalc.conformers.molecules import best_rmsd, bond_graph, embed_smiles, read_conformers
from mfcalc.conformers.optimize import (
    OPTIMIZERS,
    BatchedFIRE,
    BatchedLBFGS,
    model_evaluator,
    optimize,
    optimize_batched,
)
from mfcalc.conformers.output import format_table, write_json, write_sdf
from mfcalc.conformers.rank import ConformerRecord, RankResult, domain_warnings, rank

__all__ = [
    "SADDLE_CURVATURE",
    "hessians",
    "internal_curvatures",
    "lowest_curvature",
    "best_rmsd",
    "bond_graph",
    "embed_smiles",
    "read_conformers",
    "OPTIMIZERS",
    "BatchedFIRE",
    "BatchedLBFGS",
    "model_evaluator",
    "optimize",
    "optimize_batched",
    "format_table",
    "write_json",
    "write_sdf",
    "ConformerRecord",
    "RankResult",
    "domain_warnings",
    "rank",
]
