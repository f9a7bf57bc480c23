"""MFCalculator against ASE's own numerics, in MD, optimisation, vibrations and periodic cells."""

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch
from ase.vibrations import Vibrations

from conftest import ethanol, random_rotation
from mfcalc import MFCalculator, export, keys
from mfcalc.model import MultiFidelityHipnn
from mfcalc.model.ensemble import Ensemble

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def ethanol_atoms() -> Atoms:
    z, pos = ethanol()
    return Atoms(numbers=z.numpy(), positions=pos.numpy())


@pytest.fixture(scope="module")
def calc64(trained_model):
    return MFCalculator(str(trained_model), fidelity="cc", dtype="float64", device="cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_snippet_from_the_issue(trained_model, device):
    calc = MFCalculator(str(trained_model), fidelity="cc", device=device)
    assert calc.fidelities == ("xtb", "dft", "cc")
    atoms = ethanol_atoms()
    atoms.calc = calc
    e_cc = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert f.shape == (9, 3) and np.isfinite(f).all()
    calc.fidelity = "dft"  # switching head invalidates the cache
    assert atoms.get_potential_energy() != e_cc
    assert MFCalculator(str(trained_model), device=device).fidelity == "cc"  # the model's default


def test_forces_equal_ase_numerical_forces(calc64):
    atoms = ethanol_atoms()
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc64
    num = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), num, atol=1e-4)


def test_fidelity_switch_matches_the_eager_heads(trained_model):
    model, meta = export.load(str(trained_model))
    ckpt = torch.load(trained_model.parent / "checkpoint.pt", weights_only=False)
    eager = MultiFidelityHipnn(**meta["hparams"])
    eager.load_state_dict(ckpt["finished"][0])
    eager = eager.double()
    z, pos = ethanol()
    heads = eager(z, pos, torch.zeros(len(z), dtype=torch.long), 1)["energy"][0]
    calc = MFCalculator(str(trained_model), fidelity="xtb", dtype="float64", device="cpu")
    atoms = ethanol_atoms()
    atoms.calc = calc
    for k, name in enumerate(calc.fidelities):
        calc.fidelity = name
        assert atoms.get_potential_energy() == pytest.approx(float(heads[k]), abs=1e-9)
    with pytest.raises(ValueError, match="unknown fidelity 'ccsdt'; this model has: xtb, dft, cc"):
        calc.fidelity = "ccsdt"
    with pytest.raises(ValueError, match="xtb, dft, cc"):
        MFCalculator(str(trained_model), fidelity="mp2")


def test_results_are_cached_until_the_structure_changes(calc64, monkeypatch):
    atoms = ethanol_atoms()
    atoms.calc = calc64
    calls = []
    real = calc64.calculate
    monkeypatch.setattr(calc64, "calculate", lambda *a, **k: (calls.append(1), real(*a, **k)))
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()
    assert len(calls) == 2


def test_nve_conserves_energy(calc64):
    atoms = ethanol_atoms()
    atoms.calc = calc64
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))  # noqa
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    totals = []
    dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dyn.run(2000)
    totals = np.array(totals)
    tenth = len(totals) // 10
    # drift = systematic change of the total energy (mean of the last tenth minus the first);
    # the bounded velocity-Verlet oscillation is checked separately and more loosely
    drift = abs(totals[-tenth:].mean() - totals[:tenth].mean()) / len(atoms)
    assert drift < 1e-4, f"total energy drift {drift:.2e} eV/atom"
    assert (totals.max() - totals.min()) / len(atoms) < 1e-3
    assert atoms.get_kinetic_energy() > 0


def test_bfgs_converges(calc64):
    atoms = ethanol_atoms()
    atoms.calc = calc64
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01


def test_line_search_bfgs_energy_decreases_monotonically(calc64):
    """BFGS with a line search enforces descent using both energies and forces, so it only
    succeeds if the forces are the true gradient of the energies.  (Plain BFGS may take an
    uphill step when its quadratic model overshoots, whatever the calculator.)"""
    atoms = ethanol_atoms()
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc64
    energies = []
    opt = BFGSLineSearch(atoms, logfile=None)
    opt.attach(lambda: energies.append(atoms.get_potential_energy()))
    assert opt.run(fmax=0.01, steps=500)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert len(energies) > 5
    assert all(b <= a + 1e-10 for a, b in zip(energies, energies[1:])), np.diff(energies).max()


@pytest.mark.parametrize("optimizer", [FIRE, LBFGS])
def test_other_optimizers_and_constraints(calc64, optimizer):
    atoms = ethanol_atoms()
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    fixed = atoms.positions[:2].copy()
    atoms.calc = calc64
    assert optimizer(atoms, logfile=None).run(fmax=0.02, steps=1000)
    np.testing.assert_array_equal(atoms.positions[:2], fixed)


