"""Which elements a model (and each of its heads) knows: the checks every entry point shares."""

import pytest

from mfcalc.elements import check_elements, unlabelled_elements_warning

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
