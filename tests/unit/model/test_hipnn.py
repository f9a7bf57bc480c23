"""Physics contracts of the multi-fidelity HIP-NN-TS model, on eager and TorchScript models."""

import copy

import pytest
import torch

from conftest import ethanol, random_rotation
from mfcalc.model import MultiFidelityHipnn, cosine_cutoff
from mfcalc.model.sensitivity import InverseSensitivity

FIDS = ["xtb", "dft", "cc"]


def make_model(order=2, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    kw.setdefault("n_features", 8)
    kw.setdefault("n_sensitivities", 6)
    kw.setdefault("n_atom_layers", 1)
    m = MultiFidelityHipnn([1, 6, 7, 8], FIDS, tensor_order=order, **kw).to(dtype)
    return m


def variants(model):
    return {"eager": model, "script": torch.jit.script(model)}


def energies(model, z, pos, mol=None, n_mol=1, **kw):
    mol = torch.zeros(len(z), dtype=torch.long) if mol is None else mol
    return model(z, pos, mol, n_mol, **kw)["energy"]


@pytest.mark.parametrize("kind", ["eager", "script"])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_forces_are_minus_the_finite_difference_gradient(order, kind):
    model = variants(make_model(order))[kind]
    z, pos = ethanol()
    mol = torch.zeros(len(z), dtype=torch.long)
    h = 1e-4
    for fid in range(len(FIDS)):
        _, forces = model.energy_and_forces(z, pos, mol, 1, fid)
        fd = torch.zeros_like(pos)
        for a in range(len(z)):
            for c in range(3):
                plus, minus = pos.clone(), pos.clone()
                plus[a, c] += h
                minus[a, c] -= h
                # 4th-order central difference
                p2, m2 = pos.clone(), pos.clone()
                p2[a, c] += 2 * h
                m2[a, c] -= 2 * h
                e = [energies(model, z, x)[0, fid] for x in (p2, plus, minus, m2)]
                fd[a, c] = -(-e[0] + 8 * e[1] - 8 * e[2] + e[3]) / (12 * h)
        rel = (forces - fd).norm() / fd.norm()
        assert rel < 1e-6, f"fidelity {FIDS[fid]} order {order}: relative force error {rel:.2e}"


@pytest.mark.parametrize("kind", ["eager", "script"])
def test_energy_invariant_to_rotation_translation_permutation(kind):
    model = variants(make_model(2))[kind]
    z, pos = ethanol()
    e0 = energies(model, z, pos)
    rot = random_rotation(1)
    moved = pos @ rot.T + torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(energies(model, z, moved), e0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(energies(model, z[perm], pos[perm]), e0, rtol=1e-10, atol=1e-10)
    # forces rotate with the molecule (equivariance follows from invariance + autograd)
    mol = torch.zeros(len(z), dtype=torch.long)
    f0 = model.energy_and_forces(z, pos, mol, 1, 2)[1]
    f1 = model.energy_and_forces(z, moved, mol, 1, 2)[1]
    torch.testing.assert_close(f1, f0 @ rot.T, rtol=1e-9, atol=1e-9)


def test_energy_is_extensive_for_far_apart_copies():
    model = make_model(2)
    z, pos = ethanol()
    e1 = energies(model, z, pos)
    far = torch.cat([pos, pos + torch.tensor([50.0, 0.0, 0.0], dtype=torch.float64)])
    torch.testing.assert_close(energies(model, torch.cat([z, z]), far), 2 * e1, rtol=1e-12, atol=1e-10)


def test_batch_equals_single_structures():
    model = make_model(1)
    z, pos = ethanol()
    z2, pos2 = z[:5], pos[:5] + 0.1
    batch = energies(model, torch.cat([z, z2]), torch.cat([pos, pos2]), torch.tensor([0] * len(z) + [1] * len(z2)), 2)
    torch.testing.assert_close(batch[0], energies(model, z, pos)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batch[1], energies(model, z2, pos2)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [0, 2])
def test_energy_and_force_continuous_as_a_neighbour_crosses_the_cutoff(order):
    model = make_model(order, cutoff=4.0, soft_max=3.0)
    z = torch.tensor([6, 8])
    mol = torch.zeros(2, dtype=torch.long)

    def at(r):
        pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64)
        e, f = model.energy_and_forces(z, pos, mol, 1, 1)
        return e.item(), f[1, 0].item()

    e_in, f_in = at(4.0 - 1e-7)
    e_out, f_out = at(4.0 + 1e-7)
    e_far, _ = at(10.0)
    assert abs(e_in - e_out) < 1e-9 and abs(f_in - f_out) < 1e-6
    assert e_out == pytest.approx(e_far, abs=1e-12)  # beyond the cutoff nothing changes
    # and it does interact inside: the energy is not flat at 3 Angstrom
    assert abs(at(3.0)[0] - e_far) > 1e-6


def test_cutoff_and_sensitivities_vanish_at_the_cutoff():
    r = torch.tensor([0.9, 4.999999, 5.0, 6.0], dtype=torch.float64)
    fc = cosine_cutoff(r, 5.0)
    assert fc[0] > 0 and fc[1] < 1e-10 and fc[2] == 0 and fc[3] == 0
    s = InverseSensitivity(4, 0.8, 4.0, 5.0).double()(r)
    assert s.shape == (4, 4) and (s[2:] == 0).all()


def test_heads_differ_and_the_trunk_is_shared():
    model = make_model(2)
    trunk = [n for n, _ in model.named_parameters() if not n.startswith("heads.")]
    assert trunk and all(n.startswith("blocks.") for n in trunk)
    # the trunk does not grow with the number of fidelities; only heads do
    one = MultiFidelityHipnn([1, 6, 7, 8], ["cc"], n_features=8, n_sensitivities=6, n_atom_layers=1)
    n_trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("heads."))
    assert n_trunk == sum(p.numel() for n, p in one.named_parameters() if not n.startswith("heads."))
    z, pos = ethanol()
    e0 = energies(model, z, pos)[0]
    assert len(set(e0.tolist())) == 3  # three heads, three different energies
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.heads.levels[2].weight[1] += 0.05  # the dft row of the last level
    e1 = energies(edited, z, pos)[0]
    assert e1[1] != e0[1]
    assert e1[0] == e0[0] and e1[2] == e0[2]


