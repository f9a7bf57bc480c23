"""Imports flow one way: a module imports only from layers before its own (or its own package)."""

import ast
from pathlib import Path

import pytest

from conftest import REPO

# data -> neighbours -> model -> export -> training / calculator -> applications -> commands
LAYERS = [
    ["units", "keys", "files", "device", "progress", "elements", "chem", "models", "workers"],
    ["data"],
    ["neighbors"],
    ["model"],
    ["metrics", "config", "plot"],
    ["export"],
    ["potential"],  # one structure in, energy and forces out: what every engine adapter runs
    ["train", "evaluate", "calculator", "openmm"],
    ["conformers", "label", "select"],
    ["sample"],  # moves atoms with the conformer optimiser
    ["cli"],
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def modules():
    for path in sorted((REPO / "mfcalc").rglob("*.py")):
        parts = path.relative_to(REPO / "mfcalc").with_suffix("").parts
        if parts[0] in ("__init__", "__main__"):
            continue
        # ``python -m mfcalc.train`` is a command: its __main__ belongs to the command layer
        yield path, "cli" if parts[-1] == "__main__" else parts[0]


def imported_units(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mfcalc"):
            names = node.module.split(".")[1:] or [a.name for a in node.names]
            yield from ([names[0]] if len(node.module.split(".")) > 1 else names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mfcalc."):
                    yield alias.name.split(".")[1]


@pytest.mark.parametrize("path, unit", list(modules()), ids=lambda x: str(x).split("mfcalc/")[-1])
def test_module_imports_only_earlier_layers(path, unit):
    assert unit in LAYER, f"{unit} is in no layer of this test: place it"
    for used in imported_units(path):
        if used in ("__version__",) or used == unit:
            continue
        assert used in LAYER, f"{path.name} imports mfcalc.{used}, which is in no layer"
        assert LAYER[used] < LAYER[unit], (
            f"mfcalc.{unit} ({path.name}) reaches to mfcalc.{used}, a layer at or after it"
        )


def test_every_package_is_listed_for_installation():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parent.parts) for p in (REPO / "mfcalc").rglob("__init__.py")}
    assert found | {"mfcalc.models"} == listed
