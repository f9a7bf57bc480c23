"""The files of a training run's output folder, written atomically (see :mod:`mfcalc.files`).

``model.pt`` (TorchScript, :mod:`mfcalc.export`), ``checkpoint.pt`` (every epoch,
:mod:`mfcalc.train.checkpoint`), ``metrics.json``, ``log.csv`` (one row per epoch),
``config.toml`` (the fully resolved configuration) and ``split.npz``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from mfcalc.files import atomic_write, atomic_write_text, check_writable_dir

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
LOG = "log.csv"
CONFIG = "config.toml"
SPLIT = "split.npz"


def prepare_out_dir(out: str) -> None:
    """Create the output folder and make sure it is writable (a clear error otherwise)."""
    check_writable_dir(out)


def log_csv(rows: List[Dict[str, Any]]) -> str:
    """CSV text of the epoch rows; columns are the union of the rows' keys in first-seen order."""
    if not rows:
        return ""
    fields = list(rows[0].keys())
    for r in rows[1:]:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_log(out: str, rows: List[Dict[str, Any]]) -> None:
    atomic_write_text(os.path.join(out, LOG), log_csv(rows))


def write_config(out: str, toml_text: str) -> None:
    atomic_write_text(os.path.join(out, CONFIG), toml_text + "\n")


def write_split(out: str, split: Dict[str, np.ndarray]) -> None:
    arrays: Dict[str, Any] = dict(split)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(os.path.join(out, SPLIT), write)


def write_metrics(out: str, metrics: Dict[str, Any]) -> None:
    atomic_write_text(os.path.join(out, METRICS), json.dumps(metrics, indent=1) + "\n")


def write_learning_curve(out_dir: str, say: Callable[[str], None]) -> Optional[str]:
    """``learning_curve.png`` from ``log.csv`` (skipped, with a note, without matplotlib)."""
    try:
        from mfcalc.plot import learning_curve

        return learning_curve(os.path.join(out_dir, "log.csv"), os.path.join(out_dir, "learning_curve.png"))
    except ImportError:
        say("learning_curve.png not written: matplotlib is not installed (pip install 'mfcalc[plot]')")
        return None