@pytest.mark.parametrize("depth", [1, 2])
def test_branch_heads_read_private_top_blocks_and_nothing_else_does(depth):
    """A branch head (cc) takes its top ``depth`` levels from private copies of the top blocks;
    with the copies equal to the shared blocks it predicts what it did without them, and no
    change of the private weights reaches another head.  Forces stay -dE/dx (TorchScript too)."""
    plain = make_model(2)
    branched = make_model(2, branch_blocks=depth, branch_heads=["cc"])
    state = {k: v for k, v in plain.state_dict().items()}
    top = len(plain.blocks) - depth
    for j in range(depth):  # the private copies start as the shared blocks and their heads
        for k, v in plain.blocks[top + j].state_dict().items():
            state[f"branch.{j}.block.{k}"] = v
        state[f"branch.{j}.head.weight"] = plain.heads.levels[top + j + 1].weight.detach()
        state[f"branch.{j}.head.bias"] = plain.heads.levels[top + j + 1].bias.detach()
    branched.load_state_dict(state)
    z, pos = ethanol()
    torch.testing.assert_close(energies(branched, z, pos), energies(plain, z, pos), rtol=0, atol=1e-12)
    with torch.no_grad():
        for p in branched.branch.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before, after = energies(plain, z, pos)[0], energies(branched, z, pos)[0]
    assert after[0] == before[0] and after[1] == before[1] and after[2] != before[2]
    mol = torch.zeros(len(z), dtype=torch.long)
    e, f = torch.jit.script(branched).energy_and_forces(z, pos, mol, 1, 2)
    h, g = 1e-4, torch.zeros(3)
    for c in range(3):
        plus, minus = pos.clone(), pos.clone()
        plus[0, c] += h
        minus[0, c] -= h
        g[c] = -(energies(branched, z, plus)[0, 2] - energies(branched, z, minus)[0, 2]) / (2 * h)
    torch.testing.assert_close(f[0], g.to(f.dtype), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="go together"):
        make_model(2, branch_blocks=1)
    with pytest.raises(ValueError, match="not fidelities of the model"):
        make_model(2, branch_blocks=1, branch_heads=["caspt2"])
    with pytest.raises(ValueError, match="branch_blocks must be in 0..n_interactions"):
        make_model(2, branch_blocks=3, branch_heads=["cc"])


def test_reference_energies_set_level_zero_and_freeze_it():
    model = make_model(1)
    ref = torch.tensor([[-13.0, -1000.0, -1400.0, -2000.0]] * 3, dtype=torch.float64)
    model.heads.set_reference_energies(ref)
    assert not model.heads.levels[0].weight.requires_grad
    z, pos = ethanol()
    levels = model(z, pos, torch.zeros(len(z), dtype=torch.long), 1)["energy_levels"][0]
    torch.testing.assert_close(levels[0, 0], torch.tensor(2 * -1000.0 + 6 * -13.0 - 2000.0, dtype=torch.float64))


