"""Ranked conformers as a table (terminal), an SDF (with energies as properties) and JSON."""

from __future__ import annotations

import io
import json
from typing import Dict

from mfcalc.chem import rdkit_chem
from mfcalc.conformers.rank import RankResult
from mfcalc.files import atomic_write_text


def format_table(result: RankResult) -> str:
    """Rank, id, relative energy and its uncertainty, heavy-atom RMSD to the lowest,
    convergence and steps; then what was not ranked and why.

    The uncertainty is the members' spread of the *relative* energy (each member's energy
    above its own lowest conformer): the members' absolute energies of a molecule may
    disagree by many kcal/mol by a shared offset that cancels in a ranking.  "!" marks a
    conformer whose domain-check spread exceeds the model's warning threshold."""
    has_spread = any(r.relative_spread_kcal_mol is not None for r in result.ranked)
    head = (
        f"{'rank':>4} {'id':>4} {'rel. E':>10} "
        + (f"{'+/- rel.':>10} " if has_spread else "")
        + f"{'RMSD':>7} {'conv.':>5} {'steps':>5}"
    )
    units = (
        f"{'':>4} {'':>4} {'kcal/mol':>10} "
        + (f"{'kcal/mol':>10} " if has_spread else "")
        + f"{'A':>7} {'':>5} {'':>5}"
    )
    lines = [f"{result.smiles} at fidelity {result.fidelity!r}"]
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [head, units]
    for r in result.ranked:
        spread = ""
        if has_spread:
            value = f"{r.relative_spread_kcal_mol:9.3f}" if r.relative_spread_kcal_mol is not None else f"{'-':>9}"
            spread = f"{value}{'!' if r.outside_domain else ' '} "
        lines.append(
            f"{r.rank:>4} {r.id:>4} {r.relative_kcal_mol:10.3f} {spread}{r.rmsd_to_lowest:7.3f} "
            f"{'yes' if r.converged else 'no':>5} {r.steps:>5}"
        )
    others: Dict[str, int] = {}
    for r in result.records:
        if r.rank is None:
            key = "duplicate" if r.status.startswith("duplicate") else r.status
            others[key] = others.get(key, 0) + 1
    if others:
        lines.append("not ranked: " + ", ".join(f"{n} {k}" for k, n in sorted(others.items())))
    flagged = [r for r in result.records if r.status in ("connectivity changed",) or r.status.startswith("failed")]
    for r in flagged:
        lines.append(f"  conformer {r.id}: {r.status}")
    if any(r.outside_domain for r in result.records):
        lines.append("! ensemble spread above the model's warning threshold: outside its training domain")
    if has_spread:
        lines.append("+/- rel.: the ensemble members' spread of the relative energy")
    return "\n".join(lines)


def write_sdf(result: RankResult, path: str) -> None:
    """Ranked conformers, lowest first, with energies and ranks as SDF properties."""
    Chem = rdkit_chem()
    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    conf_ids = [c.GetId() for c in result.mol.GetConformers()]
    for r in result.ranked:
        m = Chem.Mol(result.mol)
        keep = conf_ids[r.id]
        for cid in [c for c in conf_ids if c != keep]:
            m.RemoveConformer(cid)
        m.SetProp("_Name", f"{result.smiles} conformer {r.id}")
        m.SetIntProp("mfcalc_rank", r.rank)
        m.SetIntProp("mfcalc_id", r.id)
        m.SetDoubleProp("mfcalc_energy_ev", r.energy_ev)
        m.SetDoubleProp("mfcalc_relative_kcal_mol", r.relative_kcal_mol)
        if r.spread_ev is not None:
            m.SetDoubleProp("mfcalc_spread_ev", r.spread_ev)
            m.SetProp("mfcalc_outside_domain", "yes" if r.outside_domain else "no")
        if r.relative_spread_kcal_mol is not None:
            m.SetDoubleProp("mfcalc_relative_spread_kcal_mol", r.relative_spread_kcal_mol)
        m.SetDoubleProp("mfcalc_rmsd_to_lowest", r.rmsd_to_lowest)
        m.SetProp("mfcalc_fidelity", result.fidelity)
        m.SetProp("mfcalc_converged", "yes" if r.converged else "no")
        m.SetIntProp("mfcalc_steps", r.steps)
        writer.write(m)
    writer.close()
    atomic_write_text(path, buffer.getvalue())


def write_json(result: RankResult, path: str) -> None:
    """Every conformer (ranked first), with status, energies, spreads and the domain warnings."""
    doc = {
        "smiles": result.smiles,
        "fidelity": result.fidelity,
        "model": result.model,
        "warnings": list(result.warnings),
        "conformers": [r.to_json() for r in sorted(result.records, key=lambda r: (r.rank is None, r.rank or 0, r.id))],
    }
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
