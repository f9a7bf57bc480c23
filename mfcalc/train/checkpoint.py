"""Checkpoints, written atomically (:mod:`mfcalc.files`): a crash or a kill during the write
leaves the previous checkpoint intact, so at most the epoch in progress is lost."""

from __future__ import annotations

import os
from typing import Any, Dict

import torch

from mfcalc.files import atomic_write


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp), mode=0o600)


def load_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
