"""Multi-fidelity training: data -> split -> reference energies -> members -> export.

One call of :func:`train` is one ``mfcalc-train`` run.  Every epoch ends with an atomic
checkpoint holding everything needed to continue bit-for-bit (weights, optimiser,
scheduler, shuffling RNG, early-stopping state, log), so ``--resume`` after a kill or a
``--max-minutes`` stop gives the same result as an uninterrupted run with the same seed.
Under ``torchrun`` the same code runs DistributedDataParallel: every rank takes its share
of each global batch and the loss is formed from globally summed error statistics.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from mfcalc import export
from mfcalc.config import RunConfig
from mfcalc.data.dataset import collate, fit_reference_energies, read_file, split_indices
from mfcalc.data.fidelity import FidelitySpec
from mfcalc.data.records import MFData, concatenate, merge_identical
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.train.checkpoint import load_checkpoint, save_checkpoint
from mfcalc.train.distributed import DistContext
from mfcalc.train.loss import LossWeights, batch_stats, total_loss
from mfcalc.train.metrics import accumulate_stats, residual_data, stats_to_metrics

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
LOG = "log.csv"
CONFIG = "config.toml"
SPLIT = "split.npz"


# ---- data ------------------------------------------------------------------------------------
def load_run_data(cfg: RunConfig) -> MFData:
    """Read every file once with all fidelities bound to it; columns in config order."""
    by_file: Dict[str, List[FidelitySpec]] = {}
    for f in cfg.fidelities:
        for path in (f.files or cfg.data):
            by_file.setdefault(os.path.abspath(path), []).append(f.spec())
    parts = [read_file(path, specs) for path, specs in by_file.items()]
    data = concatenate(parts).with_fidelities([f.name for f in cfg.fidelities])
    if len(parts) > 1:  # one file per level of theory over shared geometries: one structure, all labels
        data, n_merged = merge_identical(data)
        if n_merged:
            print(f"merged {n_merged} structures with identical geometry across/within files")
    return data


class TrainStep(nn.Module):
    """Everything one optimisation step needs in a single ``forward`` (what DDP wraps).

    Returns residual energies (sum of levels >= 1) (B, F), forces (A, F, 3) for the
    requested fidelities (zeros elsewhere) with ``create_graph`` so the force loss trains
    the weights, and the hierarchicality (B, F).
    """

    def __init__(self, model: MultiFidelityHipnn):
        super().__init__()
        self.model = model

    def forward(self, numbers: Tensor, positions: Tensor, mol_index: Tensor, n_mol: int, cell: Tensor, pbc: Tensor,
                force_fids: List[int]):
        positions = positions.detach().requires_grad_(bool(force_fids))
        out = self.model(numbers, positions, mol_index, n_mol, cell, pbc)
        pred = out["energy_levels"][:, 1:].sum(dim=1)
        cols = []
        for k in range(pred.shape[1]):
            if k in force_fids:
                g = torch.autograd.grad(pred[:, k].sum(), positions, create_graph=True)[0]
                cols.append(-g)
            else:
                cols.append(torch.zeros_like(positions))
        return pred, torch.stack(cols, dim=1), out["hierarchicality"]


# ---- progress --------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label = total, label
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"loss {loss:8.3f} {rate:5.1f} batch/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# ---- helpers ---------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return torch.device(name)


def _check_out_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"cannot write to output directory {path!r}: {exc.strerror or exc}") from None


def _atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _log_csv(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return ""
    fields = list(rows[0].keys())
    for r in rows[1:]:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _weights(cfg: RunConfig, data: MFData) -> LossWeights:
    return LossWeights(
        energy=[f.weight_energy for f in cfg.fidelities],
        forces=[f.weight_forces if f.name in data.forces else 0.0 for f in cfg.fidelities],
        hier=[f.weight_hier for f in cfg.fidelities],
    )


def _check_labels(data: MFData, split: Dict[str, np.ndarray]) -> None:
    em = data.energy_mask
    for k, name in enumerate(data.fidelities):
        if not em[:, k].any():
            raise ValueError(f"no structure is labelled with an energy for fidelity {name!r}")
        if not em[split["train"], k].any():
            raise ValueError(f"no structure in the training split carries an energy for fidelity {name!r}")


def _valid_loss(stats: Tensor, weights: LossWeights) -> float:
    """Validation objective: the training loss without the regulariser (kcal/mol)."""
    zero = torch.zeros(stats.shape[0], dtype=stats.dtype)
    return float(total_loss(stats, zero, torch.tensor(1.0, dtype=stats.dtype), weights))


# ---- training ---------------------------------------------------------------------------------
def train(cfg: RunConfig, resume: bool = False, log: Callable[[str], None] = print,
          data: Optional[MFData] = None, split: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
    """Run one training job as described by ``cfg``; returns the metrics written to metrics.json.

    ``data`` replaces reading ``cfg``'s files (its fidelities must be those of ``cfg``, in
    order) and ``split`` (train/valid/test structure indices into it) replaces the split
    drawn from ``cfg``: for programmatic use such as benchmarks that hide labels and compare
    experiments on one fixed split.

    PyTorch's deterministic algorithms are switched on for the run (and restored after):
    the scatter-adds of the interaction layer otherwise sum in a thread-dependent order, so
    two runs with the same seed would drift apart.  On CPU this costs nothing measurable.

    Raises:
        ValueError / FileNotFoundError: bad configuration or data, with a message naming it.
    """
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, resume, log, data, split)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _train(cfg: RunConfig, resume: bool, log: Callable[[str], None], data: Optional[MFData],
           given_split: Optional[Dict[str, np.ndarray]]) -> Dict[str, Any]:
    cfg.validate()
    t_cfg = cfg.train
    device = resolve_device(t_cfg.device)
    ctx = DistContext.from_env(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    say = log if ctx.is_main else (lambda *_: None)
    dtype = torch.float64 if t_cfg.dtype == "float64" else torch.float32
    out = cfg.out
    if ctx.is_main:
        _check_out_dir(out)
    ctx.barrier()
    ckpt_path = os.path.join(out, CHECKPOINT)
    state: Optional[Dict[str, Any]] = load_checkpoint(ckpt_path) if resume else None

    if data is None:
        data = load_run_data(cfg)
    elif list(data.fidelities) != [f.name for f in cfg.fidelities]:
        raise ValueError(f"data fidelities {data.fidelities} differ from the config's {[f.name for f in cfg.fidelities]}")
    keep = np.arange(len(data))  # rows of the full data set that are used (split.npz refers to those)
    if given_split is not None and t_cfg.max_structures is not None:
        raise ValueError("a given split cannot be combined with max_structures")
    if t_cfg.max_structures is not None and t_cfg.max_structures < len(data):
        keep = np.sort(np.random.default_rng(t_cfg.seed).choice(len(data), t_cfg.max_structures, replace=False))
        data = data.subset(keep)
    say(f"data: {data.summary()}")
    if state is not None:
        split = {k: np.asarray(v) for k, v in state["split"].items()}
        species = list(state["species"])
        reference = np.asarray(state["reference"])
    else:
        if given_split is not None:
            split = {k: np.asarray(given_split[k], dtype=np.int64) for k in ("train", "valid", "test")}
        else:
            split = split_indices(data, t_cfg.valid_fraction, t_cfg.test_fraction, by=t_cfg.split_by,
                                  seed=t_cfg.seed)
        species = sorted(cfg.model.species or np.unique(np.asarray(data.numbers)).astype(int).tolist())
        reference = None
    _check_labels(data, split)
    if reference is None:
        reference = fit_reference_energies(data, species, split["train"])
    say(f"split ({t_cfg.split_by}): train {len(split['train'])}, valid {len(split['valid'])}, "
        f"test {len(split['test'])}; species {species}")
    resid = residual_data(data, species, reference)
    weights = _weights(cfg, data)
    fmask = resid.forces_mask()
    force_cols = [k for k, w in enumerate(weights.forces) if w > 0]

    if ctx.is_main:
        _atomic_write_text(os.path.join(out, CONFIG), cfg.to_toml() + "\n")
        # indices into the data as read from the files (before any --max-structures subsample)
        np.savez(os.path.join(out, SPLIT), **{k: keep[v] for k, v in split.items()})

    model_kw = {k: v for k, v in asdict(cfg.model).items() if k != "species"}
    fid_names = [f.name for f in cfg.fidelities]
    finished: List[Dict[str, Tensor]] = list(state["finished"]) if state else []
    log_rows: List[Dict[str, Any]] = list(state["log_rows"]) if state else []
    deadline = time.monotonic() + 60.0 * t_cfg.max_minutes if t_cfg.max_minutes is not None else None
    out_of_time = False
    t_run = time.perf_counter()

    for member in range(len(finished), t_cfg.ensemble):
        torch.manual_seed(t_cfg.seed + 1000 * member)
        model = MultiFidelityHipnn(species, fid_names, **model_kw)
        model.heads.set_reference_energies(torch.tensor(reference))
        model = model.to(device=device, dtype=dtype)
        step = TrainStep(model)
        if ctx.enabled:
            step = nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=t_cfg.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t_cfg.lr_factor, patience=t_cfg.lr_patience,
                                                           threshold=1e-4)
        rng = np.random.default_rng([t_cfg.seed, member])
        epoch, best_loss, bad_epochs = 0, float("inf"), 0
        best_state = copy.deepcopy(model.state_dict())
        if state is not None and state.get("member") == member and state.get("model") is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            epoch, best_loss, bad_epochs = state["epoch"], state["best_loss"], state["bad_epochs"]
            best_state = state["best_state"]
            say(f"resumed member {member + 1} after epoch {epoch}")
        state = None
        tag = f"[{member + 1}/{t_cfg.ensemble}]" if t_cfg.ensemble > 1 else ""

        while epoch < t_cfg.epochs and bad_epochs < t_cfg.early_stopping \
                and opt.param_groups[0]["lr"] >= t_cfg.min_lr:
            t0 = time.perf_counter()
            order = rng.permutation(split["train"])
            n_batches = (len(order) + t_cfg.batch_size - 1) // t_cfg.batch_size
            bar = Progress(n_batches, f"{tag}epoch {epoch + 1}", ctx.is_main)
            model.train()
            train_loss_sum = 0.0
            for b in range(n_batches):
                global_batch = order[b * t_cfg.batch_size:(b + 1) * t_cfg.batch_size]
                mine = global_batch[ctx.rank::ctx.world]
                batch = collate(resid, mine, dtype=dtype, forces_mask=fmask).to(device)
                fids = [k for k in force_cols if bool(batch.forces_mask[:, k].any())]
                pred, forces, hier = step(batch.numbers, batch.positions, batch.mol_index, batch.n_mol, batch.cell,
                                          batch.pbc, fids)
                stats = batch_stats(pred, batch.energy, batch.energy_mask, forces, batch.forces, batch.forces_mask,
                                    batch.mol_index, fids, energy_per_atom=t_cfg.energy_loss == "atom")
                packed = torch.cat([stats.reshape(-1), hier.sum(dim=0),
                                    torch.tensor([float(batch.n_mol)], dtype=stats.dtype, device=stats.device)])
                packed = ctx.sum_differentiable(packed)
                n_f = stats.numel()
                loss = total_loss(packed[:n_f].reshape(stats.shape), packed[n_f:-1], packed[-1], weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t_cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, t_cfg.grad_clip)
                opt.step()
                train_loss_sum += float(loss.detach())
                bar.update(b + 1, train_loss_sum / (b + 1))
                if deadline is not None and time.monotonic() > deadline:
                    out_of_time = True
                    break
            bar.close()
            epoch += 1
            model.eval()
            mine_valid = split["valid"][ctx.rank::ctx.world]
            vstats = ctx.sum(accumulate_stats(model, resid, mine_valid, fid_names, t_cfg.batch_size, device, dtype,
                                              forces_mask=fmask))
            vloss = _valid_loss(vstats, weights)
            sched.step(vloss)
            improved = vloss < best_loss
            if improved:  # keep the best weights; only a relative gain of 1e-4 resets the patience
                bad_epochs = 0 if vloss < best_loss * (1.0 - 1e-4) else bad_epochs + 1
                best_loss = vloss
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            vm = stats_to_metrics(vstats, fid_names)
            row: Dict[str, Any] = {"member": member + 1, "epoch": epoch, "seconds": round(time.perf_counter() - t0, 3),
                                   "lr": opt.param_groups[0]["lr"], "train_loss": train_loss_sum / max(b + 1, 1),
                                   "valid_loss": vloss}
            parts = []
            for name in fid_names:
                e, f = vm[name]["energy_rmse_kcal_mol"], vm[name]["forces_rmse_kcal_mol_a"]
                row[f"valid_{name}_energy_rmse_kcal_mol"] = e
                row[f"valid_{name}_forces_rmse_kcal_mol_a"] = f
                parts.append(f"{name} E {e:.3f}" + (f" F {f:.3f}" if f is not None else "") if e is not None
                             else f"{name} -")
            log_rows.append(row)
            say(f"{tag}epoch {epoch:4d}/{t_cfg.epochs}  {row['seconds']:6.1f}s  lr {row['lr']:.2e}  "
                f"train {row['train_loss']:8.3f}  valid {vloss:8.3f}  | " + " | ".join(parts)
                + ("  *" if improved else ""))
            if ctx.is_main:
                save_checkpoint({
                    "config": cfg.to_dict(), "split": split, "species": species, "reference": reference,
                    "member": member, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": rng.bit_generator.state, "best_loss": best_loss,
                    "bad_epochs": bad_epochs, "best_state": best_state, "finished": finished, "log_rows": log_rows,
                }, ckpt_path)
                _atomic_write_text(os.path.join(out, LOG), _log_csv(log_rows))
            if out_of_time:
                say(f"--max-minutes {t_cfg.max_minutes} reached: stopping and exporting the best weights so far")
                break
        finished.append(best_state)
        if ctx.is_main:
            save_checkpoint({
                "config": cfg.to_dict(), "split": split, "species": species, "reference": reference,
                "member": member + 1, "epoch": 0, "model": None, "finished": finished, "log_rows": log_rows,
            }, ckpt_path)
        if out_of_time:
            break

    # ---- evaluate the ensemble of best weights and export ---------------------------------------
    members = []
    for sd in finished:
        m = MultiFidelityHipnn(species, fid_names, **model_kw).to(device=device, dtype=dtype)
        m.load_state_dict(sd)
        m.heads.levels[0].weight.requires_grad_(False)
        members.append(m)
    ensemble = Ensemble(members).eval()
    metrics: Dict[str, Any] = {}
    for name in ("valid", "test"):
        idx = split[name][ctx.rank::ctx.world]
        stats = ctx.sum(accumulate_stats(ensemble, resid, idx, fid_names, t_cfg.batch_size, device, dtype,
                                         forces_mask=fmask))
        metrics[name] = stats_to_metrics(stats, fid_names)
    metrics["ensemble_size"] = len(members)
    metrics["epochs_run"] = len(log_rows)
    metrics["stopped_by_time"] = out_of_time
    if ctx.is_main:
        training = {
            "data": sorted({os.path.abspath(p) for f in cfg.fidelities for p in (f.files or cfg.data)}),
            "fidelities": {f.name: {"energy": f.energy, "forces": f.forces, "energy_unit": f.energy_unit,
                                    "forces_unit": f.forces_unit} for f in cfg.fidelities},
            "n_structures": {k: int(len(v)) for k, v in split.items()},
            "split_by": t_cfg.split_by, "seed": t_cfg.seed, "dtype": t_cfg.dtype,
            "epochs_run": len(log_rows), "seconds": round(time.perf_counter() - t_run, 1),
            "energy_loss": "per structure (total energy)",
        }
        export.save(copy.deepcopy(ensemble), os.path.join(out, MODEL),
                    export.build_metadata(ensemble, training=training, metrics=metrics))
        _atomic_write_text(os.path.join(out, METRICS), json.dumps(metrics, indent=1) + "\n")
        say(f"wrote {os.path.join(out, MODEL)}, {METRICS}, {LOG}, {CONFIG}, {CHECKPOINT}")
    ctx.barrier()
    ctx.close()
    return metrics
