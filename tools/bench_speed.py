"""Speed and memory of mfcalc against hippynn and TorchANI at the same model size, one table.

Installs nothing.  The peers are used when importable (``pip install hippynn torchani`` in
the benchmark environment; they are not mfcalc dependencies) and reported as "not
installed" otherwise.  Every figure is a median over repeated runs, taken in this one
process run, with the ratio mfcalc / peer next to it (> 1 means mfcalc is better).

Same size: mfcalc and hippynn both build HIP-NN-TS with the same features, sensitivities,
interaction blocks, atom layers, tensor order, soft-min/max and cutoff (the parameter
counts are printed); TorchANI is its ANI-1x architecture (one network, random weights).

Sections:
  1. energy+forces latency of one molecule through each ASE calculator (5, 9, 21, 100 atoms);
  2. ASE VelocityVerlet MD steps per second (9 and 100 atoms), with ASE's EMT as the floor;
  3. batched inference throughput, 1,000 structures of 9-21 atoms (energy+forces);
  4. training throughput, energies + forces of two fidelities (xtb, dft) on the reference data;
  5. peak memory of 3 and 4 (CPU: peak resident set growth; GPU: peak allocated);
  6. cost growth with size: periodic water, 100 to 10,000 atoms, pair search included,
     with the fitted exponent of time ~ N^a;
  7. what users run: the shipped 4-member model through ``MFCalculator()`` against
     ANI-1ccx's 8 members (TorchANI, ``../shared/peers``) and ASE's EMT, 9 / 23 / 101 atoms.

    python tools/bench_speed.py                       # CPU, everything
    python tools/bench_speed.py --device cuda         # on a GPU
    python tools/bench_speed.py --sections 1 2 --repeats 20
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("HIPPYNN_USE_CUSTOM_KERNELS", "False")  # its CPU kernels need numba; say so in the table
warnings.filterwarnings("ignore")  # peers warn at import time about optional kernels

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.io import read as ase_read  # noqa: E402
from ase.io import write as ase_write  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "mf_reference.h5")
SPECIES = [1, 6, 7, 8]
FIDELITIES = ["xtb", "dft"]


# ---- measurement helpers -----------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Peak memory growth while ``fn`` runs: GPU peak allocated, or CPU peak RSS above the start.

    On Linux the RSS high-water mark is reset through ``/proc/self/clear_refs``; elsewhere
    (or without permission) CPU memory is not measured.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    base = _rss_kib("VmRSS:")
    fn()
    return (_rss_kib("VmHWM:") - base) / 1024


# ---- structures ------------------------------------------------------------------------------------
# every SMILES the sections embed (sections 1, 2, 3 and 7)
BENCH_SMILES = ["CCCCCCO", "N" + "C" * 32, *("C" * k + "O" for k in range(3, 7)), "CCCCCCC", "C" * 33]
# the benchmark molecules, embedded once: the same geometries on every machine and RDKit
# version, and RDKit is not needed where the file covers them (a GPU machine without it)
GEOMETRIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_molecules.extxyz")


def embed(smiles: str, seed: int = 0) -> Atoms:
    """One embedded conformer (RDKit ETKDG + MMFF) as ASE atoms."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed + 1)
    AllChem.MMFFOptimizeMolecule(mol)
    return Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


@functools.lru_cache(maxsize=1)
def stored_geometries() -> Dict[str, Atoms]:
    """SMILES -> the geometry in ``GEOMETRIES`` (empty if the file is absent)."""
    if not os.path.exists(GEOMETRIES):
        return {}
    return {a.info["smiles"]: a for a in ase_read(GEOMETRIES, index=":")}


def from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """The benchmark geometry of a molecule: stored (seed 0), else embedded with RDKit."""
    stored = stored_geometries().get(smiles) if seed == 0 else None
    return stored.copy() if stored is not None else embed(smiles, seed)


def write_geometries() -> None:
    """(Re)write ``GEOMETRIES`` with every SMILES the sections use (RDKit needed)."""
    frames = []
    for smiles in BENCH_SMILES:
        a = embed(smiles)
        a.info["smiles"] = smiles
        frames.append(a)
    ase_write(GEOMETRIES, frames, format="extxyz")
    print(f"wrote {len(frames)} geometries to {GEOMETRIES}")


