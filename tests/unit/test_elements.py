"""Which elements and electronic states a model (and each of its heads) knows: the checks every
entry point shares."""

import pytest

from mfcalc.elements import check_elements, electronic_state_problem, unlabelled_elements_warning

DOMAIN = {"elements": [1, 6, 7, 8, 9], "elements_by_fidelity": {"dft": [1, 6, 7, 8, 9], "cc": [1, 6, 8]}}


def test_an_unknown_element_is_an_error_naming_what_the_model_knows():
    with pytest.raises(ValueError, match=r"element\(s\) Cl not known to this model; it knows H, C, N, O"):
        check_elements([6, 17, 1], [1, 6, 7, 8])


def test_a_head_without_labels_for_an_element_says_so():
    text = unlabelled_elements_warning([6, 7, 9, 1], DOMAIN, "cc")
    assert text is not None and "'cc' head" in text and "N, F" in text and "H, C, O" in text
    assert unlabelled_elements_warning([6, 7, 9, 1], DOMAIN, "dft") is None
    assert unlabelled_elements_warning([6, 8, 1], DOMAIN, "cc") is None


def test_model_files_without_per_head_coverage_give_no_warning():
    assert unlabelled_elements_warning([6, 7], {"elements": [1, 6, 7, 8]}, "cc") is None


def test_a_charged_or_open_shell_structure_is_named_as_outside_a_neutral_closed_shell_model():
    nh4 = [7, 1, 1, 1, 1]  # 11 protons
    assert electronic_state_problem([6, 1, 1, 1, 1]) is None  # methane, 10 electrons
    assert electronic_state_problem(nh4, charge=1, multiplicity=1) == (
        "a charge of +1, while the model was trained on structures of charge 0 only: its network has no "
        "charge input, so it would describe these nuclei as if they carried that charge"
    )
    methyl = electronic_state_problem([6, 1, 1, 1])  # 9 electrons: the lowest multiplicity is 2
    assert methyl is not None and methyl.startswith("9 electrons, spin multiplicity 2: an open-shell species")
    assert "multiplicity 1 only" in methyl
    triplet = electronic_state_problem([8, 8], multiplicity=3)  # O2 as it is: a triplet
    assert triplet is not None and "multiplicity 3" in triplet
    assert "impossible with 10 electrons" in str(electronic_state_problem([6, 1, 1, 1, 1], multiplicity=2))


def test_a_file_that_declares_other_states_accepts_them():
    domain = {"charges": [0, 1], "multiplicities": [1, 2]}
    assert electronic_state_problem([7, 1, 1, 1, 1], charge=1, domain=domain) is None
    assert electronic_state_problem([6, 1, 1, 1], domain=domain) is None
    assert "charge of -1" in str(electronic_state_problem([8, 1], charge=-1, domain=domain))
