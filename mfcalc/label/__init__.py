"""Quantum-chemistry labels for structures: GFN2-xTB, wB97X/6-31G* and CCSD(T)/cc-pVDZ.

* :mod:`~mfcalc.label.levels`: the levels of theory (tblite, PySCF), in Hartree and Hartree/Angstrom;
* :mod:`~mfcalc.label.store`: the HDF5 data set being built, resumable through a journal;
* :mod:`~mfcalc.label.run`: plan, compute in worker processes, record (``mfcalc-label``).

Needs the ``label`` extra (``pip install 'mfcalc[label]'``).
"""

from mfcalc.label.levels import LEVELS, LabelError, Level, get_level
from mfcalc.label.run import label
from mfcalc.label.store import LabelStore, structure_key

__all__ = ["LEVELS", "LabelError", "Level", "get_level", "label", "LabelStore", "structure_key"]
