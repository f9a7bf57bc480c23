"""Shared fixtures: paths to the shipped reference data and small model/molecule factories."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_H5 = REPO / "data" / "mf_reference.h5"
SHARED = REPO.parent / "shared"
EXTERNAL = SHARED / "data" / "external"
# the reference data's three levels, as mfcalc-train and mfcalc-eval bind them
REFERENCE_FIDELITY_ARGS = [
    "--fidelity",
    "xtb=gfn2_xtb.energy,gfn2_xtb.forces",
    "--fidelity",
    "dft=wb97x_dz.energy,wb97x_dz.forces",
    "--fidelity",
    "cc=ccsd(t)_dz.energy",
]


def load_tool(name):
    """A script of tools/ as a module (the tools are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "cuda" in item.keywords or "[cuda" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_h5() -> Path:
    assert REFERENCE_H5.exists(), f"reference data missing: {REFERENCE_H5}"
    return REFERENCE_H5


@pytest.fixture
def external_dir() -> Path:
    if not EXTERNAL.exists():
        pytest.skip("../shared/data/external is not present")
    return EXTERNAL


def _proc_state(stat: Path) -> tuple[str, int] | None:
    """(state, parent pid) of a /proc/<pid>/stat file; None once the process is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return fields[0], int(fields[1])


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (Linux /proc; a zombie, ended but not yet reaped, has ended)."""
    state = _proc_state(Path(f"/proc/{pid}/stat"))
    return state is not None and state[0] != "Z"


def child_processes(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux /proc; zombies count as ended)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        state = _proc_state(stat)
        if state is not None and state[0] != "Z" and state[1] == pid:
            found.append(int(stat.parent.name))
    return found


def ethanol() -> tuple[torch.Tensor, torch.Tensor]:
    """A real ethanol geometry (Angstrom) from the reference data, float64."""
    import h5py

    with h5py.File(REFERENCE_H5, "r") as f:
        g = f["C2H6O1"]
        smiles = g["smiles"][()]
        k = int(np.nonzero(smiles == b"CCO")[0][0])
        pos = torch.tensor(g["coordinates"][k], dtype=torch.float64)
        z = torch.tensor(g["atomic_numbers"][()], dtype=torch.long)
    return z, pos


def random_rotation(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A small dft + cc model trained for a few seconds on the reference data (model.pt path)."""
    from mfcalc.cli.train import main as train_main

    out = tmp_path_factory.mktemp("trained")
    rc = train_main(
        [
            "--data",
            str(REFERENCE_H5),
            *REFERENCE_FIDELITY_ARGS,
            "--out",
            str(out),
            "--epochs",
            "60",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--max-structures",
            "400",
            "--n-features",
            "12",
            "--n-sensitivities",
            "8",
            "--n-atom-layers",
            "1",
            "--cutoff",
            "4.5",
            "--device",
            "cpu",
            "--seed",
            "0",
        ]
    )
    assert rc == 0
    return out / "model.pt"
