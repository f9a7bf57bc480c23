"""HIP-NN-TS model: sensitivities -> interaction layers -> hierarchical multi-fidelity heads."""

from mfcalc.model.heads import HierarchicalHeads
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.model.interaction import InteractionLayer
from mfcalc.model.sensitivity import InverseSensitivity, cosine_cutoff

__all__ = ["InverseSensitivity", "cosine_cutoff", "InteractionLayer", "HierarchicalHeads", "MultiFidelityHipnn"]