def test_hierarchicality_is_finite_and_bounded():
    model = make_model(2)
    z, pos = ethanol()
    out = model(z, pos, torch.zeros(len(z), dtype=torch.long), 1)
    h = out["hierarchicality"]
    n_levels = out["energy_levels"].shape[1]
    assert torch.isfinite(h).all() and (h >= 0).all() and (h <= len(z) * (n_levels - 1)).all()


def test_create_graph_allows_training_on_forces():
    model = make_model(2)
    z, pos = ethanol()
    _, f = model.energy_and_forces(z, pos, torch.zeros(len(z), dtype=torch.long), 1, 0, create_graph=True)
    (f**2).sum().backward()
    v = model.blocks[0].interaction.V
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_float32_is_the_default_dtype():
    torch.manual_seed(0)
    model = MultiFidelityHipnn([1, 6, 7, 8], FIDS, n_features=8, n_sensitivities=6)
    assert next(model.parameters()).dtype == torch.float32
    z, pos = ethanol()
    e = energies(model, z, pos.float())
    assert e.dtype == torch.float32 and e.shape == (1, 3)


@pytest.mark.parametrize("kind", ["eager", "script"])
def test_periodic_small_cell_equals_supercell_over_eight(kind):
    model = variants(make_model(2, cutoff=4.0, soft_max=3.0))[kind]
    # 4 water-like molecules in a 4.2 A cell: cell < 2 * cutoff, many images needed
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=torch.float64)
    pos = torch.cat(
        [base @ random_rotation(k).T + torch.rand(3, generator=g, dtype=torch.float64) * 4.2 for k in range(4)]
    )
    z = torch.tensor([8, 1, 1] * 4)
    cell = torch.eye(3, dtype=torch.float64) * 4.2
    pbc = torch.ones(1, 3, dtype=torch.bool)
    e_small = energies(model, z, pos, cell=cell[None], pbc=pbc)
    shifts = torch.cartesian_prod(*[torch.arange(2)] * 3).to(torch.float64) @ cell
    big = (pos[None] + shifts[:, None]).reshape(-1, 3)
    e_big = energies(model, z.repeat(8), big, cell=(2 * cell)[None], pbc=pbc)
    torch.testing.assert_close(e_big / 8, e_small, rtol=1e-10, atol=1e-9)
    # a wrapped copy of the same structure gives the same energy
    torch.testing.assert_close(
        energies(model, z, pos + cell[0] * 3 - cell[2], cell=cell[None], pbc=pbc), e_small, rtol=1e-10, atol=1e-9
    )


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["eager", "script"])
def test_unknown_element_names_the_element_and_the_species(kind):
    model = variants(make_model(0))[kind]
    z, pos = ethanol()
    z = z.clone()
    z[0] = 17
    with pytest.raises(Exception, match=r"\[17\] not in the model species \[1, 6, 7, 8\]"):
        energies(model, z, pos)


@pytest.mark.parametrize("kind", ["eager", "script"])
def test_any_integer_dtype_of_atomic_numbers_gives_the_same_energy(kind):
    model = variants(make_model(0))[kind]
    z, pos = ethanol()
    ref = energies(model, z, pos)
    for dtype in (torch.uint8, torch.int32):  # numpy files often hold uint8; uint8 must not index as a mask
        torch.testing.assert_close(energies(model, z.to(dtype), pos), ref, rtol=0, atol=0)
    with pytest.raises(Exception, match="atomic numbers must be an integer tensor"):
        energies(model, z.double(), pos)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["eager", "script"])
def test_non_finite_positions_are_rejected(kind, bad):
    model = variants(make_model(0))[kind]
    z, pos = ethanol()
    pos = pos.clone()
    pos[3, 1] = bad
    with pytest.raises(Exception, match="NaN or infinite"):
        energies(model, z, pos)


@pytest.mark.parametrize("kind", ["eager", "script"])
def test_unknown_fidelity_lists_the_known_ones(kind):
    model = variants(make_model(0))[kind]
    with pytest.raises(Exception, match=r"unknown fidelity 'ccsdt'.*xtb, dft, cc"):
        model.fidelity_index("ccsdt")
    assert model.fidelity_index("cc") == 2


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="species"):
        MultiFidelityHipnn([1, 1, 6], FIDS)
    with pytest.raises(ValueError, match="fidelities"):
        MultiFidelityHipnn([1, 6], ["a", "a"])
    with pytest.raises(ValueError, match="tensor_order"):
        MultiFidelityHipnn([1, 6], ["a"], tensor_order=3)


