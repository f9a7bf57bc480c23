"""Fine-tuning: a run that starts from a trained model file instead of random weights.

* **Hyper-parameters** are the file's; a setting the user gave that differs from them is an
  error (a silent mismatch would load weights into a different network).
* **Heads**: a fidelity named like one of the file's heads reuses it (its reference energies
  too); a new name gets a new head, copied from a named head (``--new-head caspt2=cc``) or
  zero, above reference energies fitted on the new data (least squares on element counts,
  as in a fresh run).
* **Elements**: a new element adds a column to the species one-hot and to every weight that
  reads it (first interaction, its self-interaction and residual skip, the reference
  energies), initialised as the mean of the known elements' columns; a structure made of
  known elements is predicted exactly as before, because its one-hot never selects the new
  column.  The new element's reference energy in a reused head is fitted on the new data with
  the known elements' references held fixed.
* **What trains**: everything, the heads (levels 1..L of every head; a head whose fidelity
  has no labels in the run gets no gradient and stays as it was), or the heads and the last
  interaction block; the trunk may have its own learning rate (``--trunk-lr``).
* **Deeper** (``--grow-interactions N``): N interaction blocks are added on top, each started
  as the identity (the output layer of every residual in it zero) with a zero energy head, so
  the grown model predicts exactly what the file predicts (tested) and the new blocks learn
  from there.  (On the campaign's data it did no better than training the file's network on
  for the same epochs: data/README.md, row ``size study``.)
* **Branch** (``--train-params branch``): the new heads get private copies of the top
  ``--branch-blocks`` interaction blocks (default 1), started as the source's blocks, and only
  those copies and the new heads' own weights train.  Every other head reads nothing that
  changes, so it predicts exactly what the source predicted (no replay needed); the price is
  the copies' cost in every evaluation and less room to adapt than the whole trunk.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from torch import nn

from mfcalc import export, keys
from mfcalc.config import FidelityConfig, RunConfig, head_pair
from mfcalc.data.dataset import fit_reference_energies, species_counts
from mfcalc.data.records import MFData
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.model.settings import ModelSettings


@dataclass
class Source:
    """The model file a run starts from."""

    path: str
    meta: Dict[str, Any]
    ensemble: Ensemble
    settings: ModelSettings

    @property
    def species(self) -> List[int]:
        return list(self.ensemble.species)

    @property
    def fidelities(self) -> List[str]:
        return list(self.ensemble.fidelities)

    def reference(self, fidelity: str) -> Dict[int, float]:
        """The file's reference energies of one head, eV per element."""
        ref = self.meta[keys.META_REFERENCE_ENERGIES][fidelity]
        return {int(z): float(v) for z, v in ref.items()}


def load_source(path: str) -> Source:
    """Read a model file to start from (``"default"``: the shipped model); clear errors for a
    missing or non-mfcalc file."""
    if path == "default":
        from mfcalc.models import default_model_path

        path = default_model_path()
    try:
        module, meta = export.load(path)
        ensemble = export.eager_model(module, meta, path)
    except FileNotFoundError:
        raise ValueError(f"--init-from: model file not found: {path}") from None
    except ValueError as exc:
        raise ValueError(f"--init-from: {exc}") from None
    hp = {**ModelSettings.later_defaults(), **meta[keys.META_HPARAMS]}
    settings = ModelSettings(**{name: hp[name] for name in ModelSettings.architecture_fields()})
    return Source(path, meta, ensemble, settings)


def resolve_settings(cfg: RunConfig, source: Source) -> None:
    """The run takes the file's architecture and, unless ``ensemble`` is set, all its members;
    explicit settings that differ are an error, and so is asking for more members than the
    file has."""
    conflicts = []
    branching = {"branch_blocks", "branch_heads"} if cfg.train.train_params == "branch" else set()
    grow = cfg.train.grow_interactions
    grown: Dict[str, Any] = {"n_interactions": source.settings.n_interactions + grow} if grow else {}
    for name in sorted(cfg.explicit_model & set(ModelSettings.architecture_fields()) - branching):
        mine, theirs = getattr(cfg.model, name), grown.get(name, getattr(source.settings, name))
        if name == "soft_max" and mine is None:
            continue
        if mine != theirs and not (
            isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and float(mine) == float(theirs)
        ):
            grown_by = f", so {theirs} with --grow-interactions {grow}" if name in grown else ""
            conflicts.append(f"{name} {mine} (the file has {getattr(source.settings, name)}{grown_by})")
    if conflicts:
        raise ValueError(
            f"--init-from {source.path}: a fine-tuned model keeps the file's architecture, but "
            f"{', '.join(conflicts)} was asked for; drop those settings"
        )
    if grow and not source.settings.resnet:
        raise ValueError(
            f"--grow-interactions: {source.path} has plain (non-residual) blocks, which cannot start as the identity"
        )
    if grow and (source.settings.branch_blocks or cfg.train.train_params == "branch"):
        raise ValueError("--grow-interactions adds shared blocks; it does not combine with branch heads")
    cfg.model = dataclasses.replace(source.settings, species=cfg.model.species, **_branch(cfg, source), **grown)
    if "ensemble" not in cfg.explicit_train:  # every member is fine-tuned unless asked otherwise
        cfg.train.ensemble = source.ensemble.n_members
    if cfg.train.ensemble > source.ensemble.n_members:
        raise ValueError(
            f"--ensemble {cfg.train.ensemble}: {source.path} has {source.ensemble.n_members} member(s) to fine-tune"
        )


