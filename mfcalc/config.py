"""Typed run configuration: TOML file + command-line overrides -> one resolved record.

A run is fully described by :class:`RunConfig`; ``mfcalc-train`` writes it back as
``config.toml`` so that ``mfcalc-train --config DIR/config.toml`` reproduces the run.

TOML layout::

    data = ["ref.h5"]            # files every fidelity without its own ``files`` reads
    out = "run"
    energy_unit = "hartree"      # optional default unit for bindings without one

    [model]                      # hyper-parameters (mfcalc.model.settings.ModelSettings)
    tensor_order = 2
    [train]                      # optimisation settings (TrainSettings)
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
    weight_relative = 0.0        # energies relative within each molecule (off by default)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from mfcalc import units
from mfcalc.data.dataset import HDF5_SUFFIXES, read_file
from mfcalc.data.fidelity import FidelitySpec
from mfcalc.data.hdf5 import list_keys
from mfcalc.data.records import MFData, concatenate, merge_identical
from mfcalc.model.settings import ModelSettings

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
    weight_relative: float = 0.0

    def spec(self) -> FidelitySpec:
        return FidelitySpec(self.name, self.energy, self.forces, self.energy_unit, self.forces_unit)


TRAIN_PARAMS = ("all", "heads", "last-block", "branch")  # what a fine-tuning run trains
LR_SCHEDULES = ("plateau", "cosine")  # mfcalc.train.schedule


def head_pair(text: str) -> Tuple[str, str]:
    """``"A=B"`` (``--new-head``, ``--restart-head``) -> ``("A", "B")``, blanks stripped; an
    empty name where a side or the ``=`` is missing."""
    first, sep, second = (t.strip() for t in text.partition("="))
    return (first, second) if sep else (first, "")


def _help(text: str, **extra: Any) -> Dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class TrainSettings:
    """Optimisation settings, declared once (the TOML ``[train]`` table and one
    ``mfcalc-train`` flag per field are generated from here)."""

    epochs: int = field(default=200, metadata=_help("maximum epochs per ensemble member"))
    max_minutes: Optional[float] = field(
        default=None,
        metadata=_help(
            "wall-clock budget of the run, shared by the ensemble members (each stops cleanly at its share "
            "and keeps its best weights)"
        ),
    )
    batch_size: int = field(default=32, metadata=_help("structures per optimisation step (global, over all ranks)"))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    seed: int = field(default=0, metadata=_help("seeds the split, the weights and the shuffling"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda[:N]"))
    dtype: str = field(
        default="float32", metadata=_help("floating-point precision of training", choices=("float32", "float64"))
    )
    ensemble: int = field(default=1, metadata=_help("train K members, export their mean and spread", metavar="K"))
    member_workers: int = field(
        default=1,
        metadata=_help(
            "train up to N ensemble members at once, one process each with an equal share of the CPU threads "
            "(the same ensemble as one at a time)",
            metavar="N",
        ),
    )
    valid_fraction: float = field(default=0.1, metadata=_help("fraction of structures (or groups) for validation"))
    test_fraction: float = field(default=0.1, metadata=_help("fraction of structures (or groups) for testing"))
    split_by: str = field(
        default="random",
        metadata=_help(
            "random, or a group column (smiles, formula, source) so that test molecules are unseen", metavar="KEY"
        ),
    )
    lr_schedule: str = field(
        default="plateau",
        metadata=_help(
            "plateau: decay by lr_factor after lr_patience epochs without improvement; cosine: decay from lr "
            "to min_lr over the epochs, or over those that fit each member's share of max_minutes",
            choices=LR_SCHEDULES,
        ),
    )
    lr_patience: int = field(default=5, metadata=_help("epochs without improvement before the learning rate decays"))
    lr_factor: float = field(default=0.5, metadata=_help("learning-rate decay factor on a plateau"))
    early_stopping: int = field(
        default=20,
        metadata=_help("stop after this many epochs without a relative improvement of 1e-4 in the validation loss"),
    )
    min_epochs: int = field(
        default=40,
        metadata=_help("no early stop (patience or min_lr) before this epoch: early validation losses are noisy"),
    )
    min_lr: float = field(
        default=1e-5,
        metadata=_help(
            "the cosine schedule's final rate; the plateau schedule stops once it decays the rate below this"
        ),
    )
    grad_clip: float = field(default=10.0, metadata=_help("gradient-norm clipping (0: off)"))
    energy_loss: str = field(
        default="structure",
        metadata=_help(
            "compare energies per structure (total energies, as in the papers) or per atom in the loss",
            choices=("structure", "atom"),
        ),
    )
    init_from: Optional[str] = field(
        default=None,
        metadata=_help(
            "fine-tune: start from this trained model file ('default': the shipped model); its "
            "hyper-parameters are used and its heads are reused by fidelity name",
            metavar="MODEL.pt",
        ),
    )
    new_head: Optional[List[str]] = field(
        default=None,
        metadata=_help(
            "fine-tune: initialise a new head from an existing one, NEW=OLD (else from zero above references "
            "fitted on the new data)",
            metavar="NEW=OLD",
        ),
    )
    restart_head: Optional[List[str]] = field(
        default=None,
        metadata=_help(
            "fine-tune: restart an existing head from another head's weights, HEAD=OTHER (it keeps its own "
            "reference energies), e.g. cc=dft: a coupled-cluster head learns its correction from the DFT head",
            metavar="HEAD=OTHER",
        ),
    )
    train_params: str = field(
        default="all",
        metadata=_help(
            "fine-tune: what trains: all, heads, heads and the last interaction block, or branch: the new "
            "heads get private copies of the top --branch-blocks (default 1) and only those and the new heads "
            "train, so the other heads stay exactly as they were",
            choices=TRAIN_PARAMS,
        ),
    )
    trunk_lr: Optional[float] = field(default=None, metadata=_help("learning rate of the shared trunk (default: --lr)"))
    grow_interactions: int = field(
        default=0,
        metadata=_help(
            "fine-tune: add N interaction blocks on top of the file's, started as the identity (zero residual "
            "outputs and zero energy heads), so that the deeper model predicts exactly what the file predicts "
            "and training goes on from there instead of from random weights; needs a residual (resnet) model",
            metavar="N",
        ),
    )
    trunk_anchor: float = field(
        default=0.0,
        metadata=_help(
            "fine-tune: pull the trainable trunk weights towards those of --init-from (L2-SP): this weight "
            "times their summed squared change is added to the loss (kcal/mol); 0: off",
        ),
    )
    head_anchor: float = field(
        default=0.0,
        metadata=_help(
            "fine-tune: pull the trainable energy heads towards the weights they start from (a restarted "
            "head: those of the head it restarts from; L2-SP): this weight times their summed squared "
            "change over their summed squared starting weights is added to the loss (kcal/mol per unit "
            "relative change), so that a few labels of a new level teach a correction to the head it "
            "starts from rather than a head of their own; 0: off",
        ),
    )
    replay: Optional[List[str]] = field(
        default=None,
        metadata=_help(
            "fine-tune: the model's original data, one or more files (read with the bindings recorded in the "
            "model file; files of one level each are merged by geometry); mixed into every batch, and the old "
            "heads are scored on its held-out part before and after",
            metavar="FILE",
        ),
    )
    replay_fraction: float = field(default=0.25, metadata=_help("fraction of every batch taken from --replay"))
    replay_split: Optional[str] = field(
        default=None,
        metadata=_help(
            "fine-tune: split the replay as the run that trained on the same files split it (its split.npz), "
            "so that run's test structures stay unseen here too (else the replay is split anew)",
            metavar="RUN/split.npz",
        ),
    )
    max_structures: Optional[int] = field(
        default=None, metadata=_help("train on a random subset of this size (quick experiments)")
    )
    relative_group: int = field(
        default=4,
        metadata=_help(
            "with a relative-energy weight (--loss-weight NAME:relative=W): up to N structures of one molecule "
            "with the same labels go into a batch together, so that their energies can be compared",
            metavar="N",
        ),
    )
    molecule_key: str = field(
        default="smiles",
        metadata=_help("the group column that names a molecule, for the relative-energy loss", metavar="KEY"),
    )
    split_from: Optional[str] = field(
        default=None,
        metadata=_help(
            "reuse the train/valid/test split of an earlier run (its split.npz): on the same structures with "
            "grown labels by row; on grown data by geometry (its config.toml next to the split names its "
            "data), only new structures split anew; either way its test structures stay unseen",
            metavar="RUN/split.npz",
        ),
    )

    def validate(self) -> TrainSettings:
        """Raises ValueError naming the first setting out of range."""
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.ensemble < 1:
            raise ValueError("train settings need epochs >= 0, batch_size >= 1, lr > 0, ensemble >= 1")
        if self.member_workers < 1:
            raise ValueError(f"member_workers must be >= 1, got {self.member_workers}")
        if self.min_epochs < 0 or self.early_stopping < 1 or self.lr_patience < 0:
            raise ValueError("train settings need min_epochs >= 0, early_stopping >= 1, lr_patience >= 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and not 0 < self.min_lr <= self.lr:
            raise ValueError(f"the cosine schedule needs 0 < min_lr <= lr, got min_lr {self.min_lr}, lr {self.lr}")
        if self.energy_loss not in ("structure", "atom"):
            raise ValueError(f"energy_loss must be 'structure' or 'atom', got {self.energy_loss!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.max_structures is not None and self.max_structures < 1:
            raise ValueError(f"max_structures must be >= 1, got {self.max_structures}")
        if self.train_params not in TRAIN_PARAMS:
            raise ValueError(f"train_params must be one of {', '.join(TRAIN_PARAMS)}, got {self.train_params!r}")
        if self.grow_interactions < 0:
            raise ValueError(f"grow_interactions must be >= 0, got {self.grow_interactions}")
        if self.trunk_lr is not None and self.trunk_lr < 0:
            raise ValueError(f"trunk_lr must be >= 0, got {self.trunk_lr}")
        if self.relative_group < 2:
            raise ValueError(
                f"relative_group must be >= 2 (structures compared within a molecule), got {self.relative_group}"
            )
        if self.trunk_anchor < 0 or self.head_anchor < 0:
            raise ValueError(f"trunk_anchor and head_anchor must be >= 0, got {self.trunk_anchor}, {self.head_anchor}")
        if isinstance(self.replay, str):  # TOML: replay = "one.h5"
            self.replay = [self.replay]
        if self.replay is not None and (
            not isinstance(self.replay, list) or not all(isinstance(f, str) and f for f in self.replay)
        ):
            raise ValueError(f"replay must be a file name or a list of them, got {self.replay!r}")
        if not 0 <= self.replay_fraction < 1:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if (
            self.new_head
            or self.restart_head
            or self.replay
            or self.train_params != "all"
            or self.trunk_anchor
            or self.head_anchor
            or self.grow_interactions
        ) and not self.init_from:
            raise ValueError(
                "new_head, restart_head, replay, trunk_anchor, head_anchor, grow_interactions and train_params "
                "other than 'all' "
                "need init_from "
                "(a model to start from)"
            )
        if self.replay_split and not self.replay:
            raise ValueError("replay_split splits the replayed data: it needs replay (the files of that run)")
        if self.split_from and self.max_structures is not None:
            raise ValueError("split_from reuses a whole run's split; it cannot be combined with max_structures")
        for text in self.new_head or []:
            if not all(head_pair(text)):
                raise ValueError(f"new_head {text!r} must look like NEW=OLD, e.g. caspt2=cc")
        for text in self.restart_head or []:
            head, other = head_pair(text)
            if not head or not other or head == other:
                raise ValueError(f"restart_head {text!r} must look like HEAD=OTHER with two heads, e.g. cc=dft")
        return self


@dataclass
class RunConfig:
    data: List[str] = field(default_factory=list)
    out: str = "run"
    energy_unit: Optional[str] = None
    fidelities: List[FidelityConfig] = field(default_factory=list)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    # model settings the user gave (TOML [model] keys, flags): with init_from, those that differ
    # from the model file's are conflicts; the others come from the file
    explicit_model: Set[str] = field(default_factory=set, compare=False, repr=False)
    explicit_train: Set[str] = field(default_factory=set, compare=False, repr=False)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> RunConfig:
        if not self.fidelities:
            raise ValueError(
                "no fidelity bound: give --fidelity NAME=ENERGY_KEY[,FORCES_KEY] or [fidelity.NAME] tables"
            )
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
            for w in ("weight_energy", "weight_forces", "weight_hier", "weight_relative"):
                if getattr(f, w) < 0:
                    raise ValueError(f"fidelity {f.name!r}: {w} must be >= 0")
        if self.energy_unit is not None:
            units.energy_factor(self.energy_unit)
        self.train.validate()
        self.model.validate()
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
    def from_dict(cls, raw: Dict[str, Any]) -> RunConfig:
        raw = dict(raw)
        known = {"data", "out", "energy_unit", "model", "train", "fidelity"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown top-level config keys {unknown}; known: {sorted(known)}")
        cfg = cls(data=list(raw.get("data", [])), out=raw.get("out", "run"), energy_unit=raw.get("energy_unit"))
        cfg.model = _build(ModelSettings, raw.get("model", {}), "model")
        cfg.explicit_model = set(raw.get("model", {}))
        cfg.explicit_train = set(raw.get("train", {}))
        cfg.train = _build(TrainSettings, raw.get("train", {}), "train")
        fids = raw.get("fidelity", {})
        if not isinstance(fids, dict):
            raise ValueError("[fidelity] must be tables named by fidelity, e.g. [fidelity.dft]")
        cfg.fidelities = [_build(FidelityConfig, dict(v, name=k), f"fidelity.{k}") for k, v in fids.items()]
        return cfg

    @classmethod
    def from_toml(cls, path: str) -> RunConfig:
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


# ---- the data a configuration binds ----------------------------------------------------------
def load_run_data(cfg: RunConfig, say: Callable[[str], None] = print) -> MFData:
    """Read every file once with all fidelities bound to it; columns in config order.

    An HDF5 file may lack a level that other files have (a data set grown level by level):
    its structures then carry no label of that level.  A key found in no file is an error.
    """
    by_file: Dict[str, List[FidelitySpec]] = {}
    for f in cfg.fidelities:
        for path in f.files or cfg.data:
            by_file.setdefault(os.path.abspath(path), []).append(f.spec())
    parts, found, available = [], set(), set()
    for path, specs in by_file.items():
        if len(by_file) > 1 and path.lower().endswith(HDF5_SUFFIXES) and os.path.exists(path):
            present = set(list_keys(path))
            available |= present
            specs = [
                dataclasses.replace(s, forces_key=s.forces_key if s.forces_key in present else None)
                for s in specs
                if s.energy_key in present
            ]
            found |= {k for s in specs for k in (s.energy_key, s.forces_key) if k}
        else:
            found |= {k for s in specs for k in (s.energy_key, s.forces_key) if k}
        parts.append(read_file(path, specs))
    bound = {k for f in cfg.fidelities for k in (f.energy, f.forces) if k}
    if bound - found:
        raise ValueError(
            f"key(s) {sorted(bound - found)} are in none of the files {sorted(by_file)}; keys there: "
            f"{sorted(available)}"
        )
    data = concatenate(parts).with_fidelities([f.name for f in cfg.fidelities])
    if len(parts) > 1:  # one file per level of theory over shared geometries: one structure, all labels
        data, n_merged = merge_identical(data)
        if n_merged:
            say(f"merged {n_merged} structures with identical geometry across/within files")
    return data
