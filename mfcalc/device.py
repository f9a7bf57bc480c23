"""Device and dtype names -> torch objects, with clear errors (one place for every command);
the threads of the numerical libraries (``set_threads``); and the one process setting that
large CPU systems need (``keep_freed_memory``)."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, Optional, Union

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(threads: int) -> Callable[[], None]:
    """Threads of the numerical libraries in this process (at least 1); returns a function that
    restores the previous settings.

    GFN2-xTB (tblite), PySCF and torch share one OpenMP runtime here, so ``torch.set_num_threads``
    sets the threads of all three, even after the runtime has started; the environment
    variables cover libraries that read them when they first run.  One thread is also what
    makes GFN2-xTB MD reproducible: with more, its parallel sums change order from run to run,
    and a trajectory amplifies the difference (0.09 A after a few hundred steps, measured).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    torch_threads = torch.get_num_threads()
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    try:
        from pyscf import lib

        pyscf_threads = lib.num_threads()
        lib.num_threads(threads)
    except ImportError:
        pyscf_threads = None

    def restore() -> None:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if pyscf_threads is not None:
            from pyscf import lib

            lib.num_threads(pyscf_threads)
        torch.set_num_threads(torch_threads)

    return restore


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