def _branch(cfg: RunConfig, source: Source) -> Dict[str, Any]:
    """The branch settings of a ``--train-params branch`` run: the new heads (the run's fidelities
    that the file has no head for) on private copies of the top ``--branch-blocks`` (1)."""
    names = [f.name for f in cfg.fidelities]
    new = [n for n in names if n not in source.fidelities]
    if source.settings.branch_blocks and new:
        raise ValueError(
            f"--init-from {source.path} already has branch heads {source.settings.branch_heads}; adding heads "
            "to such a model is not supported (fine-tune its existing heads, or start from the model it came from)"
        )
    if cfg.train.train_params != "branch":
        return {}
    if not new:
        raise ValueError(
            f"--train-params branch trains new heads on private blocks, but every fidelity of this run "
            f"({', '.join(names)}) is already a head of {source.path}"
        )
    depth = cfg.model.branch_blocks if "branch_blocks" in cfg.explicit_model else 1
    if not 1 <= depth <= source.settings.n_interactions:
        raise ValueError(f"--branch-blocks must be in 1..{source.settings.n_interactions}, got {depth}")
    asked = cfg.model.branch_heads if "branch_heads" in cfg.explicit_model else None
    if asked and sorted(asked) != sorted(new):
        raise ValueError(f"--branch-heads {asked}: with --train-params branch the new heads {new} are the branch heads")
    return {"branch_blocks": int(depth), "branch_heads": new}


def replay_bindings(source: Source, paths: Sequence[str]) -> List[FidelityConfig]:
    """The key bindings and units the model file records for its heads, bound to ``paths``."""
    recorded = (source.meta.get(keys.META_TRAINING) or {}).get("fidelities") or {}
    heads = [
        FidelityConfig(
            name,
            b["energy"],
            b.get("forces"),
            files=list(paths),
            energy_unit=b.get("energy_unit"),
            forces_unit=b.get("forces_unit"),
        )
        for name, b in recorded.items()
        if name in source.fidelities
    ]
    if not heads:
        raise ValueError(
            f"--replay: {source.path} records no key bindings of its heads, so {', '.join(paths)} cannot be "
            "read as its original data"
        )
    return heads


def read_replay(source: Source, paths: Sequence[str], names: Sequence[str]) -> MFData:
    """The file's original data, read with the key bindings and units the model file records
    for its heads, in the columns of ``names``.  Several files are read as a training run reads
    them: a level missing from a file is no label there, and one geometry labelled in several
    files (one file per level of theory) becomes one structure."""
    from mfcalc.config import load_run_data

    shown = ", ".join(paths)
    heads = replay_bindings(source, paths)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise ValueError(f"--replay: data file not found: {', '.join(missing)}")
    try:
        data = load_run_data(RunConfig(fidelities=heads), say=lambda _m: None)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"--replay {shown}: not the original data of {source.path}: {exc}") from None
    unknown = sorted(set(np.unique(np.asarray(data.numbers)).tolist()) - set(source.species))
    if unknown:
        raise ValueError(f"--replay: {shown} holds elements {unknown} that {source.path} never knew")
    return data.with_fidelities(names)


