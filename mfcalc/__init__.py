"""mfcalc: multi-fidelity HIP-NN-TS interatomic potentials.

Layers, each importing only from those above it:
units -> data -> neighbors -> model -> train -> export -> calculator -> (conformers).
The calculator imports only export (TorchScript loading), never the training code.
"""

__version__ = "0.1.0"

from mfcalc import units  # noqa: E402
from mfcalc import data  # noqa: E402
from mfcalc import neighbors  # noqa: E402
from mfcalc import model  # noqa: E402
from mfcalc.model import MultiFidelityHipnn  # noqa: E402
from mfcalc.calculator import MFCalculator  # noqa: E402

__all__ = ["units", "data", "neighbors", "model", "MultiFidelityHipnn", "MFCalculator", "__version__"]
