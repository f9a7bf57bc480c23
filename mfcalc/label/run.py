"""Label structures at levels of theory, resumably and in parallel (``mfcalc-label``).

Every input structure is added to the :class:`~mfcalc.label.store.LabelStore` first (so the
file lists all of them, with NaN for what is not computed yet), then the missing labels are
computed structure by structure, in worker processes when asked, and journaled as they
finish.  A structure a level cannot treat (an element outside its basis set, atoms on top of
each other) and a calculation that does not converge are recorded as failures with the
reason and skipped; nothing stops the batch.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from mfcalc.data.dataset import read_structures
from mfcalc.device import set_threads
from mfcalc.elements import symbols
from mfcalc.label.levels import LabelError, Level, check_available, get_level
from mfcalc.label.store import LabelStore
from mfcalc.progress import ProgressLines, stderr_line
from mfcalc.workers import exit_with_parent

MIN_DISTANCE = 0.5  # Angstrom: closer atoms make a structure no method should be asked about


@dataclass
class Task:
    key: str
    numbers: np.ndarray
    positions: np.ndarray
    charge: int
    multiplicity: int
    jobs: List[Tuple[str, bool]]  # (level, forces)


Outcome = Tuple[str, Optional[float], Optional[np.ndarray], float, str]  # level, energy, forces, seconds, error


def _init_worker(threads: int) -> None:
    set_threads(threads)
    exit_with_parent()  # a killed run leaves no stray calculations


def compute(task: Task) -> Tuple[str, List[Outcome]]:
    """Run every job of one structure; errors become outcomes, never exceptions."""
    outcomes: List[Outcome] = []
    for name, forces in task.jobs:
        t0 = time.perf_counter()
        try:
            energy, f = get_level(name).compute(task.numbers, task.positions, task.charge, task.multiplicity, forces)
            if not np.isfinite(energy) or (f is not None and not np.isfinite(f).all()):
                raise LabelError("the engine returned a non-finite energy or force")
            outcomes.append((name, energy, f, time.perf_counter() - t0, ""))
        except LabelError as exc:
            outcomes.append((name, None, None, time.perf_counter() - t0, str(exc)))
        except Exception as exc:  # an engine error we did not foresee: record it, keep the batch going
            outcomes.append((name, None, None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"))
    return task.key, outcomes


def structure_problem(numbers: np.ndarray, positions: np.ndarray) -> str:
    """Why no level should be asked about this geometry, or ''."""
    if len(numbers) > 1:
        d = np.linalg.norm(positions[:, None] - positions[None], axis=2) + np.eye(len(numbers)) * 1e9
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < MIN_DISTANCE:
            return f"atoms {i} and {j} are {d[i, j]:.2f} A apart (overlapping atoms)"
    return ""


def level_problem(level: Level, numbers: np.ndarray) -> str:
    bad = sorted({int(z) for z in numbers} - set(level.elements))
    return f"element(s) {', '.join(symbols(bad))} not available at {level.name} ({level.description})" if bad else ""


def label(
    inputs: Sequence[str],
    levels: Sequence[str],
    out: str,
    forces: Optional[Sequence[str]] = None,
    no_forces: Optional[Sequence[str]] = None,
    workers: int = 1,
    threads: int = 1,
    charge: Optional[int] = None,
    multiplicity: Optional[int] = None,
    merge_seconds: float = 300.0,
    retry_failed: bool = False,
    drop_unlabelled: bool = False,
    say: Callable[[str], None] = stderr_line,
) -> Dict[str, Dict[str, float]]:
    """Label every structure of ``inputs`` at ``levels`` into the HDF5 file ``out``.

    Args:
        inputs: files mfcalc reads (ANI-style HDF5, extxyz or any ASE format).
        levels: level names (:data:`mfcalc.label.levels.LEVELS`).
        forces: levels that also get forces although they do not by default (``ccsd(t)_dz``).
        no_forces: levels computed without forces although they have them by default.
        workers: processes; threads: threads per process (set explicitly).
        charge, multiplicity: for every structure (default: what the file records, else 0 and 1).
        merge_seconds: how often finished results are written into ``out``.
        retry_failed: compute again what failed before (otherwise failures are final).
        drop_unlabelled: remove from ``out`` the structures that are in none of ``inputs``
            and have no label at all (taken out of a list before they were computed).

    Returns:
        per level: energies, forces, failed and CPU hours in the whole file.
    """
    chosen = [get_level(name) for name in levels]
    if not chosen:
        raise ValueError("no level of theory given")
    for lv in chosen:
        check_available(lv)
    want_forces = {lv.name: lv.forces_by_default for lv in chosen}
    for name, value in [(n, True) for n in forces or []] + [(n, False) for n in no_forces or []]:
        if name not in want_forces:
            raise ValueError(f"forces option names level {name!r}, which is not among --levels {', '.join(levels)}")
        want_forces[name] = value
    if workers < 1 or threads < 1:
        raise ValueError("need --workers >= 1 and --threads >= 1")
    restore = set_threads(threads)
    try:
        return _label(
            inputs,
            chosen,
            want_forces,
            out,
            workers,
            threads,
            charge,
            multiplicity,
            merge_seconds,
            retry_failed,
            drop_unlabelled,
            say,
        )
    finally:
        restore()


def _label(
    inputs: Sequence[str],
    chosen: List[Level],
    want_forces: Dict[str, bool],
    out: str,
    workers: int,
    threads: int,
    charge: Optional[int],
    multiplicity: Optional[int],
    merge_seconds: float,
    retry_failed: bool,
    drop_unlabelled: bool,
    say: Callable[[str], None],
) -> Dict[str, Dict[str, float]]:
    store = LabelStore(out, merge_seconds=merge_seconds)
    if retry_failed:
        store.failures.clear()
    tasks, planned = _plan(inputs, chosen, want_forces, store, charge, multiplicity, say)
    if drop_unlabelled:
        say(f"{out}: dropped {store.drop_unlabelled(planned)} unlabelled structure(s) that are in no input")
    n_jobs = sum(len(t.jobs) for t in tasks)
    what = ", ".join(lv.name + (" with forces" if want_forces[lv.name] else "") for lv in chosen)
    say(
        f"{out}: {len(store)} structures; {len(tasks)} need labels ({n_jobs} calculations at {what}), "
        f"{workers} worker(s) x {threads} thread(s)"
    )
    try:
        _execute(tasks, store, workers, threads, say)
    finally:
        store.close()
    summary = store.summary([lv.name for lv in chosen])
    for name, row in summary.items():
        say(
            f"  {name}: {row['energies']} energies, {row['forces']} with forces, {row['failed']} failed, "
            f"{row['hours']:.2f} CPU hours in total"
        )
    return summary


def _plan(
    inputs: Sequence[str],
    chosen: List[Level],
    want_forces: Dict[str, bool],
    store: LabelStore,
    charge: Optional[int],
    multiplicity: Optional[int],
    say: Callable[[str], None],
) -> Tuple[List[Task], Set[str]]:
    """The calculations still to do for the inputs, and the keys of every input structure."""
    tasks: List[Task] = []
    planned: Set[str] = set()
    for path in inputs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input file not found: {path}")
        data, charges, mults = read_structures(path)
        smiles = data.group_labels("smiles") if "smiles" in data.groups else np.full(len(data), "", dtype=object)
        for i in range(len(data)):
            atoms = data.atom_index(np.array([i]))
            z = np.asarray(data.numbers[atoms], dtype=np.int64)
            x = np.asarray(data.positions[atoms], dtype=np.float64)
            q = int(charges[i] if charge is None else charge)
            m = int(mults[i] if multiplicity is None else multiplicity)
            key = store.add(z, x, str(smiles[i]), q, m)
            if key in planned:
                continue
            planned.add(key)
            s = store.structures[key]
            jobs = []
            for lv in chosen:
                if store.has(key, lv.name, want_forces[lv.name]):
                    continue
                problem = structure_problem(s.numbers, s.positions) or level_problem(lv, s.numbers)
                if problem:
                    store.record_failure(key, lv.name, problem)
                    say(
                        f"  skipped {key} ({s.smiles or 'structure ' + str(i) + ' of ' + path}) at {lv.name}: {problem}"
                    )
                    continue
                jobs.append((lv.name, want_forces[lv.name]))
            if jobs:
                tasks.append(Task(key, s.numbers, s.positions, s.charge, s.multiplicity, jobs))
    return tasks, planned


def _store_outcomes(store: LabelStore, key: str, outcomes: List[Outcome], say: Callable[[str], None]) -> int:
    failed = 0
    for name, energy, f, seconds, error in outcomes:
        if error:
            failed += 1
            store.record_failure(key, name, error)
            say(f"  {name} failed for {key} ({store.structures[key].smiles}): {error}; recorded and skipped")
        else:
            store.record(key, name, float(energy), f, seconds)  # type: ignore[arg-type]
    return failed


def _execute(tasks: List[Task], store: LabelStore, workers: int, threads: int, say: Callable[[str], None]) -> None:
    lines = ProgressLines(say, interval=10.0)
    done = failed = 0

    def report(force: bool = False) -> None:
        rate = lines.elapsed / max(done, 1)
        eta = rate * (len(tasks) - done) / 3600.0
        lines(
            f"{done}/{len(tasks)} structures labelled, {failed} calculation(s) failed, "
            f"{rate:.2f} s per structure, about {eta:.2f} h left",
            force=force,
        )

    if workers == 1:
        for task in tasks:
            key, outcomes = compute(task)
            failed += _store_outcomes(store, key, outcomes, say)
            done += 1
            report()
        report(force=True)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh processes: thread settings take effect
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        pending: Set[Future] = set()
        queue = iter(tasks)
        for task in queue:
            pending.add(pool.submit(compute, task))
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                key, outcomes = fut.result()
                failed += _store_outcomes(store, key, outcomes, say)
                done += 1
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(compute, nxt))
            report()
    report(force=True)
