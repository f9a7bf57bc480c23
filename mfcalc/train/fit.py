"""Step 2 of a run: fit one ensemble member, epoch by epoch, with early stopping.

:func:`fit_member` owns the optimisation (Adam, plateau decay, gradient clipping, early
stopping) and nothing else: what happens to files after every epoch is the caller's
``on_epoch`` (the run driver writes the checkpoint and the log there), so a kill at any
moment loses at most the epoch in progress.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from mfcalc import keys
from mfcalc.config import RunConfig, TrainSettings
from mfcalc.data.dataset import collate
from mfcalc.metrics import (
    accumulate_stats,
    batch_stats,
    centred_stats,
    group_sums,
    group_sums_buffer,
    relative_rmse_values,
    stats_to_metrics,
)
from mfcalc.model import grad
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.progress import ProgressBar
from mfcalc.train.distributed import DistContext
from mfcalc.train.finetune import trainable_groups
from mfcalc.train.loss import LossWeights, total_loss
from mfcalc.train.prepare import RunData
from mfcalc.train.schedule import IMPROVEMENT, Schedule


class TrainStep(nn.Module):
    """Everything one optimisation step needs in a single ``forward`` (what DDP wraps).

    Returns residual energies (sum of levels >= 1) (B, F), forces (A, F, 3) for the
    requested fidelities (zeros elsewhere) with ``create_graph`` so the force loss trains
    the weights, and the hierarchicality (B, F).
    """

    def __init__(self, model: MultiFidelityHipnn):
        super().__init__()
        self.model = model

    def forward(
        self,
        numbers: Tensor,
        positions: Tensor,
        mol_index: Tensor,
        n_mol: int,
        cell: Tensor,
        pbc: Tensor,
        force_fids: List[int],
    ):
        positions = positions.detach().requires_grad_(bool(force_fids))
        out = self.model(numbers, positions, mol_index, n_mol, cell, pbc)
        pred = out[keys.ENERGY_LEVELS][:, 1:].sum(dim=1)
        forces = (
            grad.forces_of_columns(pred, positions, force_fids, create_graph=True)
            if force_fids
            else torch.zeros(positions.shape[0], pred.shape[1], 3, dtype=pred.dtype, device=pred.device)
        )
        return pred, forces, out[keys.HIERARCHICALITY]


@dataclass
class EarlyStopping:
    """Keeps the best validation loss and decides when to stop.

    A new lowest loss is remembered (its weights are the ones exported); only a relative
    fall of :data:`IMPROVEMENT` resets the patience.  No stop is taken before
    ``min_epochs``: on a validation split of unseen molecules the first epochs are noisy,
    and stopping there once exported an untrained model.
    """

    patience: int
    min_epochs: int
    best_loss: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record the loss of ``epoch``; returns whether it is the lowest so far."""
        improved = loss < self.best_loss
        if improved:
            self.bad_epochs = 0 if loss < self.best_loss * (1.0 - IMPROVEMENT) else self.bad_epochs + 1
            self.best_loss, self.best_epoch = loss, epoch
        else:
            self.bad_epochs += 1
        return improved

    def stop_reason(self, epoch: int, lr: float, settings: TrainSettings) -> Optional[str]:
        """Why training should stop after ``epoch`` (``None``: go on)."""
        if epoch >= settings.epochs:
            return f"reached {settings.epochs} epochs"
        if epoch < self.min_epochs:
            return None
        if self.bad_epochs >= self.patience:
            return f"no relative improvement of {IMPROVEMENT:g} in the validation loss for {self.patience} epochs"
        if settings.lr_schedule == "plateau" and lr < settings.min_lr:
            return f"the learning rate fell below min_lr {settings.min_lr:g}"
        return None


@dataclass
class MemberResult:
    """The outcome of fitting one member: its best weights and how the fit ended."""

    best_state: Dict[str, Tensor]
    best_epoch: int
    best_loss: float
    epochs_run: int
    stop_reason: str
    out_of_time: bool = False

    def summary(self) -> Dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_valid_loss": self.best_loss,
            "epochs_run": self.epochs_run,
            "stopped": self.stop_reason,
        }


