"""The model's hyper-parameters, declared once.

:class:`ModelSettings` is the single declaration: :class:`~mfcalc.model.hipnn.MultiFidelityHipnn`
is built from it and records it as its ``hparams``, the TOML ``[model]`` table is read into
it, and ``mfcalc-train`` generates one flag per field (``--n-features``, ...) with the help
text below.  Adding a hyper-parameter is one field here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def _help(text: str, **extra: Any) -> Dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class ModelSettings:
    """HIP-NN-TS architecture (lengths in Angstrom)."""

    n_features: int = field(default=20, metadata=_help("width F of every interaction block"))
    n_sensitivities: int = field(default=20, metadata=_help("radial sensitivity functions per interaction"))
    n_interactions: int = field(default=2, metadata=_help("interaction blocks (hierarchy levels = this + 1)"))
    n_atom_layers: int = field(default=3, metadata=_help("atom layers after each interaction"))
    tensor_order: int = field(default=2, metadata=_help("HIP-NN-TS tensor order", choices=(0, 1, 2)))
    cutoff: float = field(default=5.5, metadata=_help("pair cutoff, Angstrom", metavar="A"))
    soft_min: float = field(default=0.75, metadata=_help("shortest sensitivity centre, Angstrom", metavar="A"))
    soft_max: Optional[float] = field(
        default=None, metadata=_help("longest sensitivity centre, Angstrom (default: cutoff - 1)", metavar="A")
    )
    resnet: bool = field(default=True, metadata=_help("residual blocks (hippynn's default)"))
    cusp_reg: float = field(
        default=1e-2,
        metadata=_help(
            "eps in sqrt(|u|^2 + eps) of the tensor norms: smoothness of the energy surface (see hipnn.py)",
            metavar="EPS",
        ),
    )
    branch_blocks: int = field(
        default=0,
        metadata=_help(
            "the top interaction blocks that the --branch-heads compute with a private copy, so that "
            "fine-tuning them leaves the shared trunk and every other head as they were (0: none)",
            metavar="N",
        ),
    )
    branch_heads: Optional[List[str]] = field(
        default=None,
        metadata=_help("the heads that read the private top blocks of --branch-blocks", metavar="NAME"),
    )
    species: Optional[List[int]] = field(
        default=None,
        metadata=_help("atomic numbers the model knows (default: the elements found in the data)", metavar="Z"),
    )

    # settings added after model files were first written, with the value that reproduces
    # those files (export.eager_model and fine-tuning fill them in when a file lacks them)
    @staticmethod
    def later_defaults() -> Dict[str, Any]:
        return {"branch_blocks": 0, "branch_heads": []}

    # fields that describe the network itself (``species`` is the data's business and is
    # passed to the model separately, next to the fidelity names)
    @staticmethod
    def architecture_fields() -> List[str]:
        return [f.name for f in dataclasses.fields(ModelSettings) if f.name != "species"]

    def validate(self) -> ModelSettings:
        """Check every field; returns self.  Derived values are checked as resolved.  (The branch
        settings are checked against each other by the model: a fine-tuning run fills them in.)

        Raises:
            ValueError: naming the field and the allowed range.
        """
        for name in ("n_features", "n_sensitivities", "n_interactions"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model setting {name} must be >= 1, got {getattr(self, name)}")
        if self.n_atom_layers < 0:
            raise ValueError(f"model setting n_atom_layers must be >= 0, got {self.n_atom_layers}")
        if self.tensor_order not in (0, 1, 2):
            raise ValueError(f"tensor_order must be 0, 1 or 2, got {self.tensor_order}")
        if self.cusp_reg < 0:
            raise ValueError(f"cusp_reg must be >= 0, got {self.cusp_reg}")
        if self.branch_blocks < 0:
            raise ValueError(f"branch_blocks must be >= 0, got {self.branch_blocks}")
        soft_max = self.resolved_soft_max()
        if not 0 < self.soft_min < soft_max <= self.cutoff:
            raise ValueError(
                f"need 0 < soft_min < soft_max <= cutoff, got soft_min {self.soft_min}, "
                f"soft_max {soft_max}{' (cutoff - 1)' if self.soft_max is None else ''}, "
                f"cutoff {self.cutoff}"
            )
        if self.species is not None:
            z = [int(x) for x in self.species]
            if not z or min(z) < 1 or max(z) > 118 or len(set(z)) != len(z):
                raise ValueError(f"species must be distinct atomic numbers in 1..118, got {self.species}")
        return self

    def resolved_soft_max(self) -> float:
        """``soft_max``, or its derived default ``cutoff - 1``."""
        return float(self.cutoff - 1.0 if self.soft_max is None else self.soft_max)

    def architecture(self) -> Dict[str, Any]:
        """The network's hyper-parameters with derived values filled in (what a model records)."""
        out = {name: getattr(self, name) for name in self.architecture_fields()}
        out["cutoff"] = float(self.cutoff)
        out["soft_min"] = float(self.soft_min)
        out["soft_max"] = self.resolved_soft_max()
        out["branch_heads"] = list(self.branch_heads or [])
        return out
