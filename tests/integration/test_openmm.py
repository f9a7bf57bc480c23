"""OpenMM systems on an mfcalc head: the same numbers as MFCalculator, NVE energy conservation,
ML/MM with the ML region's classical terms gone, and clear errors."""

import numpy as np
import pytest
from ase import Atoms

openmm = pytest.importorskip("openmm")
from openmm import app  # noqa: E402
from openmm import unit as u  # noqa: E402

from conftest import ethanol  # noqa: E402
from mfcalc import MFCalculator  # noqa: E402
from mfcalc.openmm import EV_TO_KJ_MOL, MFPotential  # noqa: E402

KJ_NM_PER_EV_A = EV_TO_KJ_MOL * 10.0

# A GAFF-like classical model of ethanol (neutral charges), for the ML/MM tests only.
ETHANOL_XML = """<ForceField>
 <AtomTypes>
  <Type name="eth-c3" class="c3" element="C" mass="12.011"/>
  <Type name="eth-c2" class="c2" element="C" mass="12.011"/>
  <Type name="eth-oh" class="oh" element="O" mass="15.999"/>
  <Type name="eth-hc" class="hc" element="H" mass="1.008"/>
  <Type name="eth-h1" class="h1" element="H" mass="1.008"/>
  <Type name="eth-ho" class="ho" element="H" mass="1.008"/>
 </AtomTypes>
 <Residues>
  <Residue name="ETH">
   <Atom name="C1" type="eth-c3" charge="-0.0971"/>
   <Atom name="C2" type="eth-c2" charge="0.1320"/>
   <Atom name="O" type="eth-oh" charge="-0.6120"/>
   <Atom name="H11" type="eth-hc" charge="0.0350"/>
   <Atom name="H12" type="eth-hc" charge="0.0350"/>
   <Atom name="H13" type="eth-hc" charge="0.0350"/>
   <Atom name="H21" type="eth-h1" charge="0.0400"/>
   <Atom name="H22" type="eth-h1" charge="0.0400"/>
   <Atom name="HO" type="eth-ho" charge="0.3921"/>
   <Bond atomName1="C1" atomName2="C2"/>
   <Bond atomName1="C2" atomName2="O"/>
   <Bond atomName1="O" atomName2="HO"/>
   <Bond atomName1="C1" atomName2="H11"/>
   <Bond atomName1="C1" atomName2="H12"/>
   <Bond atomName1="C1" atomName2="H13"/>
   <Bond atomName1="C2" atomName2="H21"/>
   <Bond atomName1="C2" atomName2="H22"/>
  </Residue>
 </Residues>
 <HarmonicBondForce>
  <Bond class1="c3" class2="c2" length="0.1535" k="253634"/>
  <Bond class1="c2" class2="oh" length="0.1426" k="262003"/>
  <Bond class1="oh" class2="ho" length="0.0974" k="309281"/>
  <Bond class1="c3" class2="hc" length="0.1092" k="282001"/>
  <Bond class1="c2" class2="h1" length="0.1093" k="281080"/>
 </HarmonicBondForce>
 <HarmonicAngleForce>
  <Angle class1="hc" class2="c3" class3="hc" angle="1.8891" k="329.7"/>
  <Angle class1="hc" class2="c3" class3="c2" angle="1.9216" k="387.4"/>
  <Angle class1="c3" class2="c2" class3="h1" angle="1.9216" k="387.4"/>
  <Angle class1="h1" class2="c2" class3="h1" angle="1.8891" k="329.7"/>
  <Angle class1="c3" class2="c2" class3="oh" angle="1.9111" k="565.7"/>
  <Angle class1="h1" class2="c2" class3="oh" angle="1.9111" k="425.1"/>
  <Angle class1="c2" class2="oh" class3="ho" angle="1.8938" k="395.8"/>
 </HarmonicAngleForce>
 <PeriodicTorsionForce>
  <Proper class1="" class2="c3" class3="c2" class4="" periodicity1="3" phase1="0" k1="0.6508"/>
  <Proper class1="" class2="c2" class3="oh" class4="" periodicity1="3" phase1="0" k1="0.6974"/>
 </PeriodicTorsionForce>
 <NonbondedForce coulomb14scale="0.833333" lj14scale="0.5">
  <UseAttributeFromResidue name="charge"/>
  <Atom type="eth-c3" sigma="0.3400" epsilon="0.4577"/>
  <Atom type="eth-c2" sigma="0.3400" epsilon="0.4577"/>
  <Atom type="eth-oh" sigma="0.3066" epsilon="0.8803"/>
  <Atom type="eth-hc" sigma="0.2650" epsilon="0.0657"/>
  <Atom type="eth-h1" sigma="0.2471" epsilon="0.0657"/>
  <Atom type="eth-ho" sigma="0.1000" epsilon="0.0"/>
 </NonbondedForce>
</ForceField>
"""


