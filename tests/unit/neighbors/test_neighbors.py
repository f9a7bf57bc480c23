"""Pair search against a brute-force definition, across backends and in TorchScript."""

import itertools

import numpy as np
import pytest
import torch

from mfcalc.neighbors import cluster_pairs, have_torch_cluster, neighbor_pairs, radius_pairs


def brute_force(pos, mol, cutoff, cell=None, pbc=None, reach=3):
    """Set of (i, j, sx, sy, sz) with |x_j + S cell - x_i| < cutoff, by the definition."""
    pos = np.asarray(pos, dtype=np.float64)
    out = set()
    for i, j in itertools.product(range(len(pos)), repeat=2):
        if mol[i] != mol[j]:
            continue
        b = int(mol[i])
        periodic = pbc is not None and bool(np.asarray(pbc[b]).any())
        ranges = [range(-reach, reach + 1) if periodic and pbc[b][k] else range(1) for k in range(3)]
        for s in itertools.product(*ranges):
            if i == j and s == (0, 0, 0):
                continue
            d = pos[j] - pos[i] + (np.array(s) @ np.asarray(cell[b]) if periodic else 0.0)
            if np.linalg.norm(d) < cutoff:
                out.add((i, j) + tuple(int(v) for v in s))
    return out


def as_set(i, j, s):
    return {(a, b) + tuple(int(round(v)) for v in sv) for a, b, sv in zip(i.tolist(), j.tolist(), s.tolist())}


def molecules(seed=0, sizes=(5, 9, 1, 14)):
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat([torch.rand(n, 3, generator=g, dtype=torch.float64) * 4.0 + 100.0 * k for k, n in enumerate(sizes)])
    mol = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, mol, len(sizes)


@pytest.mark.parametrize("dense_limit", [10**9, 0], ids=["dense", "cell-list"])
def test_open_boundary_batch_matches_brute_force(dense_limit):
    pos, mol, n = molecules()
    i, j, s = radius_pairs(pos, mol, n, 2.5, dense_limit=dense_limit)
    assert as_set(i, j, s) == brute_force(pos.numpy(), mol.numpy(), 2.5)
    assert (mol[i] == mol[j]).all()
    assert len(i) > 0 and (s == 0).all()


def test_pairs_are_full_and_sorted():
    pos, mol, n = molecules(1)
    i, j, s = radius_pairs(pos, mol, n, 3.0)
    pairs = set(zip(i.tolist(), j.tolist()))
    assert all((b, a) in pairs for a, b in pairs)
    key = i * len(pos) + j
    assert torch.all(key[1:] >= key[:-1])


@pytest.mark.parametrize("dense_limit", [10**9, 0], ids=["dense", "cell-list"])
def test_small_triclinic_periodic_cell_needs_several_images(dense_limit):
    cell = torch.tensor([[3.0, 0.0, 0.0], [0.8, 2.7, 0.0], [0.3, -0.4, 3.2]], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    frac = torch.rand(4, 3, generator=g, dtype=torch.float64) * 1.6 - 0.3  # some atoms outside the cell
    pos = frac @ cell
    mol = torch.zeros(4, dtype=torch.long)
    pbc = torch.tensor([[True, True, True]])
    cutoff = 4.1  # larger than every cell width: minimum image is not enough
    i, j, s = radius_pairs(pos, mol, 1, cutoff, cell[None], pbc, dense_limit=dense_limit)
    expected = brute_force(pos.numpy(), mol.numpy(), cutoff, cell[None].numpy(), pbc.numpy(), reach=4)
    assert as_set(i, j, s) == expected
    # pair vectors rebuilt from shifts have the right lengths
    vec = pos[j] - pos[i] + s @ cell
    assert (vec.norm(dim=1) < cutoff).all()


def test_mixed_batch_of_periodic_and_molecular_structures():
    cell = torch.stack([torch.eye(3, dtype=torch.float64) * 3.5, torch.zeros(3, 3, dtype=torch.float64)])
    pbc = torch.tensor([[True, True, False], [False, False, False]])
    g = torch.Generator().manual_seed(3)
    pos = torch.cat(
        [
            torch.rand(3, 3, generator=g, dtype=torch.float64) * 3.5,
            torch.rand(4, 3, generator=g, dtype=torch.float64) * 2.0,
        ]
    )
    mol = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    i, j, s = radius_pairs(pos, mol, 2, 3.0, cell, pbc)
    assert as_set(i, j, s) == brute_force(pos.numpy(), mol.numpy(), 3.0, cell.numpy(), pbc.numpy())
    assert (s[:, 2] == 0).all()


def test_singular_periodic_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="singular cell"):
        radius_pairs(
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.long),
            1,
            2.0,
            torch.zeros(1, 3, 3),
            torch.tensor([[True, False, False]]),
        )


def test_torchscript_search_equals_eager():
    scripted = torch.jit.script(radius_pairs)
    pos, mol, n = molecules(4)
    for a, b in zip(scripted(pos, mol, n, 2.5, None, None, 0), radius_pairs(pos, mol, n, 2.5, dense_limit=0)):
        assert torch.equal(a, b)


@pytest.mark.skipif(not have_torch_cluster(), reason="torch-cluster not installed")
@pytest.mark.parametrize("periodic", [False, True])
def test_torch_cluster_backend_gives_identical_pairs(periodic):
    g = torch.Generator().manual_seed(5)
    if periodic:
        cell = (torch.eye(3, dtype=torch.float64) * 9.0)[None]
        pbc = torch.ones(1, 3, dtype=torch.bool)
        pos = torch.rand(300, 3, generator=g, dtype=torch.float64) * 9.0
        mol, n = torch.zeros(300, dtype=torch.long), 1
    else:
        cell = pbc = None
        pos, mol, n = molecules(5, sizes=(40, 3, 120, 7))
    ours = radius_pairs(pos, mol, n, 3.0, cell, pbc)
    theirs = cluster_pairs(pos, mol, n, 3.0, cell, pbc)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    via_dispatch = neighbor_pairs(pos, mol, n, 3.0, cell, pbc, backend="cluster")
    assert torch.equal(via_dispatch[0], ours[0])


def test_unknown_backend_is_rejected():
    pos, mol, n = molecules()
    with pytest.raises(ValueError, match="unknown neighbour backend"):
        neighbor_pairs(pos, mol, n, 2.0, backend="kdtree")