@functools.lru_cache(maxsize=1)
def test_molecules() -> Dict[int, Atoms]:
    """5, 9, 21 and 100 atoms: methane, ethanol, 1-hexanol, 1-aminodotriacontane (C32H65NH2).
    Built once (RDKit embedding + MMFF); callers copy before attaching a calculator."""
    mols = {5: molecule("CH4"), 9: molecule("CH3CH2OH"), 21: from_smiles("CCCCCCO"), 100: from_smiles("N" + "C" * 32)}
    for n, atoms in mols.items():
        assert len(atoms) == n, (n, len(atoms))
    return mols


def batch_structures(n: int, seed: int = 0) -> List[Atoms]:
    """``n`` distorted alcohols C2..C6 (9 to 21 atoms)."""
    rng = np.random.default_rng(seed)
    bases = [molecule("CH3CH2OH")] + [from_smiles("C" * k + "O") for k in range(3, 7)]
    out = []
    for i in range(n):
        a = bases[i % len(bases)].copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        out.append(a)
    return out


def water_box(n_molecules: int, seed: int = 0) -> Atoms:
    """Periodic water at liquid density (1 g/cm^3, 29.9 A^3 per molecule): randomly oriented
    molecules, oxygens on the first ``n_molecules`` sites of a cubic lattice filling the box
    (O-O >= 2.5 A; 3.1 A when ``n_molecules`` is a cube)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    length = (29.9 * n_molecules) ** (1 / 3)
    spacing = length / side
    w = molecule("H2O").positions
    w -= w[0]  # rotate about the oxygen, which sits on the lattice site
    pos, numbers = [], []
    for i in range(n_molecules):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        a, b, c, d = q
        rot = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
            ]
        )
        cell_idx = np.array([i % side, (i // side) % side, i // side**2])
        pos.append(w @ rot.T + spacing * (cell_idx + 0.5))
        numbers += [8, 1, 1]
    return Atoms(numbers, positions=np.concatenate(pos), cell=[length] * 3, pbc=True)


def flat_batch(structs: List[Atoms], device, dtype):
    numbers = torch.tensor(np.concatenate([a.numbers for a in structs]), device=device)
    positions = torch.tensor(np.concatenate([a.positions for a in structs]), dtype=dtype, device=device)
    mol = torch.tensor(np.repeat(np.arange(len(structs)), [len(a) for a in structs]), device=device)
    return numbers, positions, mol


def padded_batch(structs: List[Atoms], pad: int, device, dtype):
    n_max = max(len(a) for a in structs)
    z = torch.full((len(structs), n_max), pad, dtype=torch.long)
    r = torch.zeros(len(structs), n_max, 3, dtype=dtype)
    for i, a in enumerate(structs):
        z[i, : len(a)] = torch.from_numpy(a.numbers)
        r[i, : len(a)] = torch.from_numpy(a.positions)
    return z.to(device), r.to(device)


# ---- the three implementations ------------------------------------------------------------------
class Impl:
    """What each code must provide; a method returning None means 'not applicable'."""

    name = ""
    note = ""

    def n_params(self) -> int:
        raise NotImplementedError

    def calculator(self):
        raise NotImplementedError

    def infer(self, structs: List[Atoms]) -> Optional[Callable[[], object]]:
        return None

    def train_step(self, batches) -> Optional[Callable[[int], object]]:
        return None


class Mfcalc(Impl):
    name = "mfcalc"

    def __init__(self, size, device, dtype, workdir):
        from mfcalc import export
        from mfcalc.model import MultiFidelityHipnn
        from mfcalc.model.ensemble import Ensemble

        torch.manual_seed(0)
        self.eager = MultiFidelityHipnn(SPECIES, FIDELITIES, **size)
        self.path = os.path.join(workdir, "mfcalc.pt")
        export.save(Ensemble([self.eager]), self.path, export.build_metadata(Ensemble([self.eager])))
        scripted, _ = export.load(self.path, device=device)
        self.scripted = export.freeze(scripted.to(dtype))  # as MFCalculator runs it
        self.device, self.dtype = device, dtype

    def n_params(self):
        return sum(p.numel() for p in self.eager.parameters())

    def calculator(self, skin: float = 0.5, **options):
        from mfcalc import MFCalculator

        return MFCalculator(
            self.path,
            fidelity="dft",
            device=str(self.device),
            dtype=str(self.dtype).replace("torch.", ""),
            skin=skin,
            **options,
        )

    def infer(self, structs):
        numbers, positions, mol = flat_batch(structs, self.device, self.dtype)
        n = len(structs)

        def run():
            e, f = self.scripted.energy_and_forces(numbers, positions, mol, n, 1)
            return e, f

        return run

    def train_step(self, batches):
        from mfcalc.metrics import batch_stats
        from mfcalc.train.fit import TrainStep
        from mfcalc.train.loss import LossWeights, total_loss

        torch.manual_seed(0)
        model = type(self.eager).from_hparams(self.eager.hparams).to(self.device, self.dtype).train()
        step = TrainStep(model)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        w = LossWeights([1.0, 1.0], [1.0, 1.0], [1.0, 1.0])
        data = [b.to(self.device) for b, _ in batches]
        for b in data:
            b.positions, b.energy = b.positions.to(self.dtype), b.energy.to(self.dtype)
            b.forces = b.forces.to(self.dtype)

        def run(i):
            b = data[i % len(data)]
            pred, forces, hier = step(b.numbers, b.positions, b.mol_index, b.n_mol, b.cell, b.pbc, [0, 1])
            stats = batch_stats(pred, b.energy, b.energy_mask, forces, b.forces, b.forces_mask, b.mol_index, [0, 1])
            loss = total_loss(stats, hier.sum(dim=0), torch.tensor(float(b.n_mol), dtype=stats.dtype), w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run


class MfcalcCompiled(Mfcalc):
    """The same weights through ``MFCalculator(compile=True)`` (torch.compile); ASE sections only."""

    name = "mfcalc compiled"

    def __init__(self, base: Mfcalc):
        self.eager, self.path, self.device, self.dtype = base.eager, base.path, base.device, base.dtype

    def calculator(self, skin: float = 0.5, **options):
        calc = super().calculator(skin, compile=True, **options)
        for atoms in test_molecules().values():  # compile and warm up outside the timed calls
            calc.get_forces(atoms.copy())
        return calc

    def infer(self, structs):
        return None

    def train_step(self, batches):
        return None


class Hippynn(Impl):
    name = "hippynn"

    def __init__(self, size, device, dtype):
        import hippynn  # noqa: F401
        from hippynn.graphs import GraphModule, inputs, networks, physics, targets

        torch.manual_seed(0)
        species = inputs.SpeciesNode(db_name="Z")
        positions = inputs.PositionsNode(db_name="R")
        cls = {0: networks.Hipnn, 1: networks.HipnnVec, 2: networks.HipnnQuad}[size["tensor_order"]]
        kwargs = dict(
            possible_species=[0] + SPECIES,
            n_features=size["n_features"],
            n_sensitivities=size["n_sensitivities"],
            dist_soft_min=size["soft_min"],
            dist_soft_max=size["soft_max"],
            dist_hard_max=size["cutoff"],
            n_interaction_layers=size["n_interactions"],
            n_atom_layers=size["n_atom_layers"],
        )
        if size["tensor_order"] > 0:
            kwargs["cusp_reg"] = size["cusp_reg"]
        net = cls("HIPNN", (species, positions), module_kwargs=kwargs)
        self.heads = [targets.HEnergyNode(f"E_{f}", net) for f in FIDELITIES]
        self.forces = [physics.GradientNode(f"F_{f}", (h, positions), sign=-1) for f, h in zip(FIDELITIES, self.heads)]
        self.module = GraphModule([species, positions], [h.mol_energy for h in self.heads] + self.forces)
        self.module = self.module.to(device, dtype)
        self.device, self.dtype = device, dtype
        self.note = "custom kernels off" if os.environ.get("HIPPYNN_USE_CUSTOM_KERNELS") == "False" else ""

    def n_params(self):
        return sum(p.numel() for p in self.module.parameters())

    def calculator(self, skin: float = 1.0):
        from hippynn.interfaces.ase_interface import HippynnCalculator

        calc = HippynnCalculator(self.heads[1], en_unit=units.eV, skin=skin)
        calc.to(self.dtype)
        calc.to(self.device)
        return calc

    def infer(self, structs):
        z, r = padded_batch(structs, 0, self.device, self.dtype)

        def run():
            out = self.module(z, r.detach().requires_grad_(True))
            return out[1].detach(), out[3].detach()

        return run

    def train_step(self, batches):
        torch.manual_seed(0)
        opt = torch.optim.Adam(self.module.parameters(), lr=1e-4)
        data = []
        for _, padded in batches:
            z, r, e, f = (t.to(self.device) for t in padded)
            data.append((z, r.to(self.dtype), e.to(self.dtype), f.to(self.dtype)))
        self.module.train()

        def run(i):
            z, r, e, f = data[i % len(data)]
            r = r.detach().requires_grad_(True)
            e0, e1, f0, f1 = self.module(z, r)
            real = (z > 0)[..., None]
            loss = (
                ((e0[:, 0] - e[:, 0]) ** 2).mean()
                + ((e1[:, 0] - e[:, 1]) ** 2).mean()
                + (((f0 - f[:, :, 0]) * real) ** 2).sum() / real.sum() / 3
                + (((f1 - f[:, :, 1]) * real) ** 2).sum() / real.sum() / 3
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run


class TorchAni(Impl):
    name = "torchani"
    note = "ANI-1x architecture, 1 network"

    def __init__(self, size, device, dtype):
        from torchani.arch import Assembler
        from torchani.models import SYMBOLS_1X

        torch.manual_seed(0)
        asm = Assembler(periodic_table_index=True)
        asm.set_symbols(SYMBOLS_1X)
        asm.set_atomic_networks(ctor="ani1x")
        asm.set_global_cutoff_fn("cosine")
        asm.set_aev_computer(angular="ani1x", radial="ani1x", strategy="pyaev")
        asm.set_neighborlist("all_pairs")
        asm.set_gsaes_as_self_energies("wb97x-631gd")
        self.model = asm.assemble(1).to(device, dtype)
        self.device, self.dtype = device, dtype

    def n_params(self):
        return sum(p.numel() for p in self.model.parameters())

    def calculator(self):
        return self.model.ase()

    def infer(self, structs):
        z, r = padded_batch(structs, -1, self.device, self.dtype)

        def run():
            pos = r.detach().requires_grad_(True)
            e = self.model((z, pos)).energies
            f = -torch.autograd.grad(e.sum(), pos)[0]
            return e.detach(), f

        return run


PEERS = {"hippynn": Hippynn, "torchani": TorchAni}


def build_impls(
    size,
    device,
    dtype,
    workdir,
    only: Optional[str] = None,
    peers: Sequence[str] = tuple(PEERS),
    compiled: bool = False,
) -> Tuple[List[Impl], List[str]]:
    impls: List[Impl] = [Mfcalc(size, device, dtype, workdir)] if only in (None, "mfcalc") else []
    if compiled and impls:
        impls.append(MfcalcCompiled(impls[0]))
    missing = []
    for module, cls in PEERS.items():
        if only not in (None, module) or (only is None and module not in peers):
            continue
        try:
            impls.append(cls(size, device, dtype))
        except ImportError:
            missing.append(module)
    return impls, missing


# ---- sections --------------------------------------------------------------------------------------
class Table:
    """Rows of (section, case, {impl: value}), printed with mfcalc/peer ratios."""

    def __init__(self, names: List[str]):
        self.names = names
        self.rows: List[Tuple[str, str, str, Dict[str, Optional[float]], bool]] = []
        self.extra: List[str] = []  # tables of their own (section 7), printed after the main one

    def add(self, section: str, case: str, unit: str, values: Dict[str, Optional[float]], higher_better: bool):
        self.rows.append((section, case, unit, values, higher_better))
        print(
            f"  {section:<12} {case:<36} " + "  ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None),
            file=sys.stderr,
            flush=True,
        )

    def print(self) -> None:
        peers = [n for n in self.names if n != "mfcalc"]
        head = (
            "| section | case | unit | mfcalc | "
            + " | ".join(peers)
            + " | "
            + " | ".join(f"mfcalc vs {p}" for p in peers)
            + " |"
        )
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for section, case, unit, values, higher in self.rows:

            def cell(v):
                return "-" if v is None else f"{v:.4g}"

            ratios = []
            for p in peers:
                m, q = values.get("mfcalc"), values.get(p)
                if m is None or q is None or m == 0 or q == 0:
                    ratios.append("-")
                else:
                    ratios.append(f"{(m / q if higher else q / m):.2f}x")
            print(
                f"| {section} | {case} | {unit} | {cell(values.get('mfcalc'))} | "
                + " | ".join(cell(values.get(p)) for p in peers)
                + " | "
                + " | ".join(ratios)
                + " |"
            )
        for text in self.extra:
            print("\n" + text)


def section_latency(impls, table, args, device):
    for n, atoms in test_molecules().items():
        values = {}
        for impl in impls:
            a = atoms.copy()
            a.calc = impl.calculator()
            rng = np.random.default_rng(0)
            base = a.positions.copy()

            def call():  # a small move, as in MD: every call must recompute
                a.positions = base + rng.normal(scale=0.005, size=base.shape)
                return a.get_forces()

            values[impl.name] = 1e3 * median_time(call, args.repeats, 5, device)
        table.add("1 latency", f"energy+forces, {n} atoms", "ms/call (lower better)", values, False)


def md_steps_per_second(atoms: Atoms, calc, n_steps: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        a = atoms.copy()
        a.calc = calc
        dyn = VelocityVerlet(a, timestep=0.25 * units.fs)
        dyn.run(3)  # warm-up: first call builds pair lists and caches
        t0 = time.perf_counter()
        dyn.run(n_steps)
        rates.append(n_steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def section_md(impls, table, args, device):
    from ase.calculators.emt import EMT

    from mfcalc import MFCalculator

    mols = test_molecules()
    for n in (9, 100):
        steps = args.md_steps if n <= 21 else max(10, args.md_steps // 4)
        values = {impl.name: md_steps_per_second(mols[n], impl.calculator(), steps, 3) for impl in impls}
        values["ASE EMT"] = md_steps_per_second(mols[n], EMT(), steps, 3)
        # The models above have random weights: their forces move atoms 0.1-0.5 A per step, so
        # mfcalc rebuilds its pair list (skin 0.5 A) on every step.  A trained model moves
        # atoms as MD does, which is what this row shows (4 members, 40 features).
        values["mfcalc shipped"] = md_steps_per_second(mols[n], MFCalculator(device=str(device)), steps, 3)
        table.add("2 MD", f"VelocityVerlet, {n} atoms", "steps/s (higher better)", values, True)


def inference_workload(impl: Impl, args) -> Optional[Callable[[], object]]:
    """All ``--n-batch`` structures through ``impl`` in batches of ``--batch-size-infer``."""
    structs = batch_structures(args.n_batch)
    bs = args.batch_size_infer
    calls = [impl.infer(structs[i : i + bs]) for i in range(0, len(structs), bs)]
    if calls[0] is None:
        return None

    def all_batches():
        for c in calls:
            c()

    return all_batches


def section_batched(impls, table, args, device):
    values, memory = {}, {}
    for impl in impls:
        work = inference_workload(impl, args)
        if work is None:
            continue
        values[impl.name] = args.n_batch / median_time(work, max(3, args.repeats // 10), 2, device)
        memory[impl.name] = measure_memory(impl, "3", args, device)
    table.add(
        "3 inference",
        f"{args.n_batch} structures 9-21 atoms, batch {args.batch_size_infer}",
        "structures/s (higher better)",
        values,
        True,
    )
    table.add("5 memory", f"peak, inference batch {args.batch_size_infer}", "MiB (lower better)", memory, False)


def measure_memory(impl: Impl, section: str, args, device) -> Optional[float]:
    """Peak memory of one run of a section's workload.

    CPU: in a fresh process (``--probe-memory``), because a process that has run the
    workload before keeps its freed memory and would report no growth.  GPU: in process.
    """
    if device.type == "cuda":
        return peak_memory_mib(memory_workload(impl, section, args), device)
    cmd = [sys.executable, os.path.abspath(__file__), "--probe-memory", f"{impl.name}:{section}"] + args.argv
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    try:
        return float(lines[-1]) if res.returncode == 0 and lines[-1] != "None" else None
    except (IndexError, ValueError):
        return None


def probe_memory(spec: str, args, device, dtype, size) -> int:
    """Child side of :func:`measure_memory`: build one implementation, run once, print MiB."""
    name, section = spec.split(":", 1)
    with tempfile.TemporaryDirectory() as workdir:
        impls, _ = build_impls(size, device, dtype, workdir, only=name)
        work = memory_workload(impls[0], section, args)
        print(peak_memory_mib(work, device))
    return 0


def memory_workload(impl: Impl, section: str, args) -> Optional[Callable[[], object]]:
    """What a memory probe runs: section 3 inference, 4 training, or "6:N" one call on N
    water molecules (after two warm-up calls on a small box, so TorchScript's one-time
    specialisation is not counted)."""
    if section == "3":
        return inference_workload(impl, args)
    if section == "4":
        return training_workload(impl, args)
    _, warm = water_call(impl, 36)
    warm()
    warm()
    return water_call(impl, int(section.split(":")[1]))[1]


def training_batches(batch_size: int, n_batches: int):
    """Batches of the reference data (xtb and dft energies + forces): flat and padded forms."""
    from mfcalc.data import load_data, parse_fidelity
    from mfcalc.data.dataset import collate

    data = load_data(
        [DATA],
        [parse_fidelity("xtb=gfn2_xtb.energy,gfn2_xtb.forces"), parse_fidelity("dft=wb97x_dz.energy,wb97x_dz.forces")],
    )
    has_all = np.nonzero(data.forces_mask().all(axis=1) & np.isfinite(data.energy).all(axis=1))[0]
    rng = np.random.default_rng(0)
    order = rng.permutation(has_all)
    out = []
    for b in range(n_batches):
        idx = order[(b * batch_size) % len(order) :][:batch_size]
        flat = collate(data, idx, dtype=torch.float64)
        flat.energy = flat.energy - flat.energy.mean(dim=0)  # any offset; timing only
        counts = data.n_atoms[idx]
        n_max = int(counts.max())
        z = torch.zeros(len(idx), n_max, dtype=torch.long)
        r = torch.zeros(len(idx), n_max, 3, dtype=torch.float64)
        f = torch.zeros(len(idx), n_max, 2, 3, dtype=torch.float64)
        start = 0
        for i, c in enumerate(counts):
            z[i, :c] = flat.numbers[start : start + c]
            r[i, :c] = flat.positions[start : start + c]
            f[i, :c] = flat.forces[start : start + c]
            start += c
        out.append((flat, (z, r, flat.energy, f)))
    return out


def training_workload(impl: Impl, args) -> Optional[Callable[[], object]]:
    """``--train-steps`` optimisation steps of ``impl`` on reference-data batches."""
    step = impl.train_step(training_batches(args.batch_size_train, 16))
    if step is None:
        return None
    counter = iter(range(10**9))

    def run():
        for _ in range(args.train_steps):
            step(next(counter))

    return run


def section_training(impls, table, args, device):
    values, memory = {}, {}
    for impl in impls:
        work = training_workload(impl, args)
        if work is None:
            continue
        values[impl.name] = args.train_steps * args.batch_size_train / median_time(work, 3, 1, device)
        memory[impl.name] = measure_memory(impl, "4", args, device)
    table.add(
        "4 training", f"E+F of xtb and dft, batch {args.batch_size_train}", "structures/s (higher better)", values, True
    )
    table.add("5 memory", f"peak, training batch {args.batch_size_train}", "MiB (lower better)", memory, False)


def water_call(impl: Impl, n_mol: int) -> Tuple[Atoms, Callable[[], object]]:
    """One energy+forces call on periodic water after a small move (skin 0: the pair search
    runs on every call, as it would after every move in the worst case)."""
    atoms = water_box(n_mol)
    atoms.calc = impl.calculator(skin=0.0)
    base = atoms.positions.copy()
    rng = np.random.default_rng(0)

    def call():
        atoms.positions = base + rng.normal(scale=0.005, size=base.shape)
        return atoms.get_forces()

    return atoms, call


def section_scaling(impls, table, args, device):
    """6. Time and peak memory of one call on periodic water; both should grow linearly."""
    mf = impls[0]
    sizes, times, memory = [], [], []
    for n_mol in args.water_sizes:
        atoms, call = water_call(mf, n_mol)
        # 3 warm-up calls: TorchScript's profiling executor specialises during the first ones
        t = median_time(call, 5 if len(atoms) > 3000 else args.repeats // 2 + 1, 3, device)
        mib = measure_memory(mf, f"6:{n_mol}", args, device)
        sizes.append(len(atoms))
        times.append(t)
        memory.append(mib)
        print(f"  6 scaling   {len(atoms):6d} atoms  {1e3 * t:.4g} ms  {mib} MiB", file=sys.stderr, flush=True)
        table.add(
            "6 scaling", f"periodic water, {len(atoms)} atoms", "ms/call (lower better)", {"mfcalc": 1e3 * t}, False
        )
        if mib is not None:
            table.add(
                "6 scaling",
                f"peak memory per atom, {len(atoms)} atoms",
                "KiB/atom (lower better)",
                {"mfcalc": 1024 * mib / len(atoms)},
                False,
            )
    if len(sizes) >= 2:
        slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
        print(f"  fitted exponent: time ~ N^{slope:.2f} ({sizes[0]}..{sizes[-1]} atoms)", file=sys.stderr)
        table.add("6 scaling", "fitted exponent a, time ~ N^a", "(1 = linear)", {"mfcalc": float(slope)}, False)
        # from 1,000 atoms on (the range): small boxes are dominated by the cost of one call
        for what, values in (("a, time", times), ("b, memory", memory)):
            large = [(n, v) for n, v in zip(sizes, values) if v is not None and n >= 1000]
            if len(large) >= 2:
                fit = np.polyfit(np.log([n for n, _ in large]), np.log([v for _, v in large]), 1)[0]
                table.add(
                    "6 scaling",
                    f"fitted exponent {what} ~ N^{what[0]} ({large[0][0]}..{large[-1][0]} atoms)",
                    "(1 = linear)",
                    {"mfcalc": float(fit)},
                    False,
                )


def section_shipped(impls, table, args, device):
    """7. What users run: the shipped default model (4 members) through ``MFCalculator()``,
    against ANI-1ccx (8 members, TorchANI's ASE calculator) and ASE's EMT as the floor of ASE's
    own overhead; one energy+forces call per small move, ethanol / heptane / C33H68."""
    from ase.calculators.emt import EMT

    from mfcalc import MFCalculator

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ani_peer import load_ani1ccx

    mols = {9: molecule("CH3CH2OH"), 23: from_smiles("CCCCCCC"), 101: from_smiles("C" * 33)}
    makers: Dict[str, Callable[[], object]] = {
        "ASE EMT": EMT,
        "mfcalc shipped (4 members)": lambda: MFCalculator(device=str(device)),
    }
    if args.compile:
        makers["mfcalc shipped, compiled"] = lambda: MFCalculator(device=str(device), compile=True)
    if args.before:  # a model file saved by an older mfcalc, run with the code it carries
        makers["mfcalc shipped, --before file"] = lambda: MFCalculator(
            torch.jit.load(args.before, map_location=device), fidelity="cc", device=str(device)
        )
    also = []  # other model files (e.g. a fine-tuned, branched one), run with this code
    for spec in args.also:
        path, _, fidelity = spec.partition(":")
        name = f"{os.path.relpath(path)} ({fidelity or 'its default head'})"
        makers[name] = functools.partial(MFCalculator, path, fidelity=fidelity or None, device=str(device))
        also.append(name)
    ani = load_ani1ccx() if "torchani" in args.peers else None
    if ani is not None:
        makers["ANI-1ccx (8 members)"] = lambda: ani.to(device).ase()
    times: Dict[str, Dict[int, float]] = {name: {} for name in makers}
    for n, atoms in mols.items():
        for name, make in makers.items():
            a = atoms.copy()
            a.calc = make()
            rng = np.random.default_rng(0)
            base = a.positions.copy()

            def call():
                a.positions = base + rng.normal(scale=0.005, size=base.shape)
                return a.get_forces()

            times[name][n] = 1e3 * median_time(call, args.repeats, 5, device)
            print(f"  7 shipped   {name:<28} {n:4d} atoms  {times[name][n]:.3g} ms", file=sys.stderr, flush=True)
    lines = [
        "| ms per energy+forces call (lower is better) | " + " | ".join(f"{n} atoms" for n in mols) + " |",
        "|---|" + "---|" * len(mols),
    ]
    for name, row in times.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[n]:.3g}" for n in mols) + " |")
    ship = times["mfcalc shipped (4 members)"]

    def ratio_row(label: str, top: Dict[int, float], bottom: Dict[int, float]) -> str:
        return f"| {label} | " + " | ".join(f"{top[n] / bottom[n]:.2f}x" for n in mols) + " |"

    if ani is not None:
        lines.append(ratio_row("ANI-1ccx / mfcalc shipped (> 1: mfcalc faster)", times["ANI-1ccx (8 members)"], ship))
    if args.before:
        lines.append(
            ratio_row("--before file / shipped (> 1: faster now)", times["mfcalc shipped, --before file"], ship)
        )
    for name in also:
        lines.append(ratio_row(f"{name} / shipped (> 1: slower than shipped)", times[name], ship))
    if args.compile:
        comp = times["mfcalc shipped, compiled"]
        lines.append(ratio_row("shipped / shipped compiled (> 1: compiled faster)", ship, comp))
        lines.append(ratio_row("shipped compiled / EMT", comp, times["ASE EMT"]))
    lines.append(ratio_row("mfcalc shipped / EMT", ship, times["ASE EMT"]))
    table.extra.append("\n".join(lines))


SECTIONS = {
    "1": section_latency,
    "2": section_md,
    "3": section_batched,
    "4": section_training,
    "6": section_scaling,
    "7": section_shipped,
}


def main(argv=None) -> int:
    from mfcalc.model.settings import ModelSettings

    defaults = ModelSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--peers",
        nargs="*",
        default=list(PEERS),
        choices=list(PEERS),
        help="peers to compare with when installed (default: all; none: mfcalc alone)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--repeats", type=int, default=30, help="timed calls per latency median")
    p.add_argument("--md-steps", type=int, default=200)
    p.add_argument("--n-batch", type=int, default=1000)
    p.add_argument("--batch-size-infer", type=int, default=100)
    p.add_argument("--batch-size-train", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=10, help="optimisation steps per timed run")
    p.add_argument(
        "--water-sizes",
        type=int,
        nargs="*",
        default=[36, 125, 343, 1000, 3375],
        help="water molecules per box (3 atoms each)",
    )
    p.add_argument("--n-features", type=int, default=defaults.n_features)
    p.add_argument("--n-sensitivities", type=int, default=defaults.n_sensitivities)
    p.add_argument("--n-interactions", type=int, default=defaults.n_interactions)
    p.add_argument("--n-atom-layers", type=int, default=defaults.n_atom_layers)
    p.add_argument("--tensor-order", type=int, default=defaults.tensor_order)
    p.add_argument("--cutoff", type=float, default=defaults.cutoff)
    p.add_argument(
        "--compile",
        action="store_true",
        help="sections 1, 2 and 7: also time MFCalculator(compile=True) (torch.compile; compiled before timing)",
    )
    p.add_argument(
        "--before",
        metavar="MODEL.pt",
        help="section 7: also time a model file saved by an older mfcalc, with the code it was saved with "
        "(e.g. git show REV:models/default.pt > old.pt)",
    )
    p.add_argument(
        "--also",
        metavar="MODEL.pt[:FIDELITY]",
        nargs="*",
        default=[],
        help="section 7: also time these model files with this code through MFCalculator (e.g. a fine-tuned, "
        "branched model), each against the shipped one",
    )
    p.add_argument(
        "--write-geometries",
        action="store_true",
        help=f"embed the benchmark molecules with RDKit into {os.path.relpath(GEOMETRIES)} and exit",
    )
    p.add_argument("--probe-memory", help=argparse.SUPPRESS)  # internal: IMPL:SECTION in a fresh process
    args = p.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]
    if args.write_geometries:
        write_geometries()
        return 0

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for but CUDA is not available")
    dtype = getattr(torch, args.dtype)
    size = dict(
        n_features=args.n_features,
        n_sensitivities=args.n_sensitivities,
        n_interactions=args.n_interactions,
        n_atom_layers=args.n_atom_layers,
        tensor_order=args.tensor_order,
        cutoff=args.cutoff,
        soft_min=defaults.soft_min,
        soft_max=args.cutoff - 1.0,
        cusp_reg=defaults.cusp_reg,
    )
    if args.probe_memory:
        return probe_memory(args.probe_memory, args, device, dtype, size)
    with tempfile.TemporaryDirectory() as workdir:
        impls, missing = build_impls(size, device, dtype, workdir, peers=args.peers, compiled=args.compile)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        print(f"# mfcalc speed benchmark, {time.strftime('%Y-%m-%d')}\n")
        print(
            f"device: {device} ({name}), {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
            f"torch {torch.__version__}, {args.dtype}"
        )
        print("model size: " + ", ".join(f"{k} {v}" for k, v in size.items()))
        print(
            "parameters: " + ", ".join(f"{i.name} {i.n_params()}" + (f" ({i.note})" if i.note else "") for i in impls)
        )
        if missing:
            print("not installed (skipped): " + ", ".join(missing))
        print("command: python tools/bench_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "\n")
        table = Table([i.name for i in impls] + (["ASE EMT", "mfcalc shipped"] if "2" in args.sections else []))
        for key in args.sections:
            print(f"section {key} ...", file=sys.stderr, flush=True)
            SECTIONS[key](impls, table, args, device)
        table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