def ethanol_molecule():
    """Ethanol as (Topology with bonds, positions in nm), atoms in the template's order."""
    z, x = ethanol()
    z, x = z.numpy(), x.numpy()
    heavy = [i for i in range(len(z)) if z[i] != 1]
    cc = [i for i in heavy if z[i] == 6]
    o = next(i for i in heavy if z[i] == 8)
    c2 = min(cc, key=lambda i: np.linalg.norm(x[i] - x[o]))
    c1 = next(i for i in cc if i != c2)
    hs = [i for i in range(len(z)) if z[i] == 1]
    owner = {h: min((c1, c2, o), key=lambda a: np.linalg.norm(x[h] - x[a])) for h in hs}
    order = [c1, c2, o] + [h for h in hs if owner[h] == c1] + [h for h in hs if owner[h] == c2]
    order += [h for h in hs if owner[h] == o]
    names = ["C1", "C2", "O", "H11", "H12", "H13", "H21", "H22", "HO"]
    top = app.Topology()
    res = top.addResidue("ETH", top.addChain())
    atoms = [top.addAtom(n, app.Element.getByAtomicNumber(int(z[i])), res) for n, i in zip(names, order)]
    for a, b in [(0, 1), (1, 2), (2, 8), (0, 3), (0, 4), (0, 5), (1, 6), (1, 7)]:
        top.addBond(atoms[a], atoms[b])
    return top, x[order] / 10.0


def forcefield():
    from io import StringIO

    return app.ForceField(StringIO(ETHANOL_XML), "tip3p.xml")


def energy_forces(system, positions, groups=-1, box=None):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-4), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(positions)
    st = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    return (
        st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
        st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer),
    )


def ase_reference(model, numbers, positions_nm, cell_nm=None):
    atoms = Atoms(numbers=numbers, positions=positions_nm * 10.0)
    if cell_nm is not None:
        atoms.cell, atoms.pbc = cell_nm * 10.0, True
    atoms.calc = MFCalculator(str(model), fidelity="cc", dtype="float64", device="cpu")
    return atoms.get_potential_energy() * EV_TO_KJ_MOL, atoms.get_forces() * KJ_NM_PER_EV_A


def assert_same_numbers(e, f, e_ref, f_ref):
    """OpenMM's energy and forces against the ASE calculator's, to 1e-5 relative."""
    assert e == pytest.approx(e_ref, rel=1e-5)
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5 * np.abs(f_ref).max())


def test_create_system_equals_the_ase_calculator(trained_model):
    top, x = ethanol_molecule()
    system = MFPotential(str(trained_model), "cc", device="cpu", dtype="float64").createSystem(top)
    e, f = energy_forces(system, x)
    e_ref, f_ref = ase_reference(trained_model, [a.element.atomic_number for a in top.atoms()], x)
    assert_same_numbers(e, f, e_ref, f_ref)


def test_periodic_water_box_equals_the_ase_calculator(trained_model):
    from ase.build import molecule

    rng = np.random.default_rng(0)
    waters = [molecule("H2O") for _ in range(8)]
    cell = 6.2
    top = app.Topology()
    chain = top.addChain()
    numbers, pos = [], []
    for k, w in enumerate(waters):
        w.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COM")
        shift = (np.array([k % 2, (k // 2) % 2, k // 4]) + 0.25) * cell / 2
        res = top.addResidue("HOH", chain)
        for zi, xi in zip(w.numbers, w.positions + shift):
            top.addAtom("X", app.Element.getByAtomicNumber(int(zi)), res)
            numbers.append(int(zi))
            pos.append(xi)
    box = np.eye(3) * cell / 10.0
    top.setPeriodicBoxVectors(box * u.nanometer)
    system = MFPotential(str(trained_model), "cc", device="cpu", dtype="float64").createSystem(top)
    x = np.array(pos) / 10.0 + np.array([0.35, 0, 0])  # some atoms beyond the box: wrapped images
    e, f = energy_forces(system, x)
    e_ref, f_ref = ase_reference(trained_model, numbers, x, box)
    assert_same_numbers(e, f, e_ref, f_ref)


def test_nve_in_openmm_conserves_energy(trained_model):
    top, x = ethanol_molecule()
    system = MFPotential(str(trained_model), "cc", device="cpu", dtype="float64").createSystem(top)
    integrator = openmm.VerletIntegrator(0.25 * u.femtosecond)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 0)
    totals = []
    for _ in range(400):  # 4000 steps: 1 ps
        integrator.step(10)
        st = ctx.getState(getEnergy=True)
        totals.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole))
    totals = np.array(totals) / EV_TO_KJ_MOL  # eV
    tenth = len(totals) // 10
    drift = abs(totals[-tenth:].mean() - totals[:tenth].mean()) / top.getNumAtoms()
    assert drift < 1e-4, f"total energy drift {drift:.2e} eV/atom"  # the ASE test's bounds
    assert (totals.max() - totals.min()) / top.getNumAtoms() < 1e-3
    assert ctx.getState(getEnergy=True).getKineticEnergy().value_in_unit(u.kilojoule_per_mole) > 0


def test_mixed_system_replaces_exactly_the_classical_terms_inside_the_ml_region(trained_model):
    """Ethanol among waters without cutoffs, where energies decompose exactly: the mixed
    system's classical part is the full classical energy minus ethanol's own, and the ML
    part is the model's energy of ethanol."""
    top, x = ethanol_molecule()
    ff = forcefield()
    modeller = app.Modeller(top, x * u.nanometer)
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(1.4, 1.4, 1.4) * u.nanometer)
    solv_top, solv_x = modeller.getTopology(), modeller.getPositions()
    full = ff.createSystem(solv_top, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    alone = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None)
    potential = MFPotential(str(trained_model), "cc", device="cpu", dtype="float64")
    mixed = potential.createMixedSystem(solv_top, full, range(9), forceGroup=1)
    assert solv_top.getNumAtoms() > 60
    e_full, _ = energy_forces(full, solv_x)
    e_alone, _ = energy_forces(alone, x)
    e_classical, _ = energy_forces(mixed, solv_x, groups={0})
    e_ml, f_ml = energy_forces(mixed, solv_x, groups={1})
    assert e_classical == pytest.approx(e_full - e_alone, rel=1e-9, abs=1e-6)
    e_ref, f_ref = ase_reference(trained_model, [a.element.atomic_number for a in top.atoms()], x)
    assert_same_numbers(e_ml, f_ml[:9], e_ref, f_ref)
    assert np.all(f_ml[9:] == 0)  # the ML force acts on the ML atoms only
    inside = set(range(9))
    for force in mixed.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            assert not any(
                {force.getBondParameters(k)[0], force.getBondParameters(k)[1]} <= inside
                for k in range(force.getNumBonds())
            )
            assert force.getNumBonds() > 0  # the waters keep theirs


