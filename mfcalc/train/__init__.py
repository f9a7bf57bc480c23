"""Training: prepare the run's data -> fit each member -> export (see :mod:`mfcalc.train.loop`)."""

from mfcalc.train.loop import train

__all__ = ["train"]
