"""Candidate structures for labelling: conformer minima, torsion scans, normal-mode and MD samples.

* :mod:`~mfcalc.sample.engines`: GFN2-xTB (tblite) or an mfcalc model moves the atoms;
* :mod:`~mfcalc.sample.samplers`: the four samplers, with connectivity checks;
* :mod:`~mfcalc.sample.run`: molecule by molecule, resumable (``mfcalc-sample``).
"""

from mfcalc.sample.run import SampleSettings, read_sources, sample

__all__ = ["SampleSettings", "read_sources", "sample"]