def test_langevin_and_vibrations_run(tmp_path):
    """On the shipped default model: the 25-second fixture model's methyl torsion is nearly
    free (15 cm^-1, with a slightly negative projected curvature at BFGS's stopping point),
    which would make "is this a minimum" a question about that toy model, not the calculator."""
    atoms = ethanol_atoms()
    atoms.calc = MFCalculator(fidelity="cc", dtype="float64", device="cpu")
    BFGS(atoms, logfile=None).run(fmax=0.005, steps=500)
    vib = Vibrations(atoms, name=str(tmp_path / "vib"))
    vib.run()
    freqs = vib.get_frequencies()  # cm^-1, ascending in magnitude
    assert np.abs(freqs[:6]).max() < 60  # translations and rotations: near zero
    # a minimum: with rigid motions projected out of the Hessian, all 3N - 6 = 21 curvatures
    # are positive (exact, where a frequency threshold cannot tell a soft torsion from a rotation)
    from mfcalc.conformers import internal_curvatures

    internal = internal_curvatures(vib.get_vibrations().get_hessian_2d(), atoms.positions)[0]
    assert len(internal) == 21 and (internal > 0).all(), internal
    assert (freqs[6:].imag == 0).all() and (freqs[6:].real > 20).all(), freqs  # 21 real modes
    assert freqs[-1].real > 2500  # O-H and C-H stretches
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(1))
    dyn.run(50)
    assert np.isfinite(atoms.positions).all()


def water_box(n_side_shift=0.0):
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    rng = np.random.default_rng(0)
    pos = np.concatenate([base @ random_rotation(k).numpy().T + rng.random(3) * 4.0 for k in range(4)])
    return Atoms("OH2" * 4, positions=pos, cell=np.eye(3) * 4.0, pbc=True)


def test_periodic_small_cell_equals_supercell(calc64):
    atoms = water_box()  # 4.0 A cell, cutoff 4.5 A: smaller than twice the cutoff
    atoms.calc = calc64
    e = atoms.get_potential_energy()
    big = atoms.repeat((2, 2, 2))
    big.calc = calc64
    assert big.get_potential_energy() / 8 == pytest.approx(e, abs=1e-8)
    np.testing.assert_allclose(big.get_forces()[:12], atoms.get_forces(), atol=1e-8)


def test_stress_equals_the_finite_difference_strain_derivative(calc64):
    atoms = water_box()
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.1], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]), scale_atoms=True)
    atoms.calc = calc64
    np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-6), atol=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4), atol=1e-4)


def test_stress_is_refused_without_a_periodic_cell(calc64):
    from ase.calculators.calculator import PropertyNotImplementedError

    atoms = ethanol_atoms()
    atoms.calc = calc64
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def tiny_ensemble_file(tmp_path) -> str:
    """A 3-member ensemble of tiny random models, saved as a model file."""
    torch.manual_seed(0)
    members = [
        MultiFidelityHipnn([1, 6, 8], ["dft", "cc"], n_features=6, n_sensitivities=4, n_atom_layers=1) for _ in range(3)
    ]
    ens = Ensemble(members)
    path = tmp_path / "ens.pt"
    export.save(ens, str(path), export.build_metadata(ens))
    return str(path)


def test_ensemble_reports_the_member_spread(tmp_path):
    calc = MFCalculator(tiny_ensemble_file(tmp_path), fidelity="cc", dtype="float64", device="cpu", spread_warning=1e-9)
    atoms = ethanol_atoms()
    atoms.calc = calc
    with pytest.warns(UserWarning, match="outside the model's training domain"):
        atoms.get_potential_energy()
    assert calc.results["energy_std"] > 0
    assert calc.results["forces_std"].shape == (9, 3) and (calc.results["forces_std"] > 0).any()
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4), atol=1e-4)