def test_unsorted_mol_index_is_rejected():
    model = make_model(0)
    z, pos = ethanol()
    mol = torch.tensor([1, 0] + [1] * (len(z) - 2))
    with pytest.raises(ValueError, match="mol_index must be sorted"):
        model(z, pos, mol, 2)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_interaction_layer_equals_the_spec_formula_written_out(order):
    """The factorised layer (radial sum once per pair, angular factors after, padded neighbour
    tables) against the spec written out literally: full per-pair sensitivities s^c_nu,
    environment sums of z_j, the same V for every component, and the l = 2 norm from the full
    3x3 traceless tensor.  The pair list is shuffled, not symmetric, has atoms with different
    neighbour counts and one atom with none, so the tables' padding is exercised."""
    from mfcalc.model.interaction import InteractionLayer, pair_layout, pair_tables

    torch.manual_seed(order)
    n_atoms, f_in, f_out, n_s, eps = 7, 5, 4, 6, 1e-4
    layer = InteractionLayer(f_in, f_out, n_s, order, 0.75, 4.5, 5.5, cusp_reg=eps).double()
    z = torch.randn(n_atoms, f_in, dtype=torch.float64)
    pos = 1.5 * torch.randn(n_atoms, 3, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(n_atoms), torch.arange(n_atoms), indexing="ij")
    keep = (i != j) & (torch.rand(n_atoms, n_atoms) < 0.6) & (i != 3) & (j != 3)  # atom 3: no pairs
    first, second = i[keep], j[keep]
    shuffle = torch.randperm(len(first))
    first, second = first[shuffle], second[shuffle]
    vec = pos[second] - pos[first]
    r = vec.norm(dim=1)
    rhat = vec / r[:, None]
    layout = pair_layout(first, second, n_atoms)
    r_table, rhat_table = pair_tables(layout, r[None], rhat[None], 5.5)
    got = layer(z, layout, r_table[0], rhat_table[0])

    s = layer.sensitivity(r)  # (P, N_s), includes the cutoff
    env0 = torch.zeros(n_atoms, n_s, f_in, dtype=torch.float64)  # e^nu_i = sum_j s_nu z_j
    env1 = torch.zeros(n_atoms, 3, n_s, f_in, dtype=torch.float64)
    env2 = torch.zeros(n_atoms, 3, 3, n_s, f_in, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    for p in range(len(first)):
        a, b = int(first[p]), int(second[p])
        outer = s[p][:, None] * z[b][None, :]
        env0[a] += outer
        env1[a] += rhat[p][:, None, None] * outer
        quad = torch.outer(rhat[p], rhat[p]) - eye / 3
        env2[a] += quad[:, :, None, None] * outer
    V = layer.V  # (N_s, F_in, F_out)
    u0 = torch.einsum("anf,nfo->ao", env0, V)
    want = u0 + layer.self_linear(z)
    if order >= 1:
        u1 = torch.einsum("acnf,nfo->aco", env1, V)
        want = want + layer.t1 * torch.sqrt((u1**2).sum(dim=1) + eps)
    if order >= 2:
        u2 = torch.einsum("acdnf,nfo->acdo", env2, V)  # full 3x3 per feature
        want = want + layer.t2 * torch.sqrt((u2**2).sum(dim=(1, 2)) + eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_pair_layout_places_every_pair_in_its_rows_and_moves_between_tables_by_a_permutation():
    from mfcalc.model.interaction import pair_layout

    torch.manual_seed(1)
    n_atoms = 6
    first = torch.tensor([0, 0, 0, 1, 2, 2, 5, 4])  # asymmetric; atom 3 has no pairs
    second = torch.tensor([1, 2, 4, 0, 0, 5, 2, 0])
    order = torch.randperm(len(first))
    first, second = first[order], second[order]
    sender_slot, receiver_slot, width, to_receiver = pair_layout(first, second, n_atoms)
    assert width == 3  # atom 0: three pairs as receiver and three as sender
    assert torch.equal(sender_slot // width, second) and torch.equal(receiver_slot // width, first)
    assert len(set(sender_slot.tolist())) == len(first) == len(set(receiver_slot.tolist()))
    assert torch.equal(torch.sort(to_receiver).values, torch.arange(n_atoms * width))  # a permutation
    assert torch.equal(to_receiver[sender_slot], receiver_slot)  # each pair to its own receiver slot
    empty = pair_layout(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 2)
    assert empty[2] == 0 and empty[3].numel() == 0