def new_head_sources(cfg: RunConfig, source: Source) -> Dict[str, str]:
    """``{new fidelity: existing head it starts from}`` from ``--new-head NEW=OLD``."""
    out: Dict[str, str] = {}
    names = [f.name for f in cfg.fidelities]
    for text in cfg.train.new_head or []:
        new, old = head_pair(text)
        if old not in source.fidelities:
            raise ValueError(
                f"--new-head {text}: {old!r} is not a head of {source.path} ({', '.join(source.fidelities)})"
            )
        if new not in names:
            raise ValueError(f"--new-head {text}: {new!r} is not a fidelity of this run ({', '.join(names)})")
        if new in source.fidelities:
            raise ValueError(f"--new-head {text}: {new!r} is already a head of {source.path}; it is reused as is")
        out[new] = old
    return out


def restart_head_sources(cfg: RunConfig, source: Source) -> Dict[str, str]:
    """``{head: other head whose weights it restarts from}`` from ``--restart-head HEAD=OTHER``."""
    out: Dict[str, str] = {}
    names = [f.name for f in cfg.fidelities]
    for text in cfg.train.restart_head or []:
        head, other = head_pair(text)
        for name in (head, other):
            if name not in source.fidelities:
                raise ValueError(
                    f"--restart-head {text}: {name!r} is not a head of {source.path} ({', '.join(source.fidelities)})"
                )
        if head not in names:
            raise ValueError(f"--restart-head {text}: this run binds no data to {head!r}, so it would not train")
        out[head] = other
    return out


def reference_energies(
    source: Source, data: MFData, species: Sequence[int], rows: np.ndarray, new_from: Dict[str, str]
) -> np.ndarray:
    """(F, n_species) eV: the file's references where it has them; fitted on the new data for new
    heads, and for new elements in reused heads with the known elements held fixed.  An element
    that a new head's data never contain takes the reference of the head it starts from
    (``new_from``), which is on the same absolute scale; another level's could be off by
    hundreds of eV (xTB's atoms against an all-electron method's)."""
    fallback = {new: (f"the {old!r} head of {source.path}", source.reference(old)) for new, old in new_from.items()}
    # a reused head without labels in this run (its data not replayed) keeps the file's references
    with_labels = [n for k, n in enumerate(data.fidelities) if np.isfinite(data.energy[rows, k]).any()]
    fitted = np.zeros((len(data.fidelities), len(species)))
    # only new heads are fitted whole; a reused head keeps the file's references (below), so
    # fitting it would only warn about elements its new data happen not to contain
    new_heads = [n for n in with_labels if n not in source.fidelities]
    if new_heads:
        fitted[[data.fidelities.index(n) for n in new_heads]] = fit_reference_energies(
            data.with_fidelities(new_heads), species, rows, fallback
        )
    known = [s for s, z in enumerate(species) if z in source.species]
    new = [s for s, z in enumerate(species) if z not in source.species]
    counts = species_counts(data, species, rows)
    for k, name in enumerate(data.fidelities):
        if name not in source.fidelities:
            continue
        ref = source.reference(name)
        fitted[k, known] = [ref[int(species[s])] for s in known]
        if name not in with_labels and new:  # nothing to fit a new element's reference on
            warnings.warn(
                f"head {name!r} has no labels in this run, so the new element(s) "
                f"{[int(species[s]) for s in new]} have no reference energy in it: its predictions "
                "for them mean nothing",
                stacklevel=2,
            )
            continue
        labelled = np.isfinite(data.energy[rows, k]) & (counts[:, new].sum(axis=1) > 0 if new else False)
        if new and labelled.any():
            residual = data.energy[rows, k][labelled] - counts[labelled][:, known] @ fitted[k, known]
            fitted[k, new] = np.linalg.lstsq(counts[labelled][:, new], residual, rcond=None)[0]
    return fitted


