"""Step 1 of a run: the data it trains on, its split, species and reference energies.

Everything here is decided once per run and recorded in the checkpoint, so a resumed run
trains on exactly the same structures with the same reference energies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from mfcalc.config import FidelityConfig, RunConfig, load_run_data
from mfcalc.data.dataset import fit_reference_energies, molecule_codes, split_indices
from mfcalc.data.identity import geometry_keys
from mfcalc.data.records import MFData, concatenate
from mfcalc.metrics import residual_data
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.train import finetune
from mfcalc.train.loss import LossWeights

FEW_STEPS = 1000  # below this many steps of patience, the plateau schedule's early stop comes too soon
MIN_REPLAY_VALID = 100  # replayed structures validated every epoch at least (when the replay has them)


@dataclass
class RunData:
    """What every member of a run trains and is scored on.

    Attributes:
        data: the structures as read (after any ``max_structures`` subsample).
        rows: (S,) their rows in the files as read (``split.npz`` refers to those).
        split: ``train`` / ``valid`` / ``test`` indices into ``data``.
        species: atomic numbers the model knows.
        reference: (F, n_species) eV, per-fidelity reference energies (frozen level 0).
        residual: ``data`` with the reference energies subtracted (what the network fits).
        weights: loss weights per fidelity (forces weight 0 where a fidelity has none).
        forces_mask: (S, F) structures carrying complete forces, computed once.
        fingerprint: ``data.fingerprint()``, computed once (checked on resume, stored in checkpoints).
        force_columns: fidelities whose forces enter the loss.
        fidelities: the model's heads, in order: the bound fidelities, or for fine-tuning the
            file's heads followed by the new ones.
        initial: members to start from (fine-tuning: adapted from ``init_from``), else None.
        replay: rows of ``data`` that replay the file's original data (fine-tuning), else None.
        source: the model file a fine-tuning run starts from, else None.
        molecule: (S,) a code per structure naming its molecule, when the loss compares energies
            within molecules (a relative-energy weight), else None.
    """

    data: MFData
    rows: np.ndarray
    split: Dict[str, np.ndarray]
    species: List[int]
    reference: np.ndarray
    residual: MFData
    weights: LossWeights
    forces_mask: np.ndarray
    force_columns: List[int]
    fingerprint: str
    fidelities: List[str] = field(default_factory=list)
    initial: Optional[List[MultiFidelityHipnn]] = None
    replay: Optional[np.ndarray] = None
    source: Optional[finetune.Source] = None
    molecule: Optional[np.ndarray] = None


def loss_weights(cfg: RunConfig, data: MFData) -> LossWeights:
    """Per head of ``data``: the configured weights; 1 for a head a fine-tuning run carries over
    (0 for forces where the data have none)."""
    bound = {f.name: f for f in cfg.fidelities}
    chosen = [bound.get(name, FidelityConfig(name, "")) for name in data.fidelities]
    return LossWeights(
        energy=[f.weight_energy for f in chosen],
        forces=[f.weight_forces if f.name in data.forces else 0.0 for f in chosen],
        hier=[f.weight_hier for f in chosen],
        relative=[f.weight_relative for f in chosen],
    )


def check_labels(data: MFData, split: Dict[str, np.ndarray], bound: List[str]) -> None:
    """Every bound fidelity needs energies, and some of them in the training split."""
    em = data.energy_mask
    for k, name in enumerate(data.fidelities):
        if name not in bound:
            continue
        if not em[:, k].any():
            raise ValueError(f"no structure is labelled with an energy for fidelity {name!r}")
        if not em[split["train"], k].any():
            raise ValueError(f"no structure in the training split carries an energy for fidelity {name!r}")


def check_same_data(state: Dict[str, Any], fingerprint: str, n_structures: int) -> None:
    """A checkpoint's split is row numbers of the data it was written with: refuse to resume on
    other data (a labelling job that kept writing to the files), which would silently train
    on test structures.  Checkpoints from before the fingerprint was recorded are not checked."""
    recorded = state.get("data_fingerprint")
    if recorded is not None and recorded != fingerprint:
        n_then = sum(len(v) for v in state["split"].values())
        raise ValueError(
            f"the data changed since the checkpoint was written ({n_then} structures then, {n_structures} now, or "
            "the same number with other structures or labels): the split's rows would name other structures. "
            "Resume with the files as they were, or start a new run (train on a copy of files that are still "
            "being labelled)"
        )


def read_split(path: str, n_structures: int) -> Dict[str, np.ndarray]:
    """An earlier run's split.npz, checked against the data it is applied to: every structure
    in exactly one part (the rows are positions in the files as read, so the same files,
    grown by labels on existing geometries only, give the same structures)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"split_from: no split file {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("train", "valid", "test") if k not in z.files]
        if missing:
            raise ValueError(f"split_from: {path} has no {', '.join(missing)} part (not a split.npz of mfcalc-train)")
        split = {k: np.asarray(z[k], dtype=np.int64) for k in ("train", "valid", "test")}
    rows = np.concatenate(list(split.values()))
    if len(rows) != n_structures or not np.array_equal(np.sort(rows), np.arange(n_structures)):
        raise ValueError(
            f"split_from: {path} splits {len(rows)} structures (rows up to {int(rows.max()) if len(rows) else -1}), "
            f"but the data have {n_structures}: it belongs to other data (a structure added or removed)"
        )
    return split