@pytest.mark.parametrize("spread_head", ["dft", "cc"])
def test_the_domain_warning_follows_the_head_the_file_names(tmp_path, spread_head):
    path = tiny_ensemble_file(tmp_path)
    atoms = ethanol_atoms()
    spreads = {}
    for head in ("dft", "cc"):
        atoms.calc = MFCalculator(path, fidelity=head, dtype="float64", device="cpu")
        spreads[head] = atoms.calc.get_property("energy_std", atoms)
    assert abs(spreads["dft"] - spreads["cc"]) > 1e-3  # the heads' spreads differ: the test can tell them apart
    threshold = 0.5 * (spreads["dft"] + spreads["cc"])
    export.update_metadata(path, **{keys.META_SPREAD_WARNING: threshold, keys.META_SPREAD_FIDELITY: spread_head})
    calc = MFCalculator(path, fidelity="cc", dtype="float64", device="cpu")  # the spread of spread_head counts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calc.get_property("energy", ethanol_atoms())
    assert calc.results["domain_std"] == pytest.approx(spreads[spread_head], abs=1e-12)
    assert calc.results["energy_std"] == pytest.approx(spreads["cc"], abs=1e-12)
    warned = [str(w.message) for w in caught if "outside the model's training domain" in str(w.message)]
    assert bool(warned) == (spreads[spread_head] > threshold)
    if warned:
        assert f"(head '{spread_head}')" in warned[0]


# ---- bad input ---------------------------------------------------------------------------------
def test_unknown_element_is_named_with_the_model_species(calc64):
    atoms = Atoms("CCl", positions=[[0, 0, 0], [1.7, 0, 0]])
    atoms.calc = calc64
    with pytest.raises(ValueError, match="element.* Cl not known to this model; it knows H, C, N, O"):
        atoms.get_potential_energy()


def test_a_charged_or_open_shell_structure_is_warned_about(calc64):
    """The network has no charge or spin input: the state comes from atoms.info, the initial
    charges and magnetic moments, or else the electron count."""
    methyl = Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.94, 0], [-0.54, -0.94, 0]])
    methane = Atoms(
        "CH4",
        positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]],
    )
    cation = methane.copy()
    cation.info["charge"] = 1
    charged_atoms = methane.copy()
    charged_atoms.set_initial_charges([1, 0, 0, 0, 0])
    triplet = methane.copy()
    triplet.set_initial_magnetic_moments([2, 0, 0, 0, 0])
    cases = [
        (methyl, "9 electrons, spin multiplicity 2"),
        (cation, "a charge of +1"),
        (charged_atoms, "a charge of +1"),
    ]
    cases += [(triplet, "10 electrons, spin multiplicity 3: an open-shell species,")]
    for atoms, needle in cases:
        atoms.calc = calc64
        calc64.reset()  # ASE's change check does not look at atoms.info
        with pytest.warns(UserWarning, match="outside the model's domain") as caught:
            atoms.get_potential_energy()
        assert any(needle in str(w.message) for w in caught), (needle, [str(w.message) for w in caught])
        methane.calc = calc64  # neutral closed-shell: no warning (and the next case is a change of state)
        calc64.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            methane.get_potential_energy()


def test_atoms_on_top_of_each_other_and_no_atoms_are_clear_errors(calc64):
    """Coincident atoms have no bond direction: the model's angular terms give NaN, which must
    not come back as an energy; the error names the two atoms, across a periodic image too."""
    atoms = ethanol_atoms()
    o, h = int(np.nonzero(atoms.numbers == 8)[0][0]), len(atoms) - 1
    assert o < h and atoms.numbers[h] == 1
    atoms.positions[h] = atoms.positions[o]  # an H onto the O
    atoms.calc = calc64
    with pytest.raises(
        ValueError, match=rf"non-finite energy or forces: atoms {o} \(O\) and {h} \(H\) are 0.000 A apart"
    ):
        atoms.get_potential_energy()
    periodic = ethanol_atoms()
    periodic.set_cell([8.0, 8.0, 8.0])
    periodic.pbc = True
    periodic.positions[h] = periodic.positions[o] + [8.0, 0.0, 0.0]  # on the O's image
    periodic.calc = calc64
    with pytest.raises(ValueError, match=rf"atoms {o} \(O\) and {h} \(H\) are 0.000 A apart"):
        periodic.get_potential_energy()
    empty = Atoms()
    empty.calc = calc64
    with pytest.raises(ValueError, match="the structure has no atoms"):
        empty.get_potential_energy()


def test_nan_positions_are_a_clear_error(calc64):
    atoms = ethanol_atoms()
    atoms.positions[2, 1] = np.nan
    atoms.calc = calc64
    with pytest.raises(ValueError, match="NaN or infinite"):
        atoms.get_forces()


def test_non_model_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript model file"):
        MFCalculator(str(junk))
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ValueError, match="not an mfcalc model"):
        MFCalculator(str(plain))
    with pytest.raises(FileNotFoundError):
        MFCalculator(str(tmp_path / "missing.pt"))


