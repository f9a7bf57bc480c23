"""Worker processes that end when the process that started them ends.

A run that trains members or labels structures in worker processes can be stopped by a signal
to its own process alone (``kill PID``, a batch system's time limit, the OOM killer): Python
then runs no clean-up, and its workers would go on computing and writing files as orphans.
Every worker therefore watches its parent and exits as soon as the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

ORPHAN_EXIT_CODE = 70  # what a worker whose parent vanished exits with (EX_SOFTWARE)


def exit_with_parent() -> None:
    """Call first thing in a ``multiprocessing`` worker.  On Linux the kernel kills this process
    when its parent dies (``PR_SET_PDEATHSIG``, effective even inside a long C call); everywhere,
    a daemon thread waits on the parent's sentinel (closed when the parent dies, however it
    dies) and ends this process.  A no-op in a process that multiprocessing did not start."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the thread below does it
        pass

    def watch() -> None:
        parent.join()  # returns once the parent has ended
        os._exit(ORPHAN_EXIT_CODE)  # no clean-up: checkpoints are written atomically, so none is half-written

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["ORPHAN_EXIT_CODE", "exit_with_parent"]
