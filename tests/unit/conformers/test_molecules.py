"""SMILES lists: '#' is a triple bond inside a SMILES and a comment only as a word of its own."""

from mfcalc.conformers.molecules import read_smiles_list


def test_triple_bonds_survive_and_comments_go(tmp_path):
    path = tmp_path / "list.smi"
    path.write_text(
        "# nitriles and alkynes\n"
        "C#N hydrogen cyanide\n"
        "N#CCC#N   # succinonitrile, a comment after the name\n"
        "   C#C\n"
        "\n"
        "CC#N\t# acetonitrile\n"
        "#C#C commented out\n"
    )
    assert read_smiles_list(str(path)) == ["C#N", "N#CCC#N", "C#C", "CC#N"]