def adapt_member(
    member: MultiFidelityHipnn,
    species: Sequence[int],
    fidelities: Sequence[str],
    settings: ModelSettings,
    reference: np.ndarray,
    new_from: Dict[str, str],
    restart_from: Optional[Dict[str, str]] = None,
) -> MultiFidelityHipnn:
    """A member for this run's species and fidelities, initialised from a trained one: a head
    from the head of its name, or of ``new_from`` (new heads) or ``restart_from`` (restarted
    ones); the first level is always ``reference``."""
    model = MultiFidelityHipnn(list(species), list(fidelities), settings).to(next(member.parameters()).dtype)
    old_cols = [list(species).index(z) for z in member.species]
    new_cols = [s for s, z in enumerate(species) if z not in member.species]
    src, dst = member.state_dict(), model.state_dict()
    n_int, private = len(model.blocks), len(model.branch) if not len(member.branch) else 0
    out: Dict[str, torch.Tensor] = {}
    for key, value in dst.items():
        if key.startswith("heads.") or (private and key.startswith("branch.") and ".head." in key):
            continue
        if key.startswith("blocks.") and int(key.split(".")[1]) >= len(member.blocks):  # a grown block
            out[key] = torch.zeros_like(value) if ".residual.post." in key else value.clone()
            continue
        if private and key.startswith("branch."):  # a new private block starts as the shared one
            _, index, _, rest = key.split(".", 3)  # branch.<j>.block.<rest>
            old = src[f"blocks.{n_int - private + int(index)}.{rest}"]
        else:
            old = src[key]
        if old.shape == value.shape:
            out[key] = old.clone()
            continue
        axis = next(a for a in range(old.dim()) if old.shape[a] != value.shape[a])  # the species axis
        grown = torch.zeros_like(value).movedim(axis, 0)  # species first, then back
        grown[old_cols] = old.movedim(axis, 0)
        if new_cols:
            grown[new_cols] = old.movedim(axis, 0).mean(dim=0, keepdim=True)
        out[key] = grown.movedim(0, axis).contiguous()
    source_heads = member.heads.linears()
    for n, lin in enumerate(model.heads.linears()):
        prefix = f"heads.levels.{n}."
        if n == 0:
            out[prefix + "weight"] = torch.as_tensor(reference, dtype=lin.weight.dtype)
            continue
        weight, bias = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
        for k, name in enumerate(fidelities):
            origin = (restart_from or {}).get(name) or (name if name in member.fidelities else new_from.get(name))
            if origin is not None and n < len(source_heads):  # a grown level's head starts at zero
                j = member.fidelities.index(origin)
                weight[k], bias[k] = source_heads[n].weight[j], source_heads[n].bias[j]
        out[prefix + "weight"], out[prefix + "bias"] = weight, bias
    for b in range(private):  # and its head as the shared head of that level
        level = n_int - private + b + 1
        out[f"branch.{b}.head.weight"] = out[f"heads.levels.{level}.weight"].clone()
        out[f"branch.{b}.head.bias"] = out[f"heads.levels.{level}.bias"].clone()
    model.load_state_dict(out)
    model.heads.linears()[0].weight.requires_grad_(False)
    return model


def trainable_groups(
    model: MultiFidelityHipnn, train_params: str, lr: float, trunk_lr: Optional[float]
) -> List[Dict[str, Any]]:
    """Adam parameter groups for ``train_params`` (all / heads / last-block / branch); everything
    else is frozen (``requires_grad`` off, so it stays bit-identical)."""
    heads = [p for lin in model.heads.linears()[1:] for p in lin.parameters()]
    trunk: List[nn.Parameter] = []
    if train_params == "branch":
        trunk, heads = _branch_parameters(model)
    elif train_params == "all":
        trunk = [p for p in model.blocks.parameters()]
    elif train_params == "last-block":
        trunk = [p for p in model.blocks[-1].parameters()]
    chosen = {id(p) for p in heads + trunk}
    for p in model.parameters():
        if id(p) not in chosen:
            p.requires_grad_(False)
    if not trunk or trunk_lr is None or trunk_lr == lr:
        # one group in model.parameters() order: the optimiser state of plain training (and of
        # checkpoints written before fine-tuning existed) has exactly this layout
        return [{"params": [p for p in model.parameters() if id(p) in chosen], "lr": lr}]
    # trunk first, as in model.parameters(): the same order gives the same gradient clipping sums
    return [{"params": trunk, "lr": trunk_lr}, {"params": heads, "lr": lr}]


def _branch_parameters(model: MultiFidelityHipnn) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(private blocks, head weights) that a branch run trains.  The shared heads' levels below
    the private blocks are trained in the branch heads' rows only: a gradient hook zeroes the
    other rows, so Adam (no weight decay) leaves them exactly as they were."""
    if len(model.branch) == 0:
        raise ValueError("--train-params branch needs a model with branch heads")
    branches: List[Any] = list(model.branch)  # BranchBlock modules (typed loosely: nn.Module attributes)
    rows = model.branch_mask.to(model.heads.linears()[1].weight.dtype)
    shared_levels = model.heads.linears()[1 : len(model.blocks) - len(model.branch) + 1]
    heads: List[nn.Parameter] = [p for b in branches for p in b.head.parameters()]
    for lin in shared_levels:
        lin.weight.register_hook(lambda g, m=rows[:, None]: g * m)
        lin.bias.register_hook(lambda g, m=rows: g * m)
        heads += [cast(nn.Parameter, lin.weight), cast(nn.Parameter, lin.bias)]
    return [p for b in branches for p in b.block.parameters()], heads
