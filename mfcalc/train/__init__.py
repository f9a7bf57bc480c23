"""Training: prepare the run's data -> fit each member -> export (see :mod:`mfcalc.train.loop`)."""

from mfcalc.train.loop import train
from mfcalc.train.prepare import load_run_data

__all__ = ["train", "load_run_data"]