def validation_loss(stats: Tensor, weights: LossWeights, centred: Optional[Tensor] = None) -> float:
    """Validation objective: the training loss without the regulariser (kcal/mol); its relative
    term compares the validation structures of each molecule all at once."""
    zero = torch.zeros(stats.shape[0], dtype=stats.dtype)
    return float(total_loss(stats, zero, torch.tensor(1.0, dtype=stats.dtype), weights, centred))


def build_member(
    cfg: RunConfig, run: RunData, member: int, device: torch.device, dtype: torch.dtype
) -> MultiFidelityHipnn:
    """A member to train: the adapted member of a fine-tuning run, else fresh seeded weights; the
    reference energies at level 0 are frozen."""
    torch.manual_seed(cfg.train.seed + 1000 * member)
    if run.initial is not None:
        return copy.deepcopy(run.initial[member]).to(device=device, dtype=dtype)
    model = MultiFidelityHipnn(run.species, run.fidelities, cfg.model)
    model.heads.set_reference_energies(torch.tensor(run.reference))
    return model.to(device=device, dtype=dtype)


def epoch_batches(run: RunData, settings: TrainSettings, rng: np.random.Generator) -> List[np.ndarray]:
    """The global batches of one epoch: the training structures shuffled; with a replay of a
    fine-tuned model's original data, every batch takes ``replay_fraction`` of its structures
    from it (drawn at random) and the rest from the new data, which defines the epoch.

    With a relative-energy loss (``run.molecule``), structures travel in chunks of up to
    ``relative_group`` of one molecule with the same labels (see :func:`molecule_chunks`), so
    that each batch holds structures whose energies can be compared."""
    size = settings.batch_size
    train = run.split["train"]
    replay = run.replay is not None and settings.replay_fraction > 0
    is_old = np.isin(train, run.replay) if replay and run.replay is not None else np.zeros(len(train), dtype=bool)
    n_old = min(max(1, int(round(settings.replay_fraction * size))), size - 1) if replay else 0
    n_new = size - n_old
    if run.molecule is None:
        new = rng.permutation(train[~is_old])
        batches = [new[b : b + n_new] for b in range(0, len(new), n_new)]
        if not replay:
            return batches
        old = train[is_old]
        return [np.concatenate([b, rng.choice(old, n_old)]) for b in batches]
    chunk_key = _chunk_keys(run)
    batches = _pack(molecule_chunks(train[~is_old], chunk_key, settings.relative_group, rng), n_new)
    if not replay:
        return batches
    old_chunks = molecule_chunks(train[is_old], chunk_key, settings.relative_group, rng)
    return [np.concatenate([b, _draw_chunks(old_chunks, n_old, rng)]) for b in batches]


def _chunk_keys(run: RunData) -> np.ndarray:
    """(S,) which structures may share a chunk: the same molecule and the same energy labels,
    for structures labelled at a fidelity with a relative weight; every other structure is a
    chunk of its own (grouping those would only make batches less diverse)."""
    assert run.molecule is not None
    mask = run.residual.energy_mask
    bits = (mask.astype(np.int64) << np.arange(mask.shape[1], dtype=np.int64)).sum(axis=1)
    relevant = mask[:, [w > 0 for w in run.weights.relative or []]].any(axis=1)
    key = run.molecule * (1 << mask.shape[1]) + bits
    return np.where(relevant, key, -1 - np.arange(len(key)))


