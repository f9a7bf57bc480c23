"""Device and dtype names -> torch objects, with clear errors (one place for every command)."""

from __future__ import annotations

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
