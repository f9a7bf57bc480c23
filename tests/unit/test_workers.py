"""Worker processes end with the process that started them, however it ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import process_alive

# a parent that starts one spawn worker and waits forever; the worker writes its pid and sleeps
SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, time

    def worker(path, without_prctl):
        from mfcalc.workers import exit_with_parent  # (imports torch, which loads its libraries)
        if without_prctl:  # as on a system without PR_SET_PDEATHSIG: the watcher thread alone
            import ctypes
            def no_libc(*args, **kwargs):
                raise OSError("no libc here")
            ctypes.CDLL = no_libc
        exit_with_parent()
        open(path, "w").write(str(multiprocessing.current_process().pid))
        time.sleep(600)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        ctx.Process(target=worker, args=(sys.argv[1], sys.argv[2] == "1")).start()
        time.sleep(600)
    """
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from Linux /proc")
@pytest.mark.parametrize("without_prctl", [False, True], ids=["pdeathsig", "watcher-thread"])
def test_a_worker_ends_when_its_parent_is_killed(tmp_path, without_prctl):
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(pid_file), str(int(without_prctl))], start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        assert process_alive(worker)
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up in the parent at all
        parent.wait()
        deadline = time.time() + 5
        while process_alive(worker) and time.time() < deadline:
            time.sleep(0.05)
        assert not process_alive(worker), "the worker outlived its parent"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_a_process_not_started_by_multiprocessing_is_left_alone():
    import threading

    from mfcalc.workers import exit_with_parent

    exit_with_parent()  # the test process itself: no multiprocessing parent to watch
    assert not any(t.name == "exit-with-parent" for t in threading.enumerate())
