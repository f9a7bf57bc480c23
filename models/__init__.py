"""The shipped default model, installed as the package ``mfcalc.models``.

``default.pt`` is what ``MFCalculator()`` and ``mfcalc-rank-conformers`` use when no model is
named; ``README.md`` is its card, ``default_test.h5`` and ``default_metrics.json`` its test
structures (with their labels, frozen out of the training data) and test metrics.  Locate it
with :func:`default_model_path`, never by a path relative to the source tree (an installed
package has no source tree).
"""

from importlib import resources


def default_model_path() -> str:
    """Path of the shipped default model file."""
    return str(resources.files(__name__).joinpath("default.pt"))