def grown_split(path: str, data: MFData, t_cfg: Any, say: Callable[[str], None]) -> Dict[str, np.ndarray]:
    """An earlier run's split for data that may have grown since: the same structures (more
    labels on the same geometries) keep its rows (:func:`read_split`); data with new structures
    are matched to that run's own data (read with the ``config.toml`` next to its split) by
    geometry, every structure it had keeps its part, and only the new ones are split, with this
    run's fractions and seed, so its test structures stay unseen and a model trained on the
    grown data can be compared with the earlier ones on the same validation structures."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"split_from: no split file {path}")
    with np.load(path, allow_pickle=False) as z:
        n_then = sum(len(z[k]) for k in z.files)
    if n_then == len(data):
        say(f"split from {path}")
        return read_split(path, len(data))
    config = os.path.join(os.path.dirname(path), "config.toml")
    if not os.path.exists(config):
        raise ValueError(
            f"split_from: {path} splits {n_then} structures, but the data have {len(data)}: it belongs to other "
            f"data, and no config.toml next to it says which, to match the structures by geometry"
        )
    if t_cfg.split_by != "random":
        raise ValueError("split_from on grown data splits the new structures at random: set split_by = 'random'")
    then_cfg = RunConfig.from_toml(config)
    run_dir = os.path.dirname(os.path.abspath(path))

    def local(f: str) -> str:  # a build kept in git reads its own copies (RUN/data/), wherever the clone lies
        return f if os.path.exists(f) else os.path.join(run_dir, "data", os.path.basename(f))

    then_cfg.data = [local(f) for f in then_cfg.data]
    for fid in then_cfg.fidelities:
        fid.files = [local(f) for f in fid.files]
    then = load_run_data(then_cfg, say=lambda _m: None)
    then_split = read_split(path, len(then))
    then_keys, keys = geometry_keys(then), geometry_keys(data)
    lost = len(set(then_keys) - set(keys))
    if lost:
        raise ValueError(
            f"split_from: {path} belongs to other data: {lost} of its structures are not in these data "
            "(a grown data set only gains structures)"
        )
    part_of: Dict[str, str] = {}
    for part in ("train", "valid", "test"):  # later parts win, as for a replay
        part_of.update((then_keys[int(i)], part) for i in then_split[part])
    where = np.array([part_of.get(k, "") for k in keys], dtype=object)
    new = np.flatnonzero(where == "")
    fresh = split_indices(data.subset(new), t_cfg.valid_fraction, t_cfg.test_fraction, seed=t_cfg.seed)
    for part, rows in fresh.items():
        where[new[rows]] = part
    say(f"split from {path}: {len(data) - len(new)} structures keep their part, {len(new)} new ones are split anew")
    return {part: np.flatnonzero(where == part).astype(np.int64) for part in ("train", "valid", "test")}


def read_replay_split(path: str, old: MFData, source: Optional[finetune.Source]) -> Dict[str, np.ndarray]:
    """The split of the run that trained on the replayed files (``read_split``), checked against
    that run's data fingerprint where its checkpoint lies next to the split: the same files read
    the same way give the same rows."""
    split = read_split(path, len(old))
    checkpoint = os.path.join(os.path.dirname(path), "checkpoint.pt")
    if source is not None and os.path.exists(checkpoint):
        import torch

        recorded = torch.load(checkpoint, map_location="cpu", weights_only=False).get("data_fingerprint")
        if recorded is not None and recorded != old.with_fidelities(source.fidelities).fingerprint():
            raise ValueError(
                f"replay_split: {path} belongs to other data than the replay (its run's checkpoint records other "
                "structures or labels): replay exactly the files that run trained on"
            )
    return split


def prepare_run(
    cfg: RunConfig,
    data: Optional[MFData] = None,
    given_split: Optional[Dict[str, np.ndarray]] = None,
    state: Optional[Dict[str, Any]] = None,
    say: Callable[[str], None] = print,
) -> RunData:
    """Read (or take) the data, subsample, split, choose species and fit reference energies.

    Args:
        data: replaces reading ``cfg``'s files (fidelities in ``cfg``'s order).
        given_split: train/valid/test indices into ``data``, replacing the drawn split.
        state: a checkpoint being resumed: its split, species and references are reused.
    """
    t_cfg = cfg.train
    source = None
    if t_cfg.init_from:
        source = finetune.load_source(t_cfg.init_from)
        finetune.resolve_settings(cfg, source)
        say(
            f"fine-tuning {source.path}: {source.ensemble.n_members} member(s), heads "
            f"{', '.join(source.fidelities)}, elements {source.species}"
        )
    bound = [f.name for f in cfg.fidelities]
    # a fine-tuned model keeps every head of its file (in the file's order), then the new ones
    names = bound if source is None else source.fidelities + [n for n in bound if n not in source.fidelities]
    if data is None:
        data = load_run_data(cfg, say)
    elif list(data.fidelities) != bound:
        raise ValueError(f"data fidelities {data.fidelities} differ from the config's {bound}")
    rows = np.arange(len(data))
    if given_split is None and t_cfg.split_from and state is None:
        given_split = grown_split(t_cfg.split_from, data, t_cfg, say)
    if given_split is not None and t_cfg.max_structures is not None:
        raise ValueError("a given split cannot be combined with max_structures")
    if t_cfg.max_structures is not None and t_cfg.max_structures < len(data):
        rows = np.sort(np.random.default_rng(t_cfg.seed).choice(len(data), t_cfg.max_structures, replace=False))
        data = data.subset(rows)
    data = data.with_fidelities(names)
    n_new = len(data)
    replay = None
    if source is not None and t_cfg.replay:
        old = finetune.read_replay(source, t_cfg.replay, names)
        say(f"replay of the original data: {old.summary()}")
        data = concatenate([data, old])
        replay = np.arange(n_new, len(data))
    say(f"data: {data.summary()}")
    fingerprint = data.fingerprint()
    reference: Optional[np.ndarray] = None
    if state is not None:
        check_same_data(state, fingerprint, len(data))
        split = {k: np.asarray(v) for k, v in state["split"].items()}
        species = list(state["species"])
        reference = np.asarray(state["reference"])
    else:
        if given_split is not None:
            split = {k: np.asarray(given_split[k], dtype=np.int64) for k in ("train", "valid", "test")}
        else:
            split = split_indices(
                data.subset(np.arange(n_new)) if replay is not None else data,
                t_cfg.valid_fraction,
                t_cfg.test_fraction,
                by=t_cfg.split_by,
                seed=t_cfg.seed,
            )
        if replay is not None:  # the original data get their own split: its test part scores forgetting
            if t_cfg.replay_split:
                old_split = read_replay_split(t_cfg.replay_split, data.subset(replay), source)
                say(f"replay split from {t_cfg.replay_split}")
            else:
                old_split = split_indices(
                    data.subset(replay), t_cfg.valid_fraction, t_cfg.test_fraction, seed=t_cfg.seed
                )
            new_keys, old_keys = geometry_keys(data.subset(np.arange(n_new))), geometry_keys(data.subset(replay))
            twins = np.flatnonzero(np.isin(old_keys, new_keys))  # replayed rows the new data also hold
            old_split = cap_replay_validation(old_split, len(split["valid"]), t_cfg.seed, keep=twins)
            split, moved = follow_replay_roles(split, new_keys, old_keys, old_split)
            if moved:
                say(f"{moved} new structure(s) are also in the replay: each takes its replayed copy's part")
            split = {k: np.concatenate([split[k], replay[old_split[k]]]) for k in split}
        species = sorted(cfg.model.species or np.unique(np.asarray(data.numbers)).astype(int).tolist())
        if source is not None:  # the file's elements stay; new ones are added
            species = sorted(set(species) | set(source.species))
    check_labels(data, split, bound)
    new_from = finetune.new_head_sources(cfg, source) if source is not None else {}
    restart_from = finetune.restart_head_sources(cfg, source) if source is not None else {}
    if reference is None:
        reference = (
            finetune.reference_energies(source, data, species, split["train"], new_from)
            if source is not None
            else fit_reference_energies(data, species, split["train"])
        )
    say(
        f"split ({t_cfg.split_by}): train {len(split['train'])}, valid {len(split['valid'])}, "
        f"test {len(split['test'])}; species {species}"
    )
    steps = -(-len(split["train"]) // t_cfg.batch_size)  # optimiser steps per epoch
    if t_cfg.lr_schedule == "plateau" and steps * t_cfg.early_stopping < FEW_STEPS:
        say(
            f"note: {steps} optimiser steps per epoch, so the plateau schedule may stop after "
            f"{steps * t_cfg.early_stopping} steps without progress (early_stopping {t_cfg.early_stopping} epochs); "
            "with this few structures lr_schedule = 'cosine' and a budget (epochs or max_minutes) trains to the "
            "end (README, Fine-tune)"
        )
    weights = loss_weights(cfg, data)
    molecule = molecule_codes(data, t_cfg.molecule_key) if weights.uses_relative() else None
    residual = residual_data(data, species, reference)
    initial = None
    if source is not None:
        initial = [
            finetune.adapt_member(
                source.ensemble.member(k), species, names, cfg.model, reference, new_from, restart_from
            )
            for k in range(t_cfg.ensemble)
        ]
    return RunData(
        data=data,
        rows=rows,
        split=split,
        species=species,
        reference=reference,
        residual=residual,
        weights=weights,
        forces_mask=residual.forces_mask(),
        force_columns=[k for k, w in enumerate(weights.forces) if w > 0],
        fingerprint=fingerprint,
        fidelities=names,
        initial=initial,
        replay=replay,
        source=source,
        molecule=molecule,
    )


def follow_replay_roles(
    split: Dict[str, np.ndarray], new_keys: List[str], old_keys: List[str], old_split: Dict[str, np.ndarray]
) -> Tuple[Dict[str, np.ndarray], int]:
    """One geometry, one part: a new structure that the replay also holds (the same
    :func:`geometry_key`, given for the new data and the replay) goes where its replayed copy
    is.  Otherwise a structure the original run held out for testing could train here as new
    data, or be tested here while its replayed copy trains, and the test scores would flatter
    the model.  A geometry in several parts of the replay counts as test before valid before train.

    Returns:
        the new data's split, and how many structures changed part.
    """
    role: Dict[str, str] = {}
    for part in ("train", "valid", "test"):  # later parts win
        role.update((old_keys[int(i)], part) for i in old_split[part])
    where = np.empty(len(new_keys), dtype=object)
    for part, rows in split.items():
        where[rows] = part
    moved = 0
    for i, key in enumerate(new_keys):
        if key in role and role[key] != where[i]:
            where[i] = role[key]
            moved += 1
    return {part: np.flatnonzero(where == part).astype(np.int64) for part in ("train", "valid", "test")}, moved


def cap_replay_validation(
    old_split: Dict[str, np.ndarray], n_new_valid: int, seed: int, keep: Optional[np.ndarray] = None
) -> Dict[str, np.ndarray]:
    """The replay's validation part, at most as large as the new data's (and at least
    :data:`MIN_REPLAY_VALID`): a replay file of the original model's tens of thousands of
    structures would otherwise make every epoch's validation cost more than its training.
    The rest trains; the test part, which scores forgetting once before and after, stays whole.
    Rows in ``keep`` (the replayed copies of new structures, whose twins validate with them)
    stay in the validation part beyond the cap."""
    cap = max(n_new_valid, MIN_REPLAY_VALID)
    valid = old_split["valid"]
    kept = valid[np.isin(valid, keep)] if keep is not None else valid[:0]
    others = np.setdiff1d(valid, kept)
    room = max(cap - len(kept), 0)
    if len(others) <= room:
        return old_split
    chosen = np.random.default_rng(seed).permutation(others)
    return {
        "train": np.sort(np.concatenate([old_split["train"], chosen[room:]])),
        "valid": np.sort(np.concatenate([kept, chosen[:room]])),
        "test": old_split["test"],
    }