def test_calculator_import_path_has_no_training_code():
    import subprocess
    import sys

    code = (
        "import sys, mfcalc.calculator; bad = [m for m in sys.modules if m.startswith('mfcalc.train')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frozen_model_gives_the_same_energy_forces_and_stress_as_unfrozen(trained_model):
    """Freezing (the default) only changes speed: same numbers, on molecules and periodic cells."""
    frozen = MFCalculator(str(trained_model), fidelity="cc", dtype="float64")
    plain = MFCalculator(str(trained_model), fidelity="cc", dtype="float64", freeze=False)
    assert not list(frozen.model.parameters()) and list(plain.model.parameters())  # weights are constants
    water = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]], cell=[4.5] * 3, pbc=True)
    for atoms in (ethanol_atoms(), water):
        results = []
        for calc in (frozen, plain):
            a = atoms.copy()
            a.calc = calc
            results.append((a.get_potential_energy(), a.get_forces(), a.get_stress() if a.pbc.all() else np.zeros(6)))
        assert results[0][0] == pytest.approx(results[1][0], abs=1e-10)
        np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-10)
        np.testing.assert_allclose(results[0][2], results[1][2], atol=1e-10)
    for fid in ("xtb", "dft"):  # switching heads still works on the frozen model
        frozen.fidelity = plain.fidelity = fid
        a, b = ethanol_atoms(), ethanol_atoms()
        a.calc, b.calc = frozen, plain
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)


def test_large_cpu_systems_keep_freed_memory_and_small_ones_leave_the_process_alone(trained_model, monkeypatch):
    import mfcalc.potential

    calls = []
    monkeypatch.setattr(mfcalc.potential, "keep_freed_memory", lambda: calls.append(1) or True)
    calc = MFCalculator(str(trained_model), fidelity="cc", device="cpu")
    small = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    small.calc = calc
    small.get_potential_energy()
    assert calls == []
    side = 8  # 512 waters (1,536 atoms) on a 3.1 A lattice
    grid = 3.1 * np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = np.concatenate([grid, grid + [0.96, 0, 0], grid + [-0.24, 0.93, 0]])
    big = Atoms(["O"] * len(grid) + ["H"] * 2 * len(grid), positions=pos, cell=[3.1 * side] * 3, pbc=True)
    big.calc = MFCalculator(str(trained_model), fidelity="cc", device="cpu")
    big.get_potential_energy()
    assert calls == [1]


def test_compiled_model_gives_the_same_numbers_as_torchscript(tmp_path, capsys):
    """compile=True (torch.compile) only changes speed: same energy, forces, member spreads and
    stress as the TorchScript model, on a molecule, another molecule (dynamic shapes) and a
    periodic cell, and after a head switch."""
    path = tiny_ensemble_file(tmp_path)
    compiled = MFCalculator(path, fidelity="cc", dtype="float64", device="cpu", compile=True)
    scripted = MFCalculator(path, fidelity="cc", dtype="float64", device="cpu")
    water = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]], cell=[4.5] * 3, pbc=True)
    methanol = Atoms(
        "COH4",
        positions=[[0, 0, 0], [1.42, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.5, 0.9], [-0.36, -0.5, -0.9], [1.7, 0.9, 0]],
    )
    for atoms in (ethanol_atoms(), methanol, water):
        results = []
        for calc in (compiled, scripted):
            a = atoms.copy()
            a.calc = calc
            stress = a.get_stress() if a.pbc.all() else np.zeros(6)
            results.append((a.get_potential_energy(), a.get_forces(), calc.results["forces_std"], stress))
        assert results[0][0] == pytest.approx(results[1][0], abs=1e-10)
        for got, want in zip(results[0][1:], results[1][1:]):
            np.testing.assert_allclose(got, want, atol=1e-10)
    compiled.fidelity = scripted.fidelity = "dft"
    a, b = ethanol_atoms(), ethanol_atoms()
    a.calc, b.calc = compiled, scripted
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)
    assert "compiling the model" in capsys.readouterr().err  # the one-off wait is announced


def test_compile_without_a_compiler_is_a_clear_error(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        MFCalculator(tiny_ensemble_file(tmp_path), fidelity="cc", device="cpu", compile=True)


def test_inputs_prepared_once_per_pair_list_give_the_same_numbers(trained_model):
    """A model written by this mfcalc gets the species check and pair layout once per pair
    list; the same steps with them redone every call (as for older files) agree exactly,
    through a pair-list rebuild and a change of molecule."""
    fast = MFCalculator(str(trained_model), fidelity="cc", dtype="float64")
    slow = MFCalculator(str(trained_model), fidelity="cc", dtype="float64")
    assert fast.potential._prepares
    slow.potential._prepares = False
    rng = np.random.default_rng(0)
    water = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
    for atoms, scale in [(ethanol_atoms(), 0.01), (ethanol_atoms(), 0.4), (water, 0.02)]:  # 0.4: past the skin
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = fast, slow
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
