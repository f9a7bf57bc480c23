"""Ensemble members trained at once in worker processes (--member-workers): the same
ensemble as one member at a time, and resumable from any mix of the two."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train_cli import train_args

from conftest import child_processes, process_alive
from mfcalc.cli.train import main as train_main
from mfcalc.train.parallel import member_checkpoint

COMMON = ["--epochs", "3", "--seed", "5", "--dtype", "float64", "--ensemble", "3"]


def finished_states(out):
    return torch.load(out / "checkpoint.pt", weights_only=False)


def without_seconds(log_csv):
    """log.csv's rows without the wall-clock column (the only one that may differ)."""
    rows = [line.split(",") for line in log_csv.read_text().splitlines()]
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1 :] for r in rows]


def assert_same_run(a_dir, b_dir):
    a, b = finished_states(a_dir), finished_states(b_dir)
    assert len(a["finished"]) == len(b["finished"]) == 3
    for sa, sb in zip(a["finished"], b["finished"]):
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert [(r["member"], r["epoch"], r["valid_loss"]) for r in a["log_rows"]] == [
        (r["member"], r["epoch"], r["valid_loss"]) for r in b["log_rows"]
    ]
    assert [m["best_valid_loss"] for m in a["summaries"]] == [m["best_valid_loss"] for m in b["summaries"]]
    assert without_seconds(a_dir / "log.csv") == without_seconds(b_dir / "log.csv")
    assert not any(os.path.exists(member_checkpoint(str(b_dir), m)) for m in range(3))


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    assert train_main(train_args(out, *COMMON)) == 0
    return out


def test_members_in_worker_processes_give_the_sequential_ensemble(sequential, tmp_path, capsys):
    out = tmp_path / "parallel"
    assert train_main(train_args(out, *COMMON, "--member-workers", "2")) == 0
    assert "in 2 processes" in capsys.readouterr().out
    assert_same_run(sequential, out)


def test_a_sequential_run_in_progress_resumes_with_workers(sequential, tmp_path, monkeypatch):
    import mfcalc.train.loop as loop

    out = tmp_path / "switched"
    real_save = loop.save_checkpoint

    def save_then_die(state, path):  # killed after member 2's second epoch, as a long build may be
        real_save(state, path)
        if state["member"] == 1 and state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert train_main(train_args(out, *COMMON)) == 130
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert train_main(train_args(out, *COMMON, "--member-workers", "2", "--resume")) == 0
    assert_same_run(sequential, out)


def both_past_first_epoch(out):
    """Members 1 and 2 each finished an epoch: in progress at epoch >= 1, or already finished
    (a finished member's file holds its result and no epoch: one worker may finish before the
    other is scheduled at all on a busy machine)."""
    for member in (0, 1):
        try:
            state = torch.load(member_checkpoint(str(out), member), weights_only=False)
        except FileNotFoundError:  # not written yet
            return False
        if "result" not in state and state.get("epoch", 0) < 1:
            return False
    return True


@pytest.mark.parametrize("workers_on_resume", ["2", "1"])
def test_killed_workers_leave_checkpoints_that_resume(sequential, tmp_path, workers_on_resume):
    out = tmp_path / "killed"
    proc, log = start_run(out, *COMMON, "--member-workers", "2")
    try:
        wait_for_first_epochs(proc, out, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, as a machine going down would
        proc.wait()
    assert not (out / "model.pt").exists()
    assert train_main(train_args(out, *COMMON, "--member-workers", workers_on_resume, "--resume")) == 0
    assert_same_run(sequential, out)


def test_workers_end_when_the_run_process_alone_is_killed(tmp_path):
    """``kill PID`` of the run (a batch system's limit, the OOM killer) runs no clean-up; its
    member workers must not train on as orphans (here they would have hundreds of epochs left)."""
    out = tmp_path / "orphans"
    proc, log = start_run(out, "--epochs", "500", "--seed", "5", "--ensemble", "2", "--member-workers", "2")
    try:
        wait_for_first_epochs(proc, out, log)
        workers = child_processes(proc.pid)  # the two members' processes (and multiprocessing's tracker)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5  # PR_SET_PDEATHSIG acts at once; the watcher thread within a poll
        while any(process_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(w) for w in workers), "worker processes outlived the run's process"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_run(out, *args):
    log = out.parent / f"{out.name}.log"  # the run's own output, shown if it does not get that far
    cmd = [sys.executable, "-m", "mfcalc.train", *train_args(out, *args)]
    with open(log, "w") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True), log


def wait_for_first_epochs(proc, out, log):
    # both workers past their first epoch; a shared CI machine may be slow to start three
    # interpreters, so the wait is long, but it ends at once if the run itself ends
    deadline = time.time() + 600
    while not both_past_first_epoch(out):
        if proc.poll() is not None or time.time() > deadline:
            state = f"ended with exit code {proc.returncode}" if proc.poll() is not None else "still running"
            pytest.fail(f"the workers did not finish an epoch ({state}); its output:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_member_workers_must_be_positive(tmp_path, capsys):
    assert train_main(train_args(tmp_path / "bad", *COMMON, "--member-workers", "0")) == 2
    assert "member_workers must be >= 1" in capsys.readouterr().err
