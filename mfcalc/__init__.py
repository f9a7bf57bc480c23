"""mfcalc: multi-fidelity HIP-NN-TS interatomic potentials.

Layers, each importing only from those before it (checked by tests/unit/test_layering.py):

    units, keys, files, device, progress, elements, models (shared helpers)
    -> data -> neighbors -> model -> metrics, config, plot -> export -> potential
    -> train, evaluate, calculator, openmm -> conformers, label, select -> sample -> cli

Training uses export to write its model file; the calculator and the OpenMM force load that
file through export and run it through ``potential`` (one structure in, energy and forces
out), and never import the training code.  Importing ``mfcalc`` loads the data, model and
calculator layers (not training, not the applications).
"""

__version__ = "0.2.0"

from mfcalc import (
    data,  # noqa: E402
    model,  # noqa: E402
    neighbors,  # noqa: E402
    units,  # noqa: E402
)
from mfcalc.calculator import MFCalculator  # noqa: E402
from mfcalc.model import MultiFidelityHipnn  # noqa: E402

__all__ = ["units", "data", "neighbors", "model", "MultiFidelityHipnn", "MFCalculator", "__version__"]
