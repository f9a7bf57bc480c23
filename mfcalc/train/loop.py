"""A training run, as a short sequence of named steps: prepare -> fit each member -> export.

One call of :func:`train` is one ``mfcalc-train`` run.  Every epoch ends with an atomic
checkpoint holding everything needed to continue bit-for-bit (weights, optimiser,
scheduler, shuffling RNG, early-stopping state, log), so ``--resume`` after a kill or a
``--max-minutes`` stop gives the same result as an uninterrupted run with the same seed.
Under ``torchrun`` the same code runs DistributedDataParallel: every rank takes its share
of each global batch and the loss is formed from globally summed error statistics.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from mfcalc import export, keys
from mfcalc.config import RunConfig
from mfcalc.data.dataset import molecule_codes
from mfcalc.data.records import MFData
from mfcalc.device import resolve_device, resolve_dtype
from mfcalc.metrics import accumulate_stats, centred_stats, group_sums_buffer, residual_data, stats_to_metrics
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.train import outputs, parallel
from mfcalc.train.checkpoint import load_checkpoint, save_checkpoint
from mfcalc.train.distributed import DistContext
from mfcalc.train.fit import MemberResult, fit_member
from mfcalc.train.prepare import RunData, prepare_run

EARLY_BEST_EPOCHS = 3  # a best epoch this early (of many run) means the model barely trained


def train(
    cfg: RunConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    data: Optional[MFData] = None,
    split: Optional[Dict[str, np.ndarray]] = None,
) -> Dict[str, Any]:
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
        return _run(cfg.validate(), resume, log, data, split)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _run(
    cfg: RunConfig,
    resume: bool,
    log: Callable[[str], None],
    data: Optional[MFData],
    given_split: Optional[Dict[str, np.ndarray]],
) -> Dict[str, Any]:
    settings = cfg.train
    device = resolve_device(settings.device)
    ctx = DistContext.from_env(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    say = log if ctx.is_main else (lambda *_: None)
    dtype = resolve_dtype(settings.dtype)
    if ctx.is_main:
        outputs.prepare_out_dir(cfg.out)
    ctx.barrier()
    ckpt_path = os.path.join(cfg.out, outputs.CHECKPOINT)
    state: Optional[Dict[str, Any]] = load_checkpoint(ckpt_path) if resume else None

    run = prepare_run(cfg, data, given_split, state, say)
    if ctx.is_main:
        outputs.write_config(cfg.out, cfg.to_toml())
        outputs.write_split(cfg.out, split_rows(run))

    finished: List[Dict[str, Tensor]] = list(state["finished"]) if state else []
    summaries: List[Dict[str, Any]] = list(state.get("summaries", [])) if state else []
    log_rows: List[Dict[str, Any]] = list(state["log_rows"]) if state else []
    end = time.monotonic() + 60.0 * settings.max_minutes if settings.max_minutes is not None else None
    fixed = {
        "config": cfg.to_dict(),
        "split": run.split,
        "species": run.species,
        "reference": run.reference,
        "data_fingerprint": run.fingerprint,
    }
    t_run = time.perf_counter()
    out_of_time = False

    def checkpoint(member_state: Dict[str, Any]) -> None:
        if ctx.is_main:
            save_checkpoint(
                {**fixed, **member_state, "finished": finished, "summaries": summaries, "log_rows": log_rows}, ckpt_path
            )
            outputs.write_log(cfg.out, log_rows)

    todo = list(range(len(finished), settings.ensemble))
    if settings.member_workers > 1 and len(todo) > 1:
        if ctx.enabled:
            raise ValueError("member_workers > 1 cannot be combined with torchrun (DDP): use one or the other")
        if state is None:  # the run's split and references, for a resume (a member in progress stays)
            checkpoint({"member": todo[0], "epoch": 0, "model": None})
        results = parallel.fit_members_in_parallel(
            cfg, run, todo, state, log_rows, device, dtype, end, say, lambda: outputs.write_log(cfg.out, log_rows)
        )
        for member in todo:
            result = results[member]
            finished.append(result.best_state)
            summaries.append(result.summary())
            _report_member(result, member, settings.ensemble, say)
            out_of_time |= result.out_of_time
        checkpoint({"member": settings.ensemble, "epoch": 0, "model": None})
        parallel.finish(cfg.out, todo)
        todo = []
    for member in todo:
        # a member a worker process of an earlier start (member_workers > 1) trained or began
        # continues from there, else from the run's checkpoint
        done, resume_state = parallel.resume_member(cfg.out, member, state, log_rows)
        # the time left is shared by the members still to train: every member gets its turn
        deadline = None if end is None else time.monotonic() + (end - time.monotonic()) / (settings.ensemble - member)
        if done is not None:
            result = done
        else:
            result = fit_member(cfg, run, member, ctx, device, dtype, log_rows, checkpoint, say, deadline, resume_state)
        state = None
        finished.append(result.best_state)
        summaries.append(result.summary())
        _report_member(result, member, settings.ensemble, say)
        checkpoint({"member": member + 1, "epoch": 0, "model": None})
        if ctx.is_main:
            parallel.finish(cfg.out, [member])
        out_of_time |= result.out_of_time

    metrics = _export(
        cfg, run, finished, summaries, log_rows, ctx, device, dtype, out_of_time, time.perf_counter() - t_run, say
    )
    if ctx.is_main and log_rows:
        outputs.write_learning_curve(cfg.out, say)
    ctx.barrier()
    ctx.close()
    return metrics


def _report_member(result: MemberResult, member: int, n_members: int, say: Callable[[str], None]) -> None:
    """Say which epoch's weights are exported and why training stopped; warn when they are
    from the first few epochs of many (the model has then barely trained)."""
    tag = f"member {member + 1}/{n_members}: " if n_members > 1 else ""
    say(
        f"{tag}exporting the weights of epoch {result.best_epoch} (lowest validation loss "
        f"{result.best_loss:.4f}); stopped after epoch {result.epochs_run}: {result.stop_reason}"
    )
    warning = early_best_warning(result.best_epoch, result.epochs_run)
    if warning:
        say(f"WARNING: {tag}{warning}")


def early_best_warning(best_epoch: int, epochs_run: int) -> Optional[str]:
    """The warning for a best epoch among the first few of a longer run, else ``None``."""
    if best_epoch <= EARLY_BEST_EPOCHS and epochs_run >= 2 * EARLY_BEST_EPOCHS:
        return (
            f"the lowest validation loss came at epoch {best_epoch} of {epochs_run}, so the exported model has "
            "barely trained. The validation structures may be unlike the training ones (e.g. unseen molecules "
            "in a grouped split) or the learning rate too high; check log.csv, and raise --min-epochs or "
            "lower --lr"
        )
    return None


def _export(
    cfg: RunConfig,
    run: RunData,
    finished: List[Dict[str, Tensor]],
    summaries: List[Dict[str, Any]],
    log_rows: List[Dict[str, Any]],
    ctx: DistContext,
    device: torch.device,
    dtype: torch.dtype,
    out_of_time: bool,
    seconds: float,
    say: Callable[[str], None],
) -> Dict[str, Any]:
    """Step 3: score the ensemble of best weights on valid/test, write model.pt and metrics.json."""
    fid_names = run.fidelities
    members = []
    for sd in finished:
        m = MultiFidelityHipnn(run.species, fid_names, cfg.model).to(device=device, dtype=dtype)
        m.load_state_dict(sd)
        m.heads.linears()[0].weight.requires_grad_(False)
        members.append(m)
    ensemble = Ensemble(members).eval()
    metrics: Dict[str, Any] = {}
    molecule = scored_molecules(run, cfg.train.molecule_key)
    for name in ("valid", "test"):
        sums = group_sums_buffer(molecule, len(fid_names))
        stats = ctx.sum(
            accumulate_stats(
                ensemble,
                run.residual,
                run.split[name][ctx.rank :: ctx.world],
                fid_names,
                cfg.train.batch_size,
                device,
                dtype,
                forces_mask=run.forces_mask,
                molecule=molecule,
                molecule_sums=sums,
            )
        )
        metrics[name] = stats_to_metrics(stats, fid_names, None if sums is None else centred_stats(ctx.sum(sums)))
    if run.replay is not None and run.source is not None:
        metrics["replay_test"] = forgetting(run, ensemble, cfg.train.batch_size, device, dtype)
    metrics["ensemble_size"] = len(members)
    metrics["epochs_run"] = len(log_rows)
    metrics["stopped_by_time"] = out_of_time
    metrics["members"] = summaries
    warnings = [w for w in (early_best_warning(s["best_epoch"], s["epochs_run"]) for s in summaries) if w]
    if warnings:
        metrics["warnings"] = warnings
    if ctx.is_main:
        training = {
            **asdict(cfg.train),  # the resolved settings themselves, not a hand-built summary
            "data": sorted({os.path.abspath(p) for f in cfg.fidelities for p in (f.files or cfg.data)}),
            # key bindings of every head: this run's, and those the source file records for the heads
            # it carries over (a later fine-tuning run replays the original data with them)
            "fidelities": {
                **carried_bindings(run),
                **{
                    f.name: {
                        "energy": f.energy,
                        "forces": f.forces,
                        "energy_unit": f.energy_unit,
                        "forces_unit": f.forces_unit,
                        "weight_energy": f.weight_energy,
                        "weight_forces": f.weight_forces,
                        "weight_hier": f.weight_hier,
                        "weight_relative": f.weight_relative,
                    }
                    for f in cfg.fidelities
                },
            },
            "n_structures": {k: int(len(v)) for k, v in run.split.items()},
            "heads": list(fid_names),
            "epochs_run": len(log_rows),
            "seconds": round(seconds, 1),
            "members": summaries,
        }
        export.save(
            copy.deepcopy(ensemble),
            os.path.join(cfg.out, outputs.MODEL),
            export.build_metadata(ensemble, training=training, metrics=metrics, domain=training_domain(run)),
        )
        outputs.write_metrics(cfg.out, metrics)
        say(
            f"wrote {os.path.join(cfg.out, outputs.MODEL)}, {outputs.METRICS}, {outputs.LOG}, {outputs.CONFIG}, "
            f"{outputs.CHECKPOINT}"
        )
    return metrics


def split_rows(run: RunData) -> Dict[str, np.ndarray]:
    """What split.npz records: rows of the data as read (before any --max-structures subsample)
    and, for a fine-tuning run with --replay, ``replay_<split>`` rows of the replay file."""
    n_new = len(run.rows)
    out = {k: run.rows[v[v < n_new]] for k, v in run.split.items()}
    if run.replay is not None:
        out.update({f"replay_{k}": v[v >= n_new] - n_new for k, v in run.split.items()})
    return out


def carried_bindings(run: RunData) -> Dict[str, Any]:
    """The source file's recorded key bindings of the heads a fine-tuning run carries over."""
    if run.source is None:
        return {}
    recorded = (run.source.meta.get(keys.META_TRAINING) or {}).get("fidelities") or {}
    return {name: b for name, b in recorded.items() if name in run.fidelities}


