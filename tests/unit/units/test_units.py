import pytest

from mfcalc import units


def test_hartree_and_bohr_match_codata():
    assert units.energy_factor("Hartree") == pytest.approx(27.211386, rel=1e-6)
    assert units.length_factor("bohr") == pytest.approx(0.529177, rel=1e-5)


def test_force_units_compose_energy_over_length():
    assert units.forces_factor("hartree/bohr") == pytest.approx(27.211386 / 0.5291772, rel=1e-6)
    assert units.forces_factor("hartree/angstrom") == pytest.approx(27.211386, rel=1e-6)
    assert units.forces_factor("kcal/mol/angstrom") == pytest.approx(0.0433641, rel=1e-5)
    assert units.forces_factor("eV/Angstrom") == 1.0


@pytest.mark.parametrize("bad", ["furlong", "hartree/parsec", "hartree"])
def test_unknown_units_are_rejected_by_name(bad):
    with pytest.raises(ValueError, match="unit"):
        if "/" in bad or bad == "hartree":
            units.forces_factor(bad)
        else:
            units.energy_factor(bad)
