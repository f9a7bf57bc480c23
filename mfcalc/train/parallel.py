"""Ensemble members trained at once, one process each (``member_workers`` > 1).

Members are independent fits of the same data with their own seeds, so a 4-member ensemble on
a machine with several cores need not take four times as long as one member: up to
``member_workers`` processes each fit one member with an equal share of the CPU threads.
Every member follows exactly the computation it would follow alone (same seed, same
shuffling, deterministic kernels), so the exported ensemble is the one the sequential run
produces (tested).

Resumable like a sequential run: each worker writes its own ``checkpoint.member<K>.pt`` every
epoch, and its finished result, before the run's ``checkpoint.pt`` takes the finished members
over in order.  A member that the sequential run had in progress resumes from ``checkpoint.pt``.
"""

from __future__ import annotations

import math
import os
import queue
import time
import traceback
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.multiprocessing as mp

from mfcalc.config import RunConfig
from mfcalc.train.checkpoint import load_checkpoint, save_checkpoint
from mfcalc.train.distributed import DistContext
from mfcalc.train.fit import MemberResult, fit_member
from mfcalc.train.prepare import RunData
from mfcalc.workers import exit_with_parent

POLL_SECONDS = 1.0


def member_checkpoint(out: str, member: int) -> str:
    """The checkpoint of one member trained in a worker process (1-based in the name, as in logs)."""
    return os.path.join(out, f"checkpoint.member{member + 1}.pt")


