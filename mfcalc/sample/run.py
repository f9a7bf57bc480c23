"""``mfcalc-sample``: candidate structures for SMILES or files, molecule by molecule, resumable.

Each molecule's samples are written atomically to ``OUT.parts/<n>-<key>.extxyz`` as soon as
it is done, and ``OUT`` (extxyz) is rebuilt from all parts at the end; a run that is killed
and started again skips the molecules whose part exists, and a later run with more
molecules adds theirs.  Every frame carries ``smiles``, ``kind`` (minimum, torsion,
normal_mode, md), the ``engine`` that made it and the sampler's parameters in ``atoms.info``.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mfcalc.chem import rdkit_chem
from mfcalc.conformers.molecules import atomic_numbers, embed_smiles, read_conformers, read_smiles_list
from mfcalc.elements import symbols
from mfcalc.files import atomic_write_text
from mfcalc.progress import stderr_line
from mfcalc.sample.engines import Engine, model_engine, xtb_engine
from mfcalc.sample.samplers import (
    Sample,
    find_minima,
    md_samples,
    normal_mode_samples,
    rotatable_torsions,
    torsion_scan,
)

ANI2X_ELEMENTS = (1, 6, 7, 8, 9, 16, 17)  # H C N O F S Cl


@dataclass
class SampleSettings:
    """What to sample around each molecule (see :mod:`mfcalc.sample.samplers`)."""

    conformers: bool = True  # write the distinct minima
    torsions: bool = False
    relaxed_scans: bool = True
    scan_step: float = 30.0  # degrees
    normal_modes: Sequence[float] = ()  # temperatures, K
    md: Sequence[float] = ()  # temperatures, K
    md_minima: Optional[int] = None  # MD from the lowest this many minima (None: every minimum)
    max_minima: Optional[int] = None  # keep (and sample around) the lowest this many minima only
    per_temperature: int = 10
    n_embed: int = 20
    window: float = 5.0  # kcal/mol above the lowest minimum
    elements: Sequence[int] = ANI2X_ELEMENTS
    max_heavy_atoms: Optional[int] = None
    seed: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


def read_sources(sources: Sequence[str]) -> List[Tuple[str, Any]]:
    """(label, RDKit molecule with Hs) for every SMILES, SMILES-list file (.smi/.txt, one per
    line, '#' comments; see ``read_smiles_list``), or conformer file (SDF, XYZ: one molecule, its conformers)."""
    Chem = rdkit_chem()
    out: List[Tuple[str, Any]] = []
    for source in sources:
        if os.path.exists(source) and source.lower().endswith((".smi", ".txt")):
            for smiles in read_smiles_list(source):
                if Chem.MolFromSmiles(smiles) is None:
                    raise ValueError(f"{source}: {smiles!r} is not a valid SMILES")
                out.append((smiles, None))
        elif os.path.exists(source):
            mol = read_conformers(source)
            out.append((Chem.MolToSmiles(Chem.RemoveHs(mol)), mol))
        else:
            if Chem.MolFromSmiles(source) is None:
                raise ValueError(f"{source!r} is neither a file nor a valid SMILES")
            out.append((source, None))
    return out


def _skip_reason(mol: Any, settings: SampleSettings) -> str:
    numbers = atomic_numbers(mol)
    bad = sorted(set(numbers.tolist()) - set(settings.elements))
    if bad:
        return f"element(s) {', '.join(symbols(bad))} outside {', '.join(symbols(settings.elements))}"
    heavy = int((numbers > 1).sum())
    if settings.max_heavy_atoms is not None and heavy > settings.max_heavy_atoms:
        return f"{heavy} heavy atoms, more than --max-heavy-atoms {settings.max_heavy_atoms}"
    return ""


def sample_molecule(
    smiles: str, mol: Any, engine: Engine, settings: SampleSettings, say: Callable[[str], None]
) -> List[Sample]:
    """Every sample of one molecule (minima first)."""
    Chem = rdkit_chem()
    rng = np.random.default_rng([settings.seed, zlib.crc32(smiles.encode())])
    if mol is None:
        mol = embed_smiles(smiles, settings.n_embed, seed=settings.seed)
    charge = Chem.GetFormalCharge(mol)
    t0 = time.perf_counter()

    def phase(text: str) -> None:  # a drug-sized molecule takes minutes: say where it is
        say(f"  {text} ({time.perf_counter() - t0:.0f} s)")

    minima = find_minima(mol, engine, charge, settings.window, say, max_minima=settings.max_minima)
    if not minima:
        return []
    phase(f"{len(minima)} minima")
    out: List[Sample] = list(minima) if settings.conformers else []
    if settings.torsions:
        torsions = rotatable_torsions(mol)
        for k, torsion in enumerate(torsions):
            out += torsion_scan(
                mol, minima[0].positions, torsion, engine, charge, settings.scan_step, settings.relaxed_scans
            )
            phase(f"torsion scan {k + 1}/{len(torsions)}")
    for n, m in enumerate(minima):
        if settings.normal_modes:
            out += normal_mode_samples(
                mol,
                m.positions,
                engine,
                charge,
                settings.normal_modes,
                settings.per_temperature,
                rng,
                hessian=m.hessian,
            )
        if settings.md and (settings.md_minima is None or n < settings.md_minima):
            out += md_samples(mol, m.positions, engine, charge, settings.md, settings.per_temperature, rng)
            phase(f"MD from minimum {n + 1}")
    if settings.normal_modes:
        phase(f"normal-mode samples around {len(minima)} minima")
    return out


def _extxyz(smiles: str, mol: Any, samples: List[Sample], engine: Engine, charge: int) -> str:
    import ase.io
    from ase import Atoms

    numbers = atomic_numbers(mol)
    frames = []
    for s in samples:
        atoms = Atoms(numbers=numbers, positions=s.positions)
        atoms.info.update(
            {"smiles": smiles, "kind": s.kind, "engine": engine.name, "charge": charge, "multiplicity": 1, **s.info}
        )
        frames.append(atoms)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return buf.getvalue()


def sample(
    sources: Sequence[str],
    out: str,
    settings: SampleSettings,
    engine: str = "gfn2_xtb",
    model: Optional[str] = None,
    fidelity: Optional[str] = None,
    say: Callable[[str], None] = stderr_line,
) -> Dict[str, Dict[str, int]]:
    """Sample every molecule of ``sources`` into the extxyz file ``out``; returns counts per molecule."""
    if not (settings.conformers or settings.torsions or settings.normal_modes or settings.md):
        raise ValueError("nothing to sample: give --conformers, --torsions, --normal-modes T1,T2 or --md T1,T2")
    eng = model_engine(model, fidelity) if model else xtb_engine() if engine == "gfn2_xtb" else None
    if eng is None:
        raise ValueError(f"unknown sampling engine {engine!r}; use gfn2_xtb or --model FILE")
    molecules = read_sources(sources)
    parts = out + ".parts"
    os.makedirs(parts, exist_ok=True)
    counts: Dict[str, Dict[str, int]] = {}
    names = []
    for n, (smiles, given) in enumerate(molecules):
        tag = hashlib.sha1(smiles.encode()).hexdigest()[:10]
        name = os.path.join(parts, f"{n:05d}-{tag}.extxyz")
        names.append(name)
        if os.path.exists(name):
            say(f"[{n + 1}/{len(molecules)}] {smiles}: done in an earlier run")
            continue
        t0 = time.perf_counter()
        mol = given if given is not None else rdkit_chem().AddHs(rdkit_chem().MolFromSmiles(smiles))
        reason = _skip_reason(mol, settings)
        if reason:
            say(f"[{n + 1}/{len(molecules)}] {smiles}: skipped ({reason})")
            atomic_write_text(name, "")
            continue
        samples = sample_molecule(smiles, given, eng, settings, say)
        kinds = {k: sum(s.kind == k for s in samples) for k in ("minimum", "torsion", "normal_mode", "md")}
        counts[smiles] = kinds
        atomic_write_text(name, _extxyz(smiles, mol, samples, eng, rdkit_chem().GetFormalCharge(mol)))
        say(
            f"[{n + 1}/{len(molecules)}] {smiles}: "
            + ", ".join(f"{v} {k}" for k, v in kinds.items())
            + f" ({time.perf_counter() - t0:.1f} s)"
        )
    text = "".join(open(name).read() for name in names if os.path.exists(name))
    atomic_write_text(out, text)
    say(f"wrote {out}: {text.count('Properties=')} structures of {len(molecules)} molecules")
    return counts
