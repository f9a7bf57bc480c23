"""Regenerate multi-fidelity reference data like data/mf_reference.h5 (PySCF + tblite).

Recipe (data/README.md): RDKit embedding -> GFN2-xTB optimisation -> GFN2-xTB Langevin MD
at 500 K and 900 K, a snapshot every 15 fs after 100 fs of equilibration -> per snapshot

* ``gfn2_xtb.energy/forces``  GFN2-xTB (tblite);
* ``wb97x_dz.energy/forces``  wB97X/6-31G*, density fitting (PySCF);
* ``ccsd(t)_dz.energy``       frozen-core CCSD(T)/cc-pVDZ (PySCF);
* ``ccsd(t)_dz.forces``       optional (``--cc-forces``): the analytic CCSD(T) gradient *with*
  (T) lambda amplitudes solved first; without them PySCF silently uses the CCSD ones and
  the (T) part comes out wrong (data/README.md records the measurement).

Written in the ANI-1x layout: one group per formula, atoms sorted by atomic number,
energies in Hartree, forces in Hartree/Angstrom (PySCF gradients are Hartree/Bohr and are
converted here, once), NaN where a label was not computed.

Cost per structure on one 2-core machine, one thread: GFN2-xTB well under 1 s; wB97X 1-15 s
(1-4 heavy atoms); CCSD(T) energy 1-60 s; CCSD(T) forces 5-10x the energy.

    pip install pyscf tblite
    python tools/make_reference_data.py --smiles O CCO --snapshots 4 --out new.h5 [--cc-forces]
    python tools/make_reference_data.py --check-gradients O      # forces vs finite differences
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List

import numpy as np

BOHR = 0.52917721092  # Angstrom; PySCF's value (pyscf.lib.param.BOHR)


def xtb_calculator():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def pyscf_mole(numbers, positions, basis):
    from pyscf import gto

    return gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions)], basis=basis, unit="Angstrom", verbose=0)


def dft_wb97x(numbers, positions):
    """(energy Ha, forces Ha/A) at wB97X/6-31G* with density fitting."""
    from pyscf import dft

    mf = dft.RKS(pyscf_mole(numbers, positions, "6-31g*")).density_fit()
    mf.xc = "wb97x"
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("wB97X SCF did not converge")
    grad = mf.nuc_grad_method().kernel()  # Hartree/Bohr
    return float(energy), -np.asarray(grad) / BOHR


def ccsd_t(numbers, positions, forces: bool):
    """(energy Ha, forces Ha/A or None) at frozen-core CCSD(T)/cc-pVDZ."""
    from pyscf import cc, scf

    mf = scf.RHF(pyscf_mole(numbers, positions, "cc-pvdz")).run()
    mycc = cc.CCSD(mf).set_frozen().run()
    e_t = mycc.ccsd_t()
    energy = float(mycc.e_tot + e_t)
    if not forces:
        return energy, None
    from pyscf.cc import ccsd_t_lambda
    from pyscf.grad import ccsd_t as ccsd_t_grad

    eris = mycc.ao2mo()
    conv, l1, l2 = ccsd_t_lambda.kernel(mycc, eris, mycc.t1, mycc.t2, verbose=0)  # the (T) lambdas
    if not conv:
        raise RuntimeError("CCSD(T) lambda equations did not converge")
    grad = ccsd_t_grad.Gradients(mycc).kernel(t1=mycc.t1, t2=mycc.t2, l1=l1, l2=l2, eris=eris)
    return energy, -np.asarray(grad) / BOHR


def snapshots(smiles: str, n: int, seed: int):
    """GFN2-xTB-optimised, then Langevin snapshots at 500 K and 900 K (ASE Atoms list)."""
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed + 1
    AllChem.EmbedMolecule(mol, params)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    atoms.calc = xtb_calculator()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    frames = []
    for temperature in (500, 900):
        md = atoms.copy()
        md.calc = xtb_calculator()
        MaxwellBoltzmannDistribution(md, temperature_K=temperature, rng=np.random.default_rng(seed))
        dyn = Langevin(
            md, 0.5 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=np.random.default_rng(seed)
        )
        dyn.run(200)  # 100 fs equilibration
        for _ in range(n // 2 + n % 2 * (temperature == 500)):
            dyn.run(30)  # 15 fs
            frames.append(md.copy())
    return frames[:n]


def label(frames, cc_forces: bool, log) -> Dict[str, np.ndarray]:
    n, na = len(frames), len(frames[0])
    out = {k: np.full(n, np.nan) for k in ("gfn2_xtb.energy", "wb97x_dz.energy", "ccsd(t)_dz.energy")}
    out.update({k: np.full((n, na, 3), np.nan) for k in ("gfn2_xtb.forces", "wb97x_dz.forces", "ccsd(t)_dz.forces")})
    hartree_ev = 27.211386245988
    for i, atoms in enumerate(frames):
        t0 = time.perf_counter()
        a = atoms.copy()
        a.calc = xtb_calculator()
        out["gfn2_xtb.energy"][i] = a.get_potential_energy() / hartree_ev
        out["gfn2_xtb.forces"][i] = a.get_forces() / hartree_ev
        out["wb97x_dz.energy"][i], out["wb97x_dz.forces"][i] = dft_wb97x(atoms.numbers, atoms.positions)
        e, f = ccsd_t(atoms.numbers, atoms.positions, cc_forces)
        out["ccsd(t)_dz.energy"][i] = e
        if f is not None:
            out["ccsd(t)_dz.forces"][i] = f
        log(f"  structure {i + 1}/{n}: {time.perf_counter() - t0:.1f} s")
    return out


def check_gradients(smiles: str, h: float = 1e-3) -> None:
    """Central finite differences (Ha/A) against each level's analytic forces, one structure."""
    frames = snapshots(smiles, 1, 0)
    atoms = frames[0]
    z, x = atoms.numbers, atoms.positions

    def fd(energy):
        g = np.zeros_like(x)
        for a in range(len(x)):
            for c in range(3):
                xp, xm = x.copy(), x.copy()
                xp[a, c] += h
                xm[a, c] -= h
                g[a, c] = -(energy(xp) - energy(xm)) / (2 * h)
        return g

    def xtb_energy(pos):
        b = atoms.copy()
        b.positions = pos
        b.calc = xtb_calculator()
        return b.get_potential_energy() / 27.211386245988

    b = atoms.copy()
    b.calc = xtb_calculator()
    checks = {
        "GFN2-xTB": (b.get_forces() / 27.211386245988, fd(xtb_energy)),
        "wB97X/6-31G*": (dft_wb97x(z, x)[1], fd(lambda p: dft_wb97x(z, p)[0])),
        "CCSD(T)/cc-pVDZ": (ccsd_t(z, x, True)[1], fd(lambda p: ccsd_t(z, p, False)[0])),
    }
    for name, (analytic, numeric) in checks.items():
        print(
            f"{name:<16} max |analytic - finite difference| = {np.abs(analytic - numeric).max():.2e} Ha/A "
            f"(max |F| {np.abs(numeric).max():.3f})"
        )


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smiles", nargs="+")
    p.add_argument("--snapshots", type=int, default=4, help="structures per molecule")
    p.add_argument("--out", default="reference.h5")
    p.add_argument("--cc-forces", action="store_true", help="also CCSD(T) forces (5-10x the energy cost)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-gradients", metavar="SMILES", help="compare forces with finite differences and exit")
    args = p.parse_args(argv)
    if args.check_gradients:
        check_gradients(args.check_gradients)
        return 0
    if not args.smiles:
        p.error("give --smiles or --check-gradients")
    import h5py

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with h5py.File(args.out, "a") as h5:
        for smi in args.smiles:
            log(f"{smi}: sampling {args.snapshots} structures")
            frames = snapshots(smi, args.snapshots, args.seed)
            order = np.argsort(frames[0].numbers, kind="stable")
            frames = [f[order] for f in frames]
            labels = label(frames, args.cc_forces, log)
            formula = "".join(
                f"{s}{c}"
                for s, c in sorted(
                    {
                        sym: frames[0].get_chemical_symbols().count(sym)
                        for sym in set(frames[0].get_chemical_symbols())
                    }.items()
                )
            )
            coords = np.stack([f.positions for f in frames])
            g = h5.require_group(formula)
            new = {"coordinates": coords, "smiles": np.array([smi.encode()] * len(frames)), **labels}
            if "coordinates" not in g:
                g["atomic_numbers"] = frames[0].numbers.astype(np.uint8)
                for k, v in new.items():
                    g.create_dataset(k, data=v, maxshape=(None,) + v.shape[1:])
            else:
                for k, v in new.items():
                    ds = g[k]
                    ds.resize(ds.shape[0] + len(v), axis=0)
                    ds[-len(v) :] = v
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
