"""Device and dtype names -> torch objects, with clear errors (one place for every command);
and the one process setting that large CPU systems need (``keep_freed_memory``)."""

from __future__ import annotations

import ctypes
import sys
from typing import Optional, Union

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a torch device.

    Raises:
        ValueError: CUDA asked for but not available, or a name torch does not know.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} was asked for but CUDA is not available")
    return device


def resolve_dtype(name: Optional[str], default: torch.dtype = torch.float32) -> torch.dtype:
    """``"float32"`` / ``"float64"`` -> torch dtype; ``None`` -> ``default``."""
    if name is None:
        return default
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


LARGE_SYSTEM_ATOMS = 1000  # from this size on, a CPU call's tensors are tens of MiB each
_freed_memory_kept = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of giving it back to the system.

    glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it when freed,
    so each energy+forces call on a large system page-faults its tables in again: on 20,577
    atoms of water that was half of the call (``tools/BENCHMARKS.md``).  With ``mmap`` off and
    trimming raised, freed blocks are reused; the price is that the process keeps its peak
    memory until it exits.  Process-wide and idempotent; returns whether it is in effect
    (False off glibc Linux, where nothing is changed).
    """
    global _freed_memory_kept
    if _freed_memory_kept or not sys.platform.startswith("linux"):
        return _freed_memory_kept
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    _freed_memory_kept = mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1
    return _freed_memory_kept