def scored_molecules(run: RunData, key: str) -> Optional[np.ndarray]:
    """Molecule codes for the final valid/test metrics' within-molecule errors (relE): those of
    a relative-energy loss, else from the data's ``key`` column where it has one."""
    if run.molecule is not None:
        return run.molecule
    return molecule_codes(run.data, key) if key in run.data.groups else None


def forgetting(
    run: RunData, ensemble: Ensemble, batch_size: int, device: torch.device, dtype: torch.dtype
) -> Dict[str, Any]:
    """The original heads on the held-out part of the replayed original data, before (the
    source file) and after fine-tuning: whether the model forgot what it knew."""
    source = run.source
    if run.replay is None or source is None:
        return {}
    rows = np.intersect1d(run.split["test"], run.replay)
    old = run.data.subset(rows).with_fidelities(source.fidelities)
    reference = np.array([[source.reference(f)[z] for z in source.species] for f in source.fidelities])
    before_data = residual_data(old, source.species, reference)
    after_data = residual_data(old, run.species, run.reference[[run.fidelities.index(f) for f in source.fidelities]])
    idx = np.arange(len(old))
    before = accumulate_stats(
        source.ensemble.to(device=device, dtype=dtype), before_data, idx, source.fidelities, batch_size, device, dtype
    )
    after = accumulate_stats(ensemble, after_data, idx, run.fidelities, batch_size, device, dtype)
    return {
        "structures": int(len(rows)),
        "before": stats_to_metrics(before, source.fidelities),
        "after": stats_to_metrics(after, source.fidelities),
    }


def training_domain(run: RunData) -> Dict[str, Any]:
    """What the training structures covered, for the model card and for domain warnings."""
    data, rows = run.data, run.split["train"]
    heavy = data.heavy_atoms[rows]

    def elements(structures: np.ndarray) -> List[int]:
        return sorted(int(z) for z in np.unique(np.asarray(data.numbers[data.atom_index(structures)])))

    labelled = {name: elements(rows[np.isfinite(data.energy[rows, k])]) for k, name in enumerate(data.fidelities)}
    return {
        "elements": elements(rows),
        "elements_by_fidelity": labelled,  # a head knows an element only through the others when it is missing here
        "heavy_atoms": [int(heavy.min()), int(heavy.max())] if len(heavy) else [0, 0],
        "n_structures": int(len(rows)),
    }