def threads_per_worker(workers: int) -> int:
    """An equal share of this process's CPU threads (at least one)."""
    return max(1, torch.get_num_threads() // workers)


def fit_members_in_parallel(
    cfg: RunConfig,
    run: RunData,
    members: List[int],
    state: Optional[Dict[str, Any]],
    log_rows: List[Dict[str, Any]],
    device: torch.device,
    dtype: torch.dtype,
    end: Optional[float],
    say: Callable[[str], None],
    on_row: Callable[[], None],
) -> Dict[int, MemberResult]:
    """Fit ``members`` in up to ``cfg.train.member_workers`` processes; returns their results.

    Args:
        state: the run's checkpoint being resumed (its in-progress member continues from it).
        log_rows: the run's epoch log: every worker's rows are appended as they arrive, and a
            resumed member's rows already in it are kept.
        end: ``time.monotonic()`` at which the run's time is up (``max_minutes``), else None.
        on_row: called after rows arrive (the caller rewrites log.csv).

    Raises:
        RuntimeError: a worker failed; what the others finished is kept for ``--resume``.
    """
    workers = min(cfg.train.member_workers, len(members))
    threads = threads_per_worker(workers)
    # the workers do not need the source model (a TorchScript file cannot be pickled): the
    # members to start from are already adapted in ``run.initial``
    shipped = replace(run, source=None)
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    results: Dict[int, MemberResult] = {}
    pending = list(members)
    running: Dict[int, Any] = {}
    say(f"training members {', '.join(str(m + 1) for m in members)} in {workers} processes, {threads} thread(s) each")
    try:
        while pending or running:
            while pending and len(running) < workers:
                member = pending.pop(0)
                done, resume = resume_member(cfg.out, member, state, log_rows)
                if done is not None:
                    results[member] = done
                    say(f"member {member + 1}: already finished (from {member_checkpoint(cfg.out, member)})")
                    continue
                rows = [r for r in log_rows if r["member"] == member + 1]
                # the time left is shared by the rounds of members still to start
                rounds = math.ceil((len(pending) + len(running) + 1) / workers)
                seconds = None if end is None else max(0.0, (end - time.monotonic()) / rounds)
                proc = ctx.Process(
                    target=_worker,
                    args=(cfg, shipped, member, resume, rows, threads, seconds, str(device), dtype, messages),
                    daemon=True,
                )
                proc.start()
                running[member] = proc
            _drain(cfg.out, messages, results, log_rows, on_row, say, timeout=POLL_SECONDS)
            for member, proc in list(running.items()):
                if member in results:
                    proc.join()
                    del running[member]
                elif not proc.is_alive():
                    _drain(cfg.out, messages, results, log_rows, on_row, say, timeout=0.0)
                    if member not in results:
                        raise RuntimeError(
                            f"the process training member {member + 1} ended without a result (exit code "
                            f"{proc.exitcode}); finished members and the last epoch of the others are kept: "
                            "run again with --resume"
                        )
    finally:
        for proc in running.values():
            if proc.is_alive():
                proc.terminate()
            proc.join()
    return results


def _drain(
    out: str,
    messages: Any,
    results: Dict[int, MemberResult],
    log_rows: List[Dict[str, Any]],
    on_row: Callable[[], None],
    say: Callable[[str], None],
    timeout: float,
) -> None:
    """Take every message the workers sent: epoch rows, log lines, results, failures."""
    got_row = False
    while True:
        try:
            kind, member, payload = messages.get(timeout=timeout) if timeout > 0 else messages.get_nowait()
        except queue.Empty:
            break
        timeout = 0.0
        if kind == "row":
            log_rows.append(payload)
            got_row = True
        elif kind == "say":
            say(payload)
        elif kind == "done":  # the result itself is in the member's checkpoint (no tensors on the queue)
            done = _finished_in_file(out, member)
            if done is None:
                raise RuntimeError(f"member {member + 1} reported a result that {member_checkpoint(out, member)} lacks")
            results[member] = done
        elif kind == "error":
            raise RuntimeError(f"training member {member + 1} failed:\n{payload}")
    if got_row:
        log_rows.sort(key=lambda r: (r["member"], r["epoch"]))
        on_row()


def _finished_in_file(out: str, member: int) -> Optional[MemberResult]:
    path = member_checkpoint(out, member)
    if not os.path.exists(path):
        return None
    result = load_checkpoint(path).get("result")
    return MemberResult(**result) if result is not None else None


def resume_member(
    out: str, member: int, state: Optional[Dict[str, Any]], log_rows: List[Dict[str, Any]]
) -> Tuple[Optional[MemberResult], Optional[Dict[str, Any]]]:
    """Where ``member`` stands: (its result, None) when a worker finished it; else (None, the
    state to continue from): the further on of its own checkpoint and the run's checkpoint
    (where a sequential run keeps the member in progress), or None for a fresh start.  The
    member's rows in ``log_rows`` become those of what it continues from."""
    own = load_checkpoint(member_checkpoint(out, member)) if os.path.exists(member_checkpoint(out, member)) else None
    if own is not None and own.get("result") is not None:
        _keep_rows(log_rows, member, own["rows"])
        return MemberResult(**own["result"]), None
    in_run = state if state is not None and state.get("member") == member and state.get("model") is not None else None
    if own is not None and (in_run is None or own["epoch"] >= in_run["epoch"]):
        _keep_rows(log_rows, member, own["rows"])
        return None, own
    if in_run is not None:
        epochs = int(in_run["epoch"])
        _keep_rows(log_rows, member, [r for r in log_rows if r["member"] == member + 1 and r["epoch"] <= epochs])
        return None, in_run
    _keep_rows(log_rows, member, [])
    return None, None


def _keep_rows(log_rows: List[Dict[str, Any]], member: int, rows: List[Dict[str, Any]]) -> None:
    """Make ``rows`` the member's rows in the run's log."""
    log_rows[:] = [r for r in log_rows if r["member"] != member + 1] + list(rows)
    log_rows.sort(key=lambda r: (r["member"], r["epoch"]))


def _worker(
    cfg: RunConfig,
    run: RunData,
    member: int,
    resume: Optional[Dict[str, Any]],
    rows: List[Dict[str, Any]],
    threads: int,
    seconds: Optional[float],
    device: str,
    dtype: torch.dtype,
    messages: Any,
) -> None:
    """One member in its own process: the same fit as in the run's own process, reporting back."""
    exit_with_parent()
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        path = member_checkpoint(cfg.out, member)
        deadline = None if seconds is None else time.monotonic() + seconds

        class Rows(list):
            """The member's log: each row is sent to the run's process as it is appended."""

            def append(self, row: Dict[str, Any]) -> None:
                super().append(row)
                messages.put(("row", member, row))

        log = Rows(rows)

        def checkpoint(member_state: Dict[str, Any]) -> None:
            save_checkpoint({**member_state, "rows": list(log)}, path)

        result = fit_member(
            cfg,
            run,
            member,
            DistContext(),
            torch.device(device),
            dtype,
            log,
            checkpoint,
            lambda text: messages.put(("say", member, text)),
            deadline,
            resume,
            progress=False,
        )
        save_checkpoint({"member": member, "result": _result_fields(result), "rows": list(log)}, path)
        messages.put(("done", member, None))
    except BaseException:  # everything, so the run's process reports it instead of waiting
        messages.put(("error", member, traceback.format_exc()))
        raise


def _result_fields(result: MemberResult) -> Dict[str, Any]:
    return {
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_loss": result.best_loss,
        "epochs_run": result.epochs_run,
        "stop_reason": result.stop_reason,
        "out_of_time": result.out_of_time,
    }


def finish(out: str, members: List[int]) -> None:
    """Remove the members' own checkpoints once the run's checkpoint holds their results."""
    for member in members:
        path = member_checkpoint(out, member)
        if os.path.exists(path):
            os.remove(path)


__all__: Tuple[str, ...] = (
    "fit_members_in_parallel",
    "finish",
    "member_checkpoint",
    "resume_member",
    "threads_per_worker",
)
