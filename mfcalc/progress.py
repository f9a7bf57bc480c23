"""Progress for anything that runs longer than a few seconds.

:class:`ProgressBar` draws a one-line bar on a terminal (and nothing when output goes to a
file); :class:`ProgressLines` prints a line at most every ``interval`` seconds wherever
output goes, so a long job in the background still shows that it moves.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional


class ProgressBar:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str, enabled: bool = True, unit: str = "batch"):
        self.total, self.label, self.unit = total, label, unit
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, loss: Optional[float] = None) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        extra = f" loss {loss:8.3f}" if loss is not None else ""
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
            f"{extra} {rate:5.1f} {self.unit}/s"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


class ProgressLines:
    """Call it with a message; it is passed on at most every ``interval`` seconds (and always
    when ``force=True``), prefixed with the elapsed time unless ``timestamps=False``."""

    def __init__(self, say: Callable[[str], None], interval: float = 2.0, timestamps: bool = True):
        self.say, self.interval, self.timestamps = say, interval, timestamps
        self.start = time.perf_counter()
        self.last = -float("inf")

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.interval:
            self.last = now
            self.say(f"[{now - self.start:7.1f} s] {message}" if self.timestamps else message)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def stderr_line(message: str) -> None:
    """Default progress sink: one flushed line on stderr."""
    print(message, file=sys.stderr, flush=True)
