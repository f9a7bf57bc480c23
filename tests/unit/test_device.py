"""Device names and the process memory setting for large CPU systems."""

import ctypes
import subprocess
import sys
import textwrap

import pytest
import torch

from mfcalc.device import resolve_device, resolve_dtype, set_threads


def test_device_and_dtype_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        resolve_dtype("float16")


def _has_glibc_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_glibc_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """A 64 MiB tensor is an mmap of its own (hblks 1) until keep_freed_memory; afterwards it
    comes from the heap and is reused, not page-faulted in again. In a fresh process: the
    setting is process-wide."""
    code = textwrap.dedent(
        """
        import ctypes, torch
        from mfcalc.device import keep_freed_memory

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Info

        def mapped_blocks_while_holding_64_mib():
            t = torch.ones(16 * 2**20)
            n = libc.mallinfo2().hblks
            del t
            return n

        before = mapped_blocks_while_holding_64_mib()
        assert keep_freed_memory() and keep_freed_memory()  # idempotent
        print(before, mapped_blocks_while_holding_64_mib())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert before >= 1 and after == before - 1


def test_set_threads_refuses_fewer_than_one_and_restores_torch_threads():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        set_threads(0)
    before = torch.get_num_threads()
    restore = set_threads(1)
    assert torch.get_num_threads() == 1
    restore()
    assert torch.get_num_threads() == before
