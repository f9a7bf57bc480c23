"""Typed run configuration: TOML file + command-line overrides -> one resolved record.

A run is fully described by :class:`RunConfig`; ``mfcalc-train`` writes it back as
``config.toml`` so that ``mfcalc-train --config DIR/config.toml`` reproduces the run.

TOML layout::

    data = ["ref.h5"]            # files every fidelity without its own ``files`` reads
    out = "run"
    energy_unit = "hartree"      # optional default unit for bindings without one

    [model]                      # MultiFidelityHipnn hyper-parameters
    tensor_order = 2
    [train]                      # optimisation settings (see TrainSettings)
    epochs = 200
    [fidelity.dft]               # one table per fidelity, in head order
    energy = "wb97x_dz.energy"
    forces = "wb97x_dz.forces"
    files = []                   # its own files (else ``data``)
    energy_unit = "hartree"
    forces_unit = "hartree/bohr"
    weight_energy = 1.0
    weight_forces = 1.0
    weight_hier = 1.0
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from mfcalc.data.fidelity import FidelitySpec
from mfcalc import units

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class FidelityConfig:
    """One fidelity: where its labels are, in which units, and its loss weights."""

    name: str
    energy: str
    forces: Optional[str] = None
    files: List[str] = field(default_factory=list)
    energy_unit: Optional[str] = None
    forces_unit: Optional[str] = None
    weight_energy: float = 1.0
    weight_forces: float = 1.0
    weight_hier: float = 1.0

    def spec(self) -> FidelitySpec:
        return FidelitySpec(self.name, self.energy, self.forces, self.energy_unit, self.forces_unit)


@dataclass
class ModelSettings:
    n_features: int = 20
    n_sensitivities: int = 20
    n_interactions: int = 2
    n_atom_layers: int = 3
    tensor_order: int = 2
    cutoff: float = 5.5
    soft_min: float = 0.75
    soft_max: Optional[float] = None
    resnet: bool = True
    cusp_reg: float = 1e-2  # eps in the tensor-sensitivity norms (smoothness of the energy surface; see hipnn.py)
    species: Optional[List[int]] = None  # None: the elements found in the data


@dataclass
class TrainSettings:
    epochs: int = 200
    max_minutes: Optional[float] = None
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    ensemble: int = 1
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_by: str = "random"
    lr_patience: int = 5
    lr_factor: float = 0.5
    early_stopping: int = 20  # epochs without a relative improvement of 1e-4 in the validation loss
    min_lr: float = 1e-5  # stop once the plateau schedule has decayed the learning rate below this
    grad_clip: float = 10.0
    energy_loss: str = "structure"  # "structure" (total energies, as in the papers) or "atom" (per atom)
    max_structures: Optional[int] = None  # random subsample of the data (quick experiments)


@dataclass
class RunConfig:
    data: List[str] = field(default_factory=list)
    out: str = "run"
    energy_unit: Optional[str] = None
    fidelities: List[FidelityConfig] = field(default_factory=list)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        if not self.fidelities:
            raise ValueError("no fidelity bound: give --fidelity NAME=ENERGY_KEY[,FORCES_KEY] or [fidelity.NAME] tables")
        names = [f.name for f in self.fidelities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"fidelity names bound more than once: {dup}")
        for f in self.fidelities:
            if not f.files and not self.data:
                raise ValueError(f"fidelity {f.name!r} has no files: give --data or files = [...] in its table")
            if f.energy_unit is None and self.energy_unit is not None:
                f.energy_unit = self.energy_unit
            f.spec()  # checks name and units
            for w in ("weight_energy", "weight_forces", "weight_hier"):
                if getattr(f, w) < 0:
                    raise ValueError(f"fidelity {f.name!r}: {w} must be >= 0")
        if self.energy_unit is not None:
            units.energy_factor(self.energy_unit)
        t = self.train
        if t.epochs < 0 or t.batch_size < 1 or t.lr <= 0 or t.ensemble < 1:
            raise ValueError("train settings need epochs >= 0, batch_size >= 1, lr > 0, ensemble >= 1")
        if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {t.device!r}")
        if t.energy_loss not in ("structure", "atom"):
            raise ValueError(f"energy_loss must be 'structure' or 'atom', got {t.energy_loss!r}")
        if t.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {t.dtype!r}")
        if self.model.tensor_order not in (0, 1, 2):
            raise ValueError(f"tensor_order must be 0, 1 or 2, got {self.model.tensor_order}")
        return self

    # ---- TOML ------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"data": list(self.data), "out": self.out}
        if self.energy_unit is not None:
            out["energy_unit"] = self.energy_unit
        out["model"] = {k: v for k, v in dataclasses.asdict(self.model).items() if v is not None}
        out["train"] = {k: v for k, v in dataclasses.asdict(self.train).items() if v is not None}
        out["fidelity"] = {}
        for f in self.fidelities:
            d = {k: v for k, v in dataclasses.asdict(f).items() if v is not None and k != "name"}
            out["fidelity"][f.name] = d
        return out

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "RunConfig":
        raw = dict(raw)
        known = {"data", "out", "energy_unit", "model", "train", "fidelity"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown top-level config keys {unknown}; known: {sorted(known)}")
        cfg = cls(data=list(raw.get("data", [])), out=raw.get("out", "run"), energy_unit=raw.get("energy_unit"))
        cfg.model = _build(ModelSettings, raw.get("model", {}), "model")
        cfg.train = _build(TrainSettings, raw.get("train", {}), "train")
        fids = raw.get("fidelity", {})
        if not isinstance(fids, dict):
            raise ValueError("[fidelity] must be tables named by fidelity, e.g. [fidelity.dft]")
        cfg.fidelities = [_build(FidelityConfig, dict(v, name=k), f"fidelity.{k}") for k, v in fids.items()]
        return cfg

    @classmethod
    def from_toml(cls, path: str) -> "RunConfig":
        if not os.path.exists(path):
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_dict(raw)


def _build(kind, values: Dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in [{where}]; known: {sorted(names)}")
    return kind(**values)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON strings are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(d: Dict[str, Any], prefix: str = "") -> str:
    """Minimal TOML writer for the nested dicts of :meth:`RunConfig.to_dict`."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}{_toml_key(k)}"
            scalars = {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}
            if scalars or not v:
                lines.append(f"\n[{name}]")
                lines.append(dump_toml(scalars))
            nested = {kk: vv for kk, vv in v.items() if isinstance(vv, dict)}
            if nested:
                lines.append(dump_toml(nested, prefix=name + "."))
    return "\n".join(x for x in lines if x != "")


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)