def molecule_chunks(rows: np.ndarray, key: np.ndarray, size: int, rng: np.random.Generator) -> List[np.ndarray]:
    """``rows`` cut into chunks of up to ``size`` rows of one ``key``, drawn at random within
    each key, in random order."""
    rows = rng.permutation(rows)
    rows = rows[np.argsort(key[rows], kind="stable")]
    k = key[rows]
    bounds = np.flatnonzero(np.r_[True, k[1:] != k[:-1], True])
    chunks = [rows[c : min(c + size, b)] for a, b in zip(bounds[:-1], bounds[1:]) for c in range(a, b, size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def _pack(chunks: List[np.ndarray], size: int) -> List[np.ndarray]:
    """Whole chunks into batches of at most ``size`` structures, in order."""
    batches: List[np.ndarray] = []
    current: List[np.ndarray] = []
    filled = 0
    for chunk in chunks:
        if filled and filled + len(chunk) > size:
            batches.append(np.concatenate(current))
            current, filled = [], 0
        current.append(chunk)
        filled += len(chunk)
    if current:
        batches.append(np.concatenate(current))
    return batches


def _draw_chunks(chunks: List[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` structures as random chunks (the last one cut to fit)."""
    picked: List[np.ndarray] = []
    while n > 0:
        chunk = chunks[int(rng.integers(len(chunks)))][:n]
        picked.append(chunk)
        n -= len(chunk)
    return np.concatenate(picked)


class Anchor:
    """L2-SP for fine-tuning, one term per group of trainable parameters:
    ``weight * sum((w - w_start)**2)``, divided by ``sum(w_start**2)`` for a ``relative`` group.
    The trunk (absolute): a few new labels move the shared representation only as far as they
    must, and the old heads keep their accuracy.  The heads (relative: their weights are small,
    about 1e-2, so the weight reads as the price of a relative change): a restarted head stays a
    correction to the one it started from.  ``w_start`` is the model fine-tuning starts from
    (rebuilt the same way on resume)."""

    def __init__(self, groups: List[Tuple[List[nn.Parameter], float, bool]]):
        self.groups = []
        for params, weight, relative in groups:
            if params:
                start = [p.detach().clone() for p in params]
                scale = 1.0 / max(float(sum((p0**2).sum() for p0 in start)), 1e-30) if relative else 1.0
                self.groups.append((params, start, weight * scale))

    def penalty(self) -> Tensor:
        terms = [
            weight * torch.stack([((p - p0) ** 2).sum() for p, p0 in zip(params, start)]).sum()
            for params, start, weight in self.groups
        ]
        return torch.stack(terms).sum()


def _train_epoch(
    step: nn.Module,
    opt: torch.optim.Optimizer,
    params: List[nn.Parameter],
    run: RunData,
    batches: List[np.ndarray],
    settings: TrainSettings,
    ctx: DistContext,
    device: torch.device,
    dtype: torch.dtype,
    label: str,
    deadline: Optional[float],
    anchor: Optional[Anchor] = None,
    progress: bool = True,
) -> Tuple[float, bool]:
    """One pass over ``batches`` (global batches of structure indices); returns (mean loss, out of
    time).  The mean is of the data loss: an anchor's pull is trained on but not reported."""
    n_batches = len(batches)
    bar = ProgressBar(n_batches, label, ctx.is_main and progress)
    loss_sum, done, out_of_time = 0.0, 0, False
    for b in range(n_batches):
        global_batch = batches[b]
        batch = collate(run.residual, global_batch[ctx.rank :: ctx.world], dtype=dtype, forces_mask=run.forces_mask).to(
            device
        )
        fids = [k for k in run.force_columns if bool(batch.forces_mask[:, k].any())]
        pred, forces, hier = step(
            batch.numbers, batch.positions, batch.mol_index, batch.n_mol, batch.cell, batch.pbc, fids
        )
        stats = batch_stats(
            pred,
            batch.energy,
            batch.energy_mask,
            forces,
            batch.forces,
            batch.forces_mask,
            batch.mol_index,
            fids,
            energy_per_atom=settings.energy_loss == "atom",
        )
        parts = [
            stats,
            hier.sum(dim=0),
            torch.tensor([float(batch.n_mol)], dtype=stats.dtype, device=stats.device),
        ]
        if run.molecule is not None:  # per-molecule sums over the global batch (same codes on every rank)
            molecules, local = np.unique(run.molecule[global_batch], return_inverse=True)
            group = torch.as_tensor(local.reshape(-1)[ctx.rank :: ctx.world], device=pred.device)
            parts.append(group_sums(pred - batch.energy, batch.energy_mask, group, len(molecules)))
        summed = ctx.sum_differentiable(torch.cat([p.reshape(-1) for p in parts]))
        stats_sum, hier_sum, n_sum, *sums = torch.split(summed, [p.numel() for p in parts])
        loss = total_loss(
            stats_sum.reshape(stats.shape),
            hier_sum,
            n_sum[0],
            run.weights,
            centred_stats(sums[0].reshape(parts[3].shape)) if sums else None,
        )
        opt.zero_grad(set_to_none=True)
        (loss if anchor is None else loss + anchor.penalty()).backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        loss_sum += float(loss.detach())
        done = b + 1
        bar.update(done, loss_sum / done)
        if deadline is not None and time.monotonic() > deadline:
            out_of_time = True
            break
    bar.close()
    return loss_sum / max(done, 1), out_of_time


def fit_member(
    cfg: RunConfig,
    run: RunData,
    member: int,
    ctx: DistContext,
    device: torch.device,
    dtype: torch.dtype,
    log_rows: List[Dict[str, Any]],
    on_epoch: Callable[[Dict[str, Any]], None],
    say: Callable[[str], None],
    deadline: Optional[float] = None,
    resume: Optional[Dict[str, Any]] = None,
    progress: bool = True,
) -> MemberResult:
    """Train member ``member`` until a stop criterion (or the deadline); returns its best weights.

    Args:
        log_rows: the run's epoch log; one row is appended per epoch.
        on_epoch: called after every epoch with the member's full state (weights,
            optimiser, scheduler, RNG, early-stopping state): the caller checkpoints it.
        resume: that state from a checkpoint, to continue bit for bit.
        progress: draw the per-batch bar (off in worker processes, whose bars would collide).
    """
    settings = cfg.train
    fid_names = run.fidelities
    model = build_member(cfg, run, member, device, dtype)
    step: nn.Module = TrainStep(model)
    if ctx.enabled:
        step = nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
    groups = trainable_groups(model, settings.train_params, settings.lr, settings.trunk_lr)
    params = [p for g in groups for p in g["params"]]
    anchor = None
    if settings.trunk_anchor > 0 or settings.head_anchor > 0:  # before a resume loads later weights: the source's
        trainable = {id(p) for p in params}
        branches: List[Any] = list(model.branch)  # private blocks of branch heads (typed loosely)
        trunk = list(model.blocks.parameters()) + [p for b in branches for p in b.block.parameters()]
        heads = [p for lin in model.heads.linears()[1:] for p in lin.parameters()]
        heads += [p for b in branches for p in b.head.parameters()]
        pulled = [(trunk, settings.trunk_anchor, False), (heads, settings.head_anchor, True)]
        anchor = Anchor([([p for p in ps if id(p) in trainable], w, rel) for ps, w, rel in pulled if w > 0])
    opt = torch.optim.Adam(groups, lr=settings.lr)
    sched = Schedule(settings, opt)
    rng = np.random.default_rng([settings.seed, member])
    stopping = EarlyStopping(settings.early_stopping, settings.min_epochs)
    epoch = 0
    best_state = copy.deepcopy(model.state_dict())
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        rng.bit_generator.state = resume["rng"]
        epoch = resume["epoch"]
        stopping.best_loss, stopping.bad_epochs = resume["best_loss"], resume["bad_epochs"]
        stopping.best_epoch = int(resume.get("best_epoch", 0))
        best_state = resume["best_state"]
        say(f"resumed member {member + 1} after epoch {epoch}")
    tag = f"[{member + 1}/{settings.ensemble}]" if settings.ensemble > 1 else ""
    reason = sched.stop_reason(epoch) or stopping.stop_reason(epoch, opt.param_groups[0]["lr"], settings)
    out_of_time = False
    while reason is None:
        t0 = time.perf_counter()
        sched.start_epoch(epoch)
        lr = opt.param_groups[0]["lr"]  # the rate this epoch ran at (the plateau rule may lower it after)
        model.train()
        train_loss, out_of_time = _train_epoch(
            step,
            opt,
            params,
            run,
            epoch_batches(run, settings, rng),
            settings,
            ctx,
            device,
            dtype,
            f"{tag}epoch {epoch + 1}",
            deadline,
            anchor,
            progress,
        )
        epoch += 1
        model.eval()
        vsums = group_sums_buffer(run.molecule, len(fid_names))
        vstats = ctx.sum(
            accumulate_stats(
                model,
                run.residual,
                run.split["valid"][ctx.rank :: ctx.world],
                fid_names,
                settings.batch_size,
                device,
                dtype,
                forces_mask=run.forces_mask,
                molecule=run.molecule,
                molecule_sums=vsums,
            )
        )
        centred = None if vsums is None else centred_stats(ctx.sum(vsums))
        vloss = validation_loss(vstats, run.weights, centred)
        improved = stopping.update(epoch, vloss)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        seconds = time.perf_counter() - t0
        sched.end_epoch(epoch, vloss, seconds, None if deadline is None else deadline - time.monotonic())
        row = _log_row(
            member,
            epoch,
            seconds,
            lr,
            train_loss,
            vloss,
            stats_to_metrics(vstats, fid_names),
            None if centred is None else relative_rmse_values(centred),
        )
        log_rows.append(row)
        say(_log_line(tag, row, settings.epochs, fid_names) + ("  *" if improved else ""))
        on_epoch(
            {
                "member": member,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": rng.bit_generator.state,
                "best_loss": stopping.best_loss,
                "bad_epochs": stopping.bad_epochs,
                "best_epoch": stopping.best_epoch,
                "best_state": best_state,
            }
        )
        if out_of_time:
            reason = f"--max-minutes {settings.max_minutes} reached"
            say(f"--max-minutes {settings.max_minutes} reached: stopping and exporting the best weights so far")
            break
        reason = sched.stop_reason(epoch) or stopping.stop_reason(epoch, opt.param_groups[0]["lr"], settings)
    return MemberResult(
        best_state=best_state,
        best_epoch=stopping.best_epoch,
        best_loss=stopping.best_loss,
        epochs_run=epoch,
        stop_reason=reason,
        out_of_time=out_of_time,
    )


def _log_row(
    member: int,
    epoch: int,
    seconds: float,
    lr: float,
    train_loss: float,
    vloss: float,
    metrics: Dict[str, Dict[str, Any]],
    relative: Optional[List[Optional[float]]] = None,
) -> Dict[str, Any]:
    row: Dict[str, Any] = {
        "member": member + 1,
        "epoch": epoch,
        "seconds": round(seconds, 3),
        "lr": lr,
        "train_loss": train_loss,
        "valid_loss": vloss,
    }
    for name, m in metrics.items():
        row[f"valid_{name}_energy_rmse_kcal_mol"] = m["energy_rmse_kcal_mol"]
        row[f"valid_{name}_forces_rmse_kcal_mol_a"] = m["forces_rmse_kcal_mol_a"]
    for name, r in zip(metrics, relative or []):  # within-molecule energies, with a relative loss
        row[f"valid_{name}_relative_rmse_kcal_mol"] = r
    return row


def _log_line(tag: str, row: Dict[str, Any], epochs: int, fid_names: List[str]) -> str:
    parts = []
    for name in fid_names:
        e, f = row[f"valid_{name}_energy_rmse_kcal_mol"], row[f"valid_{name}_forces_rmse_kcal_mol_a"]
        if e is None:
            parts.append(f"{name} -")
            continue
        rel = row.get(f"valid_{name}_relative_rmse_kcal_mol")  # with a relative-energy loss
        parts.append(
            f"{name} E {e:.3f}" + (f" F {f:.3f}" if f is not None else "") + (f" rel {rel:.3f}" if rel else "")
        )
    return (
        f"{tag}epoch {row['epoch']:4d}/{epochs}  {row['seconds']:6.1f}s  lr {row['lr']:.2e}  "
        f"train {row['train_loss']:8.3f}  valid {row['valid_loss']:8.3f}  | " + " | ".join(parts)
    )