def test_ml_mm_langevin_in_a_periodic_water_box_runs(trained_model):
    top, x = ethanol_molecule()
    ff = forcefield()
    modeller = app.Modeller(top, x * u.nanometer)
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(2.0, 2.0, 2.0) * u.nanometer)
    system = ff.createSystem(
        modeller.getTopology(), nonbondedMethod=app.PME, nonbondedCutoff=0.8 * u.nanometer, constraints=app.HBonds
    )
    n_constraints = system.getNumConstraints()
    mixed = MFPotential(str(trained_model), "cc", device="cpu").createMixedSystem(
        modeller.getTopology(), system, range(9)
    )
    assert mixed.getNumConstraints() == n_constraints - 6  # ethanol's six X-H constraints
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.5 * u.femtosecond)
    sim = app.Simulation(modeller.getTopology(), mixed, integrator, openmm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(modeller.getPositions())
    sim.minimizeEnergy(maxIterations=50)
    sim.step(100)
    st = sim.context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
    xyz = st.getPositions(asNumpy=True).value_in_unit(u.angstrom)[:9]
    assert 1.3 < np.linalg.norm(xyz[0] - xyz[1]) < 1.8  # the ML C-C bond holds together


def test_bad_input_gives_clear_errors(trained_model):
    top, x = ethanol_molecule()
    with pytest.raises(ValueError, match="xtb, dft, cc"):
        MFPotential(str(trained_model), "mp2")
    potential = MFPotential(str(trained_model), "cc", device="cpu")
    system = openmm.System()
    for _ in range(top.getNumAtoms()):
        system.addParticle(1.0)
    with pytest.raises(ValueError, match="ML region is empty"):
        potential.createMixedSystem(top, system, [])
    with pytest.raises(ValueError, match=r"out of range for 9 atoms"):
        potential.createMixedSystem(top, system, [0, 9])
    with pytest.raises(ValueError, match="duplicates"):
        potential.createMixedSystem(top, system, [0, 0])
    chloro = app.Topology()
    res = chloro.addResidue("X", chloro.addChain())
    for el in ("C", "Cl", "H", "H", "H"):
        chloro.addAtom(el, app.Element.getBySymbol(el), res)
    with pytest.raises(ValueError, match="element.*Cl not known to this mfcalc model; it knows H, C, N, O"):
        potential.createSystem(chloro)


def test_compile_reaches_the_openmm_potential(trained_model):
    """compile=True is passed through to the Potential (the compiled numbers themselves are
    tested against TorchScript in test_calculator.py); nothing compiles before the first step."""
    from mfcalc.model.ensemble import Ensemble

    compiled = MFPotential(str(trained_model), fidelity="cc", device="cpu", compile=True)
    plain = MFPotential(str(trained_model), fidelity="cc", device="cpu")
    assert isinstance(compiled.potential.model, Ensemble)
    assert not isinstance(plain.potential.model, Ensemble)  # frozen TorchScript
