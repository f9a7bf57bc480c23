"""Atomic file writes and output-directory checks.

Every file mfcalc writes for a user (models, checkpoints, metrics, logs, data indexes,
labelled data) goes through :func:`atomic_write`: the content is written to a temporary
file in the same folder and renamed over the target, so a crash or a kill leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None], mode: int = 0o644) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` in one step.

    Args:
        path: the target file; its folder is created if needed.
        write: writes the whole content to the temporary path it is given.
        mode: permissions of the finished file (a temporary file is private by default,
            a model or data file is meant to be shared).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def check_writable_dir(path: str) -> None:
    """Create ``path`` if needed and make sure files can be written there.

    Raises:
        ValueError: naming the folder and the operating system's reason.
    """
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"cannot write to output directory {path!r}: {exc.strerror or exc}") from None
